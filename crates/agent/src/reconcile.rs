//! The pure reconcile decision: desired instance specs + observed instances
//! -> the actions that move this node toward the desired set. No IO; the
//! driver (`agent`) applies the actions and calls this again whenever
//! anything changes.
//!
//! Rules, per instance id (actions come out sorted by id):
//! * desired, not observed -> `Start`;
//! * observed, not desired -> `Stop` (again on every pass until it is gone;
//!   the driver ignores repeated stops);
//! * observed with a generation different from the desired one ->
//!   `Replace`, rolling per service:
//!   - an outdated instance that is not ready is replaced right away (it
//!     serves nothing, and waiting for it could block the rollout forever);
//!   - an outdated READY instance is replaced only when every desired
//!     replica of its service is observed and ready, and only one per pass:
//!     the replacement is then not ready, which holds back the next one
//!     until it becomes ready.
//!
//! Restarting crashed processes is not reconcile's business: the instance
//! supervisor does it according to the restart policy, and an instance that
//! exists in any state (`Backoff`, `CrashLoop`, `Exited`) counts as observed.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{InstanceId, InstanceSpec, InstanceState, InstanceStatus};

/// What reconcile needs to know about an existing instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    pub id: InstanceId,
    pub generation: u64,
    pub state: InstanceState,
}

impl ObservedInstance {
    pub fn new(id: InstanceId, generation: u64, state: InstanceState) -> Self {
        Self { id, generation, state }
    }

    pub fn ready(&self) -> bool {
        self.state == InstanceState::Ready
    }
}

impl From<&InstanceStatus> for ObservedInstance {
    fn from(s: &InstanceStatus) -> Self {
        Self::new(s.id.clone(), s.generation, s.state)
    }
}

/// One step toward the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a new instance.
    Start(InstanceSpec),
    /// Stop an instance and forget it.
    Stop(InstanceId),
    /// Stop the running instance and start this spec (same id) instead.
    Replace(InstanceSpec),
}

impl Action {
    pub fn id(&self) -> &InstanceId {
        match self {
            Action::Start(s) | Action::Replace(s) => &s.id,
            Action::Stop(id) => id,
        }
    }
}

