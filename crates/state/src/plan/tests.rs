//! Plan tests: each case deploys YAML against a state and checks the rendered plan.
use super::*;
use crate::command::{Command, Request};
use crate::labels::LabelChange;
use crate::model::NodeRecord;
use std::collections::BTreeSet;

fn one_node_state() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&Request::new(Command::UpsertNode(NodeRecord::new(
        1,
        "node-1",
        "127.0.0.1:7946",
        "default",
        "amd64",
        Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
    ))));
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

/// Deploys `yaml` on `state` and returns (rendered plan, new state); a planning error
/// fails the test.
fn deploy(state: &ClusterState, yaml: &str) -> (String, ClusterState) {
    let (plan, desired) = plan_deploy(state, &stack(yaml)).unwrap_or_else(|e| panic!("deploy refused: {e}"));
    let mut next = state.clone();
    next.apply(&Request::new(Command::SetDesired { expected_revision: state.revision, desired }));
    assert_eq!(next.revision, state.revision + 1, "the planned change applies on the state it was planned on");
    (render(&plan), next)
}

/// Plans `yaml` on `state`, which must be refused; returns the error. A refused plan
/// yields no `Desired`, so there is nothing to propose: the state cannot change.
fn deploy_refused(state: &ClusterState, yaml: &str) -> String {
    match plan_deploy(state, &stack(yaml)) {
        Ok((plan, _)) => panic!("deploy must be refused, but planned:\n{}", render(&plan)),
        Err(e) => format!("error: {e}"),
    }
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
    let err = deploy_refused(&s2, &WEB.replace("project: demo", "project: other"));
    assert_eq!(
        err,
        "error: service `web` already belongs to project `demo`; project `other` cannot take it over (rename it, or remove it from `demo` first)"
    );
}

