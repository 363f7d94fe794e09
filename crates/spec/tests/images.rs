//! Services from OCI images: `image:` is written back fully qualified, `run` becomes
//! optional (the image's own command), and a bad reference is an error at its line.

mod common;
use common::{check_errs_exactly, check_ok};

use holdfast_spec::RunCommand;

#[test]
fn an_image_service_needs_no_run_and_is_stored_fully_qualified() {
    let stack = check_ok(
        "
        project: shop
        services:
          web:
            image: shop/web:1.4.2
            ports: { http: 8080 }
          worker:
            image: 127.0.0.1:5000/shop/worker
            run: [worker, --queue, jobs]
        ",
    );
    let web = &stack.services["web"];
    assert_eq!(web.image.as_deref(), Some("docker.io/shop/web:1.4.2"));
    assert_eq!(web.run, RunCommand::Argv(vec![]));
    let worker = &stack.services["worker"];
    assert_eq!(worker.image.as_deref(), Some("127.0.0.1:5000/shop/worker:latest"));
    assert_eq!(worker.run.argv(), vec!["worker", "--queue", "jobs"]);
}

#[test]
fn bad_references_and_a_service_with_neither_run_nor_image_are_errors_at_their_line() {
    check_errs_exactly(
        "
        project: shop
        services:
          web:
            image: Shop/Web:1
          api:
            image: \"api:-x\"
          bare:
            replicas: 1
        ",
        &[
            "demo.yaml:4:12: services.web.image: `Shop` in `Shop/Web:1` is not a valid repository name component (repository names are lowercase): lowercase letters and digits, separated by `.`, `_`, `__` or `-`",
            "demo.yaml:6:12: services.api.image: tag `-x` of `api:-x` is not valid: letters, digits, `_`, `.` and `-`, at most 128, not starting with `.` or `-`",
            "demo.yaml:7:3: services.bare: missing required field `run`: the command to start, a list such as `[\"my-server\", \"--port\", \"8080\"]` or a shell string such as `\"python3 -m http.server $PORT\"` (or `image:` to run a container)",
        ],
    );
}