/// Computes the actions (sorted by instance id). Duplicate ids: the first
/// occurrence wins.
pub fn reconcile(desired: &[InstanceSpec], observed: &[ObservedInstance]) -> Vec<Action> {
    let mut want: BTreeMap<&InstanceId, &InstanceSpec> = BTreeMap::new();
    for s in desired {
        want.entry(&s.id).or_insert(s);
    }
    let mut have: BTreeMap<&InstanceId, &ObservedInstance> = BTreeMap::new();
    for o in observed {
        have.entry(&o.id).or_insert(o);
    }

    // Per service: may a ready instance be replaced in this pass?
    let mut budget: BTreeMap<&str, bool> = BTreeMap::new();
    for id in want.keys() {
        let ok = have.get(id).is_some_and(|o| o.ready());
        let e = budget.entry(id.service.as_str()).or_insert(true);
        *e = *e && ok;
    }

    let ids: BTreeSet<&InstanceId> = want.keys().chain(have.keys()).copied().collect();
    let mut actions = Vec::new();
    for id in ids {
        match (want.get(id), have.get(id)) {
            (Some(spec), None) => actions.push(Action::Start((*spec).clone())),
            (None, Some(_)) => actions.push(Action::Stop(id.clone())),
            (Some(spec), Some(obs)) if obs.generation != spec.generation => {
                if !obs.ready() {
                    actions.push(Action::Replace((*spec).clone()));
                } else if let Some(b) = budget.get_mut(id.service.as_str()) {
                    if *b {
                        *b = false;
                        actions.push(Action::Replace((*spec).clone()));
                    }
                }
            }
            _ => {}
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    fn spec(service: &str, replica: u32, generation: u64) -> InstanceSpec {
        let mut s = InstanceSpec::new(InstanceId::new(service, replica), vec!["true".into()]);
        s.generation = generation;
        s
    }

    fn obs(service: &str, replica: u32, generation: u64, state: InstanceState) -> ObservedInstance {
        ObservedInstance::new(InstanceId::new(service, replica), generation, state)
    }

    /// Compact rendering: "start web-0@2", "stop web-1", "replace web-0@3".
    fn render(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Start(s) => format!("start {}@{}", s.id, s.generation),
                Action::Stop(id) => format!("stop {id}"),
                Action::Replace(s) => format!("replace {}@{}", s.id, s.generation),
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        desired: Vec<InstanceSpec>,
        observed: Vec<ObservedInstance>,
        want: &'static [&'static str],
    }

    #[test]
    fn table() {
        let cases = vec![
            Case { name: "nothing", desired: vec![], observed: vec![], want: &[] },
            Case {
                name: "start all missing",
                desired: vec![spec("web", 0, 1), spec("web", 1, 1), spec("db", 0, 1)],
                observed: vec![],
                want: &["start db-0@1", "start web-0@1", "start web-1@1"],
            },
            Case {
                name: "steady state does nothing, whatever the state",
                desired: vec![spec("web", 0, 1), spec("web", 1, 1), spec("job", 0, 1), spec("x", 0, 1)],
                observed: vec![
                    obs("web", 0, 1, Ready),
                    obs("web", 1, 1, CrashLoop),
                    obs("job", 0, 1, Exited),
                    obs("x", 0, 1, Backoff),
                ],
                want: &[],
            },
            Case {
                name: "stop what is not desired (also while stopping)",
                desired: vec![spec("web", 0, 1)],
                observed: vec![obs("web", 0, 1, Ready), obs("web", 1, 1, Ready), obs("old", 0, 4, Stopping)],
                want: &["stop old-0", "stop web-1"],
            },
            Case {
                name: "scale down and up at once",
                desired: vec![spec("web", 0, 1), spec("web", 2, 1)],
                observed: vec![obs("web", 0, 1, Ready), obs("web", 1, 1, Ready)],
                want: &["stop web-1", "start web-2@1"],
            },
            Case {
                name: "single replica is replaced at once",
                desired: vec![spec("web", 0, 2)],
                observed: vec![obs("web", 0, 1, Ready)],
                want: &["replace web-0@2"],
            },
            Case {
                name: "rolling: all ready -> replace only the first",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2), spec("web", 2, 2)],
                observed: vec![obs("web", 0, 1, Ready), obs("web", 1, 1, Ready), obs("web", 2, 1, Ready)],
                want: &["replace web-0@2"],
            },
            Case {
                name: "rolling: replacement still starting -> wait",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2), spec("web", 2, 2)],
                observed: vec![obs("web", 0, 2, Starting), obs("web", 1, 1, Ready), obs("web", 2, 1, Ready)],
                want: &[],
            },
            Case {
                name: "rolling: replacement being stopped/started -> wait",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2)],
                observed: vec![obs("web", 0, 2, Stopping), obs("web", 1, 1, Ready)],
                want: &[],
            },
            Case {
                name: "rolling: replacement ready -> next one",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2), spec("web", 2, 2)],
                observed: vec![obs("web", 0, 2, Ready), obs("web", 1, 1, Ready), obs("web", 2, 1, Ready)],
                want: &["replace web-1@2"],
            },
            Case {
                name: "rolling: last one",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2), spec("web", 2, 2)],
                observed: vec![obs("web", 0, 2, Ready), obs("web", 1, 2, Ready), obs("web", 2, 1, Ready)],
                want: &["replace web-2@2"],
            },
            Case {
                name: "rolling: an unrelated unready replica holds back ready replacements",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2), spec("web", 2, 2)],
                observed: vec![obs("web", 0, 1, Ready), obs("web", 1, 1, Ready), obs("web", 2, 2, Unready)],
                want: &[],
            },
            Case {
                name: "rolling: a missing replica holds back ready replacements",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2)],
                observed: vec![obs("web", 0, 1, Ready)],
                want: &["start web-1@2"],
            },
            Case {
                name: "outdated and not ready is replaced right away, ready ones wait",
                desired: vec![spec("web", 0, 2), spec("web", 1, 2), spec("web", 2, 2)],
                observed: vec![obs("web", 0, 1, Ready), obs("web", 1, 1, CrashLoop), obs("web", 2, 1, Starting)],
                want: &["replace web-1@2", "replace web-2@2"],
            },
            Case {
                name: "all crash-looping on a bad generation: all replaced",
                desired: vec![spec("web", 0, 3), spec("web", 1, 3)],
                observed: vec![obs("web", 0, 2, CrashLoop), obs("web", 1, 2, Backoff)],
                want: &["replace web-0@3", "replace web-1@3"],
            },
            Case {
                name: "services roll independently",
                desired: vec![spec("api", 0, 5), spec("api", 1, 5), spec("web", 0, 2), spec("web", 1, 2)],
                observed: vec![
                    obs("api", 0, 4, Ready),
                    obs("api", 1, 4, Ready),
                    obs("web", 0, 2, Starting),
                    obs("web", 1, 1, Ready),
                ],
                want: &["replace api-0@5"],
            },
            Case {
                name: "an instance being scaled away does not block the rollout",
                desired: vec![spec("web", 0, 2)],
                observed: vec![obs("web", 0, 1, Ready), obs("web", 1, 1, Unready)],
                want: &["replace web-0@2", "stop web-1"],
            },
            Case {
                name: "generation going backwards also converges",
                desired: vec![spec("web", 0, 1)],
                observed: vec![obs("web", 0, 2, Ready)],
                want: &["replace web-0@1"],
            },
            Case {
                name: "exited outdated instance is replaced",
                desired: vec![spec("job", 0, 2)],
                observed: vec![obs("job", 0, 1, Exited)],
                want: &["replace job-0@2"],
            },
            Case {
                name: "duplicate desired ids: first wins",
                desired: vec![spec("web", 0, 1), spec("web", 0, 9)],
                observed: vec![],
                want: &["start web-0@1"],
            },
        ];
        for c in cases {
            let got = render(&reconcile(&c.desired, &c.observed));
            assert_eq!(got, c.want, "case: {}", c.name);
        }
    }

    /// Simulates a full rollout of 3 replicas: each pass applies the actions
    /// (a replaced instance comes back `Starting`, then becomes ready on the
    /// next pass) and checks at most one ready instance is taken down at a
    /// time.
    #[test]
    fn rolling_simulation_replaces_one_at_a_time() {
        let desired: Vec<_> = (0..3).map(|r| spec("web", r, 2)).collect();
        let mut observed: Vec<_> = (0..3).map(|r| obs("web", r, 1, Ready)).collect();
        let mut order = Vec::new();
        for _pass in 0..20 {
            for o in observed.iter_mut() {
                if o.state == Starting {
                    o.state = Ready;
                }
            }
            let actions = reconcile(&desired, &observed);
            if actions.is_empty() {
                break;
            }
            assert_eq!(actions.len(), 1, "one at a time: {actions:?}");
            for a in actions {
                let Action::Replace(s) = a else { unreachable!("only replaces expected") };
                order.push(s.id.to_string());
                let o = observed.iter_mut().find(|o| o.id == s.id).expect("observed");
                o.generation = s.generation;
                o.state = Starting;
                // While it starts, nothing else may happen.
                assert!(reconcile(&desired, &observed).is_empty());
            }
        }
        assert_eq!(order, ["web-0", "web-1", "web-2"]);
        assert!(observed.iter().all(|o| o.generation == 2 && o.ready()));
    }
}