#[test]
fn over_capacity_deploy_fails_without_change() {
    let (_, s) = deploy(&one_node_state(), WEB);
    let err = deploy_refused(&s, &WEB.replace("replicas: 2", "replicas: 3\n    resources: {cpu: 1}"));
    assert!(err.starts_with("error: cannot place replica 2 of `web`"), "{err}");
    // The refusal is the whole outcome: `plan_deploy` returned no Desired to propose.
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

// ---------------------------------------------------------------- placement rules

/// Three nodes: n1 (site a, disk=ssd), n2 (site a, disk=ssd), n3 (site b).
fn three_node_state() -> ClusterState {
    let mut s = ClusterState::default();
    for (id, site, ssd) in [(1, "a", true), (2, "a", true), (3, "b", false)] {
        let labels = if ssd { BTreeMap::from([("disk".to_string(), "ssd".to_string())]) } else { BTreeMap::new() };
        s.apply(&Request::new(Command::UpsertNode(NodeRecord {
            labels,
            ..NodeRecord::new(
                id,
                format!("n{id}"),
                format!("127.0.0.{id}:7946"),
                site,
                "amd64",
                Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
            )
        })));
    }
    s
}

const PLACED: &str = "project: shop\nservices:\n  web:\n    run: [sleep, '100']\n    replicas: 2\n    placement:\n      node_selector: {disk: ssd}\n  db:\n    run: [sleep, '100']\n    placement:\n      anti_affinity: [web]\n";

fn names(s: &ClusterState, service: &str) -> Vec<String> {
    s.desired.placements[service].iter().map(|id| s.nodes[id].name.clone()).collect()
}

fn label(s: &ClusterState, node: &str, args: &[&str]) -> Result<(LabelPlan, ClusterState), PlanError> {
    let changes: Vec<LabelChange> =
        args.iter().map(|a| crate::labels::parse_label_arg(a).expect("valid test label")).collect();
    let plan = plan_node_labels(s, node, &changes)?;
    let mut next = s.clone();
    next.apply(&Request::new(plan.command.clone()));
    if let Some(desired) = plan_reschedule(&next)?.desired {
        let rev = next.revision;
        next.apply(&Request::new(Command::SetDesired { expected_revision: rev, desired }));
    }
    Ok((plan, next))
}

#[test]
fn deploy_honours_selector_and_anti_affinity() {
    let (plan, s) = deploy(&three_node_state(), PLACED);
    assert_eq!(plan, "create service db\ncreate service web");
    assert_eq!(names(&s, "web"), ["n1", "n2"], "only the ssd nodes");
    assert_eq!(names(&s, "db"), ["n3"], "never beside web");
}

#[test]
fn deploy_that_no_node_matches_is_refused_naming_the_selector() {
    let err = deploy_refused(&three_node_state(), &PLACED.replace("{disk: ssd}", "{gpu: 'true'}"));
    assert_eq!(
        err,
        "error: cannot place replica 0 of `web`: no node matches node_selector {gpu=true}: no schedulable node has label `gpu`"
    );
}

#[test]
fn changing_placement_moves_replicas_without_replacing_the_others() {
    let (_, s) = deploy(&three_node_state(), PLACED);
    let gen = s.desired.services["web"].generation;
    // web may now only run on n1.
    let (plan, s2) = deploy(&s, &PLACED.replace("{disk: ssd}", "{name: n1}"));
    assert_eq!(
        plan,
        "unchanged service db\nupdate service web [placement.node_selector: {disk=ssd} -> {name=n1}; web-1 moves n2 -> n1]"
    );
    assert_eq!(s2.desired.services["web"].generation, gen, "running instances are not replaced");
    assert_eq!(names(&s2, "web"), ["n1", "n1"]);
    let (plan, _) = deploy(&s, &PLACED.replace("anti_affinity: [web]", "anti_affinity: []\n      spread: sites"));
    assert_eq!(
        plan,
        "update service db [placement.spread: nodes -> sites; placement.anti_affinity: [web] -> []]\nunchanged service web"
    );
}

#[test]
fn relabelling_a_node_moves_only_what_no_longer_matches() {
    let (_, s) = deploy(&three_node_state(), PLACED);
    let (plan, s2) = label(&s, "n2", &["disk-"]).expect("label");
    // web-1 cannot go to n3 (db runs there): it shares n1.
    assert_eq!(describe_moves(&s, &plan.moves), ["web-1: n2 -> n1"]);
    assert!(plan.changed);
    assert_eq!(names(&s2, "web"), ["n1", "n1"]);
    assert_eq!(names(&s2, "db"), ["n3"]);
    assert!(s2.nodes[&2].labels.is_empty());
    // the label back: nothing moves (minimal moves)
    let (plan, s3) = label(&s2, "n2", &["disk=ssd", "rack=r1"]).expect("label");
    assert!(plan.moves.is_empty());
    assert_eq!(s3.desired.placements, s2.desired.placements);
    assert_eq!(crate::labels::format_labels(&s3.nodes[&2].labels), "disk=ssd,rack=r1");
    // the same again: unchanged
    let (plan, _) = label(&s3, "n2", &["disk=ssd"]).expect("label");
    assert!(!plan.changed && plan.moves.is_empty());
}

#[test]
fn a_label_change_that_strands_replicas_is_refused() {
    let (_, s) = deploy(&three_node_state(), PLACED);
    let (_, s2) = label(&s, "n2", &["disk-"]).expect("label");
    let err = label(&s2, "n1", &["disk-"]).map(|_| ()).unwrap_err().to_string();
    assert_eq!(
        err,
        "changing the labels of node n1 would leave replicas with no node to run on, so nothing was changed:\n  cannot place replica 0 of `web`: no node matches node_selector {disk=ssd}: no schedulable node has label `disk`\n  cannot place replica 1 of `web`: no node matches node_selector {disk=ssd}: no schedulable node has label `disk`\n(label another node first, or change the service's placement)"
    );
    let bad = |node: &str, args: &[LabelChange]| plan_node_labels(&s, node, args).map(|_| ()).unwrap_err().to_string();
    assert_eq!(bad("n9", &[LabelChange::Remove("x".into())]), "unknown node `n9` (nodes: n1, n2, n3)");
    assert!(bad("n1", &[LabelChange::Set("site".into(), "b".into())])
        .starts_with("invalid label `site=b`: `site` is a built-in label"));
    assert_eq!(
        bad("n1", &[LabelChange::Set("a".into(), "1".into()), LabelChange::Remove("a".into())]),
        "label `a` is both set and removed; give one of them"
    );
}

#[test]
fn reschedule_moves_what_it_can_and_reports_what_is_stuck() {
    let (_, s) = deploy(&three_node_state(), PLACED);
    let mut s2 = s.clone();
    // n1 down: web-0 moves to... nowhere allowed but n2 (ssd); db stays.
    s2.apply(&Request::new(Command::SetNodeFlags { id: 1, cordoned: None, down: Some(true), draining: None }));
    let r = plan_reschedule(&s2).expect("reschedule");
    assert_eq!(describe_moves(&s2, &r.moves), ["web-0: n1 -> n2"]);
    assert!(r.stuck.is_empty());
    // n2 down as well: web has no ssd node left; its replicas stay where they are and
    // are reported, nothing else is blocked.
    s2.apply(&Request::new(Command::SetNodeFlags { id: 2, cordoned: None, down: Some(true), draining: None }));
    let r = plan_reschedule(&s2).expect("reschedule");
    assert!(r.desired.is_none(), "nothing can move");
    assert_eq!(r.stuck.len(), 2);
    assert!(r.stuck[0].to_string().contains("n1, n2 match but are drained or down"), "{}", r.stuck[0]);
    // nothing to do on a healthy cluster
    assert_eq!(
        plan_reschedule(&s).expect("reschedule"),
        Reschedule { desired: None, moves: vec![], stuck: vec![], databases_stuck: vec![] }
    );
}

const ZONE: &str = "project: demo\nservices:\n  web:\n    run: [sleep, '100']\n    ports: {http: 8080}\nroutes:\n  - {host: www.example.com, service: web}\ndns:\n  zones:\n    - name: example.com\n      records: [{name: \"@\", type: MX, value: 10 mail.example.net}]\n";

#[test]
fn zones_need_an_edge_and_belong_to_one_project() {
    let s = one_node_state();
    let err = deploy_refused(&s, ZONE);
    assert_eq!(
        err,
        "error: zone `example.com` has no edge node to answer it: start at least one node with `--edge --public-address IP` (or `holdfast join ... --edge`) first, then delegate the zone to the edge nodes (ns1.example.com, ns2.example.com, ...)"
    );
    let mut s = one_node_state();
    let mut n = s.nodes[&1].clone();
    n.edge = Some(crate::model::EdgeInfo {
        public_address: "192.0.2.1".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
        http_port: 80,
        https_port: 443,
        dns_port: 53,
        site_address: None,
    });
    s.apply(&Request::new(Command::UpsertNode(n)));
    let (plan, s) = deploy(&s, ZONE);
    assert_eq!(
        plan,
        "create service web\ncreate route www.example.com/ -> web:http\ncreate zone example.com [1 records, ttl 15s]"
    );
    assert_eq!(s.desired.zones["example.com"].project, "demo");
    let (plan, s) = deploy(&s, &ZONE.replace("ttl: 15", "").replace("records: [", "ttl: 30\n      records: ["));
    assert!(plan.contains("update zone example.com [1 records, ttl 30s]"), "{plan}");
    // Another project cannot take the zone; nothing changes.
    let other = ZONE.replace("project: demo", "project: other").replace("web", "api").replace("www.", "api.");
    let err = deploy_refused(&s, &other);
    assert_eq!(
        err,
        "error: zone `example.com` already belongs to project `demo`; project `other` cannot take it over (remove it from `demo` first)"
    );
    // Deploying the project without its zone removes it.
    let (plan, s) = deploy(&s, WEB);
    assert!(plan.contains("delete zone example.com"), "{plan}");
    assert!(s.desired.zones.is_empty());
}

/// Nodes 1 (amd64), 2 and 3 (arm64).
fn mixed_arch_state() -> ClusterState {
    let mut s = ClusterState::default();
    for (id, arch) in [(1, "amd64"), (2, "arm64"), (3, "arm64")] {
        s.apply(&Request::new(Command::UpsertNode(NodeRecord::new(
            id,
            format!("n{id}"),
            format!("127.0.0.{id}:7946"),
            "default",
            arch,
            Capacity { cpu_millis: 2000, memory_bytes: 4 << 30 },
        ))));
    }
    s
}

#[test]
fn an_images_architectures_choose_its_nodes_and_a_layout_without_them_is_refused() {
    let s = mixed_arch_state();
    let yaml = "project: p\nservices:\n  web:\n    image: reg.example/p/web:1\n    replicas: 3\n";
    let image = "reg.example/p/web:1".to_string();
    let amd64 = ImageArchs::from([(image.clone(), BTreeSet::from(["amd64".to_string()]))]);
    let (_, desired) = plan_deploy_images(&s, &stack(yaml), &amd64, &mut String::new).expect("placed");
    assert_eq!(desired.placements["web"], vec![1, 1, 1]);
    assert_eq!(desired.services["web"].image_archs, Some(BTreeSet::from(["amd64".to_string()])));
    // Both architectures: spread over all three.
    let both = ImageArchs::from([(image.clone(), BTreeSet::from(["amd64".into(), "arm64".into()]))]);
    let (_, desired) = plan_deploy_images(&s, &stack(yaml), &both, &mut String::new).expect("placed");
    let mut on = desired.placements["web"].clone();
    on.sort_unstable();
    assert_eq!(on, vec![1, 2, 3]);
    // A user's `arch` the image lacks: no node matches.
    let pinned = yaml.replace("replicas: 3", "replicas: 1\n    placement: { node_selector: { arch: arm64 } }");
    let e = plan_deploy_images(&s, &stack(&pinned), &amd64, &mut String::new).expect_err("no arm64 image");
    assert!(e.to_string().contains("no node matches node_selector"), "{e}");
    // No live amd64 node: refused, naming both sides.
    let mut cordoned = s.clone();
    cordoned.apply(&Request::new(Command::SetNodeFlags { id: 1, cordoned: Some(true), down: None, draining: None }));
    let e = plan_deploy_images(&cordoned, &stack(yaml), &amd64, &mut String::new).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "cannot place service `web`: reg.example/p/web:1 has no linux/arm64 image (it offers linux/amd64); n2, n3 are arm64"
    );
    // Not read (a redeploy planned without the registry): the record's architectures stay.
    let (_, first) = plan_deploy_images(&s, &stack(yaml), &amd64, &mut String::new).expect("placed");
    let mut deployed = s.clone();
    deployed.apply(&Request::new(Command::SetDesired { expected_revision: s.revision, desired: first }));
    let (_, again) = plan_deploy(&deployed, &stack(yaml)).expect("placed");
    assert_eq!(again.services["web"].image_archs, Some(BTreeSet::from(["amd64".to_string()])));
    assert_eq!(again.placements["web"], vec![1, 1, 1]);
}
