//! Plan tests: each case deploys YAML against a state and checks the rendered plan.
use super::*;
use crate::command::{Command, Request};
use crate::model::NodeRecord;

fn one_node_state() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&Request::new(Command::UpsertNode(NodeRecord {
        id: 1,
        name: "node-1".into(),
        addr: "127.0.0.1:7946".into(),
        site: "default".into(),
        arch: "amd64".into(),
        capacity: Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
        labels: Default::default(),
        cordoned: false,
        draining: false,
        down: false,
        cert_fingerprint: String::new(),
    })));
    s
}

fn stack(yaml: &str) -> Stack {
    match holdfast_spec::parse_str("test.yaml", yaml) {
        Ok(s) => s,
        Err(e) => panic!("test spec does not parse: {e}"),
    }
}

fn render(plan: &Plan) -> String {
    plan.changes
        .iter()
        .map(|c| {
            let mut line = format!("{} {}", c.kind, c.target);
            if !c.details.is_empty() {
                line.push_str(&format!(" [{}]", c.details.join("; ")));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Deploys `yaml` on `state` and returns (rendered plan, new state).
fn deploy(state: &ClusterState, yaml: &str) -> (String, ClusterState) {
    let (plan, desired) = match plan_deploy(state, &stack(yaml)) {
        Ok(v) => v,
        Err(e) => return (format!("error: {e}"), state.clone()),
    };
    let mut next = state.clone();
    next.apply(&Request::new(Command::SetDesired { expected_revision: state.revision, desired }));
    (render(&plan), next)
}

const WEB: &str = "project: demo\nservices:\n  web:\n    run: [sleep, '100']\n    replicas: 2\n    ports: {http: 8080}\nroutes:\n  - {host: demo.localhost, service: web}\n";

#[test]
fn first_deploy_creates_everything() {
    let (plan, s) = deploy(&one_node_state(), WEB);
    assert_eq!(plan, "create service web\ncreate route demo.localhost/ -> web:http");
    assert_eq!(s.desired.placements["web"], vec![1, 1]);
}

#[test]
fn same_deploy_twice_is_a_noop() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let (plan, s2) = deploy(&s, WEB);
    assert_eq!(plan, "unchanged service web\nunchanged route demo.localhost/ -> web:http");
    assert_eq!(s2.desired, s.desired);
}

#[test]
fn scaling_in_spec_keeps_generation() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let gen = s.desired.services["web"].generation;
    let (plan, s2) = deploy(&s, &WEB.replace("replicas: 2", "replicas: 3"));
    assert_eq!(plan, "update service web [replicas: 2 -> 3]\nunchanged route demo.localhost/ -> web:http");
    assert_eq!(s2.desired.services["web"].generation, gen);
    assert_eq!(s2.desired.placements["web"].len(), 3);
}

#[test]
fn changing_command_bumps_generation() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let gen = s.desired.services["web"].generation;
    let (plan, s2) = deploy(&s, &WEB.replace("'100'", "'200'"));
    assert_eq!(
        plan,
        "update service web [run: [\"sleep\", \"100\"] -> [\"sleep\", \"200\"]]\nunchanged route demo.localhost/ -> web:http"
    );
    assert!(s2.desired.services["web"].generation > gen);
}

#[test]
fn env_values_are_never_shown() {
    let (_, s) = deploy(&one_node_state(), &WEB.replace("replicas: 2", "replicas: 2\n    env: {TOKEN: old, GONE: x}"));
    let (plan, _) = deploy(&s, &WEB.replace("replicas: 2", "replicas: 2\n    env: {TOKEN: new, ADDED: y}"));
    assert!(plan.starts_with("update service web [env: +ADDED ~TOKEN -GONE]"), "{plan}");
    assert!(!plan.contains("old") && !plan.contains("new"));
}

#[test]
fn services_missing_from_the_project_are_deleted() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let (plan, s2) = deploy(&s, "project: demo\nservices:\n  api:\n    run: [sleep, '1']\n");
    assert_eq!(plan, "create service api\ndelete service web\ndelete route demo.localhost/ -> web:http");
    assert!(!s2.desired.placements.contains_key("web"));
    assert!(s2.desired.routes.is_empty());
}

#[test]
fn other_projects_are_untouched_and_cannot_be_taken_over() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let (plan, s2) = deploy(&s, "project: other\nservices:\n  api:\n    run: [sleep, '1']\n");
    assert_eq!(plan, "create service api");
    assert!(s2.desired.services.contains_key("web"));
    let (err, _) = deploy(&s2, &WEB.replace("project: demo", "project: other"));
    assert_eq!(
        err,
        "error: service `web` already belongs to project `demo`; project `other` cannot take it over (rename it, or remove it from `demo` first)"
    );
}

#[test]
fn over_capacity_deploy_fails_without_change() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let (err, s2) = deploy(&s, &WEB.replace("replicas: 2", "replicas: 3\n    resources: {cpu: 1}"));
    assert!(err.starts_with("error: cannot place replica 2 of `web`"), "{err}");
    assert_eq!(s2, s);
}

#[test]
fn scale_restart_remove() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let (plan, d) = plan_scale(&s, "web", 4).expect("scale");
    assert_eq!(render(&plan), "update service web [replicas: 2 -> 4]");
    assert_eq!(d.placements["web"].len(), 4);
    let (plan, d) = plan_restart(&s, "web").expect("restart");
    assert_eq!(render(&plan), "update service web [restart all instances]");
    assert!(d.services["web"].generation > s.desired.services["web"].generation);
    let (plan, d) = plan_remove(&s, "web").expect("remove");
    assert_eq!(render(&plan), "delete service web\ndelete route demo.localhost/ -> web:http");
    assert!(d.services.is_empty() && d.routes.is_empty());
    assert_eq!(plan_remove(&s, "wbe").map(|_| ()).unwrap_err().to_string(), "unknown service `wbe` (services: web)");
    assert_eq!(plan_scale(&s, "web", 5000).map(|_| ()).unwrap_err(), PlanError::BadReplicas(5000));
}

#[test]
fn services_get_stable_distinct_loopback_addresses() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let addr = s.desired.services["web"].address;
    assert!(addr.octets()[0] == 127 && (64..128).contains(&addr.octets()[1]), "{addr}");
    let (_, s2) = deploy(&s, &WEB.replace("'100'", "'200'"));
    assert_eq!(s2.desired.services["web"].address, addr, "an update keeps the address");
    assert_eq!(service_address("demo", "web", &[]), addr, "derived from project/name");
    let moved = service_address("demo", "web", &[addr]);
    assert_ne!(moved, addr, "a taken address is skipped");
}
