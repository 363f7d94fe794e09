//! End-to-end test of containers from images: a real registry (Debian's
//! `docker-registry`) on loopback, an image built here from a busybox-static rootfs and
//! pushed with podman, then pulled and run by three holdfast nodes (podman + runc), served
//! through the ingress; a killed container is restarted, a crashed daemon's containers
//! are re-adopted, and removing the service leaves no container behind. It starts with
//! one sentence of what it proves.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The tools this test needs; under CI they must be there (scripts/test.sh installs them).
fn tools_or_skip() -> bool {
    let missing: Vec<&str> = ["podman", "docker-registry", "runc"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
        })
        .collect();
    let busybox = Path::new("/bin/busybox").exists() || Path::new("/usr/bin/busybox").exists();
    if missing.is_empty() && busybox && rustix_is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must have podman, docker-registry, runc and busybox-static as root: missing {missing:?}"
    );
    eprintln!("SKIPPED: needs root, podman, docker-registry, runc and busybox-static (missing {missing:?})");
    false
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

/// A registry on 127.0.0.1:`port` storing under `dir`; killed on drop.
struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry(dir: &Path, port: u16) -> Registry {
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .expect("registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry");
    wait_for("the registry answering", Duration::from_secs(10), || {
        let out = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/v2/")]).output();
        seen_unless(out.is_ok_and(|o| o.status.success()), (), "not yet")
    });
    Registry(child)
}

/// podman with its own store under `dir` (not a node's).
fn podman(dir: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root").arg(dir.join("store")).arg("--runroot").arg(dir.join("run"));
    c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", "runc"]);
    c
}

fn ok(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds `reference` from a busybox-static rootfs and pushes it to the registry.
fn build_and_push(dir: &Path, reference: &str) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()).expect("busybox");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "httpd", "echo", "mkdir", "sleep", "cat", "wget"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    let tar = dir.join("rootfs.tar");
    ok(
        {
            let mut c = Command::new("tar");
            c.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
            c
        },
        "tar",
    );
    let mut import = podman(dir);
    import.args(["import", "--change", "ENV PATH=/bin", "--change"]);
    import.arg(r#"CMD ["/bin/sh","-c","exec /bin/httpd -f -p ${PORT:-8080} -h /"]"#);
    import.arg(&tar).arg(reference);
    ok(import, "podman import");
    let mut push = podman(dir);
    push.args(["push", "--tls-verify=false", reference]);
    ok(push, "podman push");
}

/// The node's own podman store (as its agent configures it).
fn node_podman(d: &Node) -> Command {
    let mut c = Command::new("podman");
    let oci: PathBuf = d.dir.join("agent").join("oci");
    c.arg("--root").arg(oci.join("storage")).arg("--runroot").arg(oci.join("run"));
    c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", "runc"]);
    c
}

fn container_id(d: &Node, name: &str) -> Option<String> {
    let mut c = node_podman(d);
    c.args(["inspect", "--format", "{{.Id}} {{.State.Running}}", name]);
    let out = c.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (id, running) = text.trim().split_once(' ')?;
    (out.status.success() && running == "true").then(|| id.to_string())
}

#[test]
fn images_are_pulled_and_run_on_every_node_restarted_readopted_and_cleaned_up() {
    // Proves: an image pushed to a local registry is pulled by each of three nodes and
    // runs as containers that get the instance's env and port and serve through the
    // ingress; their output is the instance's log; a killed container is restarted; a
    // SIGKILLed daemon's container keeps running and is re-adopted (same container); and
    // `holdfast rm` leaves no container in any node's store.
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let port = 49950;
    let _registry = registry(work.path(), port);
    let image = format!("127.0.0.1:{port}/demo/web:1");
    build_and_push(work.path(), &image);

    let mut c = cluster("oci", 49700, &["a", "b", "c"]);
    let spec = format!(
        r#"project: oci
services:
  web:
    image: {image}
    run: ["/bin/sh", "-c", "mkdir -p /tmp/www && echo hello from $HOLDFAST_INSTANCE > /tmp/www/index.html && echo started in a container && exec httpd -f -p $PORT -h /tmp/www"]
    replicas: 3
    ports: {{http: 8080}}
    health: {{http: /, interval: 300ms, timeout: 300ms}}
    resources: {{memory: 64Mi}}
    placement: {{spread: nodes}}
routes:
  - {{host: oci.localhost, service: web}}
"#
    );
    let (deployed, out, err) = c[0].deploy_yaml("oci.yaml", &spec);
    assert!(deployed, "{out}\n{err}");
    let st = c[0].wait_ready("web", 3, Duration::from_secs(90));
    let nodes: std::collections::BTreeSet<String> = service_of(&st, "web")["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["node"].as_str().map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), 3, "{st}");
    // Served through the ingress by containers that got their instance's env.
    // (Each node's ingress prefers the instance on its own node.)
    let mut seen = std::collections::BTreeSet::new();
    wait_for("every instance answering through the ingress", Duration::from_secs(20), || {
        for d in c.iter() {
            let (code, body) = d.ingress("oci.localhost", "/");
            assert_eq!(code, 200, "{body}");
            seen.insert(body.trim().to_string());
        }
        seen_unless(seen.len() == 3, (), format!("{seen:?}"))
    });
    assert!(seen.iter().all(|b| b.starts_with("hello from web-")), "{seen:?}");
    // Each node pulled the image into its own store.
    for d in c.iter() {
        let mut images = node_podman(d);
        images.args(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        let list = ok(images, "podman images");
        assert!(list.contains(&format!("127.0.0.1:{port}/demo/web:1")), "{}: {list}", d.name);
    }
    let logs = c[0].cli_ok(&["logs", "web", "--tail", "20"]);
    assert!(logs.contains("started in a container"), "{logs}");

    // Kill the container on n1 (its program, not the daemon): restarted.
    let on_n1 = |st: &serde_json::Value| -> serde_json::Value {
        service_of(st, "web")["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["node"] == "n1").cloned())
            .expect("an instance on n1")
    };
    let inst = on_n1(&c[0].status());
    let name = format!("hf-{}", inst["name"].as_str().expect("name"));
    let first = container_id(&c[0], &name).expect("the container runs");
    let mut kill = node_podman(&c[0]);
    kill.args(["kill", "--signal", "KILL", &name]);
    ok(kill, "podman kill");
    wait_for("the killed container replaced and ready", Duration::from_secs(30), || {
        let st = c[0].try_status()?;
        let i = on_n1(&st);
        let again = container_id(&c[0], &name);
        let ok =
            i["ready"] == true && i["restarts"].as_u64() >= Some(1) && again.is_some() && again != Some(first.clone());
        seen_unless(ok, (), format!("{i} {again:?}"))
    });

    // Crash n1's daemon: the container keeps serving and is re-adopted, not restarted.
    let before = container_id(&c[0], &name).expect("running");
    let client_pid = on_n1(&c[0].status())["pid"].as_u64().expect("pid");
    c[0].kill9();
    assert!(container_id(&c[0], &name).as_deref() == Some(before.as_str()), "the container survives its daemon");
    c[0].spawn(&[]);
    let st = c[0].wait_ready("web", 3, Duration::from_secs(30));
    let i = on_n1(&st);
    assert_eq!(i["adopted"], true, "{i}");
    assert_eq!(i["pid"].as_u64(), Some(client_pid), "{i}");
    assert_eq!(container_id(&c[0], &name).as_deref(), Some(before.as_str()), "the same container");

    // Removing the service removes every container from every node's store.
    c[0].cli_ok(&["rm", "web"]);
    for d in c.iter() {
        wait_for("no container left", Duration::from_secs(30), || {
            let mut ps = node_podman(d);
            ps.args(["ps", "--all", "--format", "{{.Names}}"]);
            let list = ps.output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            seen_unless(list.trim().is_empty(), (), list)
        });
    }
    c.finish();
}

#[test]
fn an_amd64_only_image_never_lands_on_an_arm64_node() {
    // Proves: holdfast reads an image's manifest list and places its replicas only on
    // nodes of an architecture it offers (n2 and n3 say they are arm64); a layout with no
    // such node is refused at deploy with both sides named, and nothing changes.
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let port = 49951;
    let _registry = registry(work.path(), port);
    let single = format!("127.0.0.1:{port}/demo/web:1");
    build_and_push(work.path(), &single);
    // A manifest list with only a linux/amd64 image in it.
    let list = format!("127.0.0.1:{port}/demo/amd64only:1");
    let mut create = podman(work.path());
    create.args(["manifest", "create", &list]);
    ok(create, "podman manifest create");
    let mut add = podman(work.path());
    add.args([
        "manifest",
        "add",
        "--tls-verify=false",
        "--arch",
        "amd64",
        "--os",
        "linux",
        &list,
        &format!("docker://{single}"),
    ]);
    ok(add, "podman manifest add");
    let mut push = podman(work.path());
    push.args(["manifest", "push", "--all", "--tls-verify=false", &list, &format!("docker://{list}")]);
    ok(push, "podman manifest push");

    let c = Cluster::form(
        config("oci-arch")
            .sites(&["a"])
            .node(&["--site", "a", "--arch", "arm64"])
            .node(&["--site", "b", "--arch", "arm64"])
            .ports_from(49800),
    );
    let nodes = c[0].nodes_json().expect("nodes");
    let mut archs: Vec<String> = nodes["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| format!("{}={}", n["name"].as_str().unwrap_or(""), n["arch"].as_str().unwrap_or("")))
        .collect();
    archs.sort();
    assert_eq!(archs, vec!["n1=amd64", "n2=arm64", "n3=arm64"]);
    let spec = |replicas: u32| {
        format!(
            "project: arch\nservices:\n  web:\n    image: {list}\n    replicas: {replicas}\n    ports: {{http: 8080}}\n    health: {{tcp: http, interval: 300ms}}\n"
        )
    };
    let (deployed, out, err) = c[0].deploy_yaml("arch.yaml", &spec(3));
    assert!(deployed, "{out}\n{err}");
    let st = c[0].wait_ready("web", 3, Duration::from_secs(90));
    let on: Vec<String> = service_of(&st, "web")["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["node"].as_str().map(str::to_string))
        .collect();
    assert_eq!(on, vec!["n1", "n1", "n1"], "only the amd64 node: {st}");

    // No amd64 node may take replicas: refused, naming what the image offers and the nodes.
    c[0].cli_ok(&["cordon", "n1"]);
    let other = spec(3).replace("project: arch", "project: arch2").replace("  web:", "  api:");
    let path = c[0].write_spec("arch2.yaml", &other);
    let out = c[0].cli(&["deploy", path.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{list} has no linux/arm64 image (it offers linux/amd64); n2, n3 are arm64")),
        "{text}"
    );
    assert_eq!(service_of(&c[0].status(), "api"), serde_json::Value::Null, "nothing changed");
    c.finish();
}

#[test]
fn an_imported_compose_file_deploys_and_serves() {
    // Proves: `holdfast import` turns a compose file (image, command with `$$`,
    // environment, ports, a CMD-SHELL healthcheck run inside the container, replicas,
    // resources, restart) into a spec that deploys and serves on the service's port, and
    // names the fields it could not carry over.
    if !tools_or_skip() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let port = 49952;
    let _registry = registry(work.path(), port);
    let image = format!("127.0.0.1:{port}/demo/web:1");
    build_and_push(work.path(), &image);
    let c = one_node("oci-import", 49900);
    let d = &c[0];
    let compose = format!(
        r#"services:
  web:
    image: {image}
    command: ["/bin/sh", "-c", "mkdir -p /tmp/w && echo $$GREETING from $$HOLDFAST_INSTANCE > /tmp/w/index.html && exec httpd -f -p $$PORT -h /tmp/w"]
    environment:
      GREETING: imported
    ports: ["18480:80"]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:$$PORT/"]
      interval: 1s
      timeout: 1s
    deploy:
      replicas: 2
      resources: {{limits: {{memory: 64M}}}}
    restart: unless-stopped
    volumes: ["data:/data"]
volumes:
  data: {{}}
"#
    );
    let dir = work.path().join("app");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("docker-compose.yml"), compose).expect("compose");
    let out = d.cli(&["import", dir.join("docker-compose.yml").to_str().expect("utf8")]);
    let (spec, notes) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{notes}");
    assert!(spec.starts_with("project: \"app\"\n"), "{spec}");
    assert!(notes.contains("docker-compose.yml:16:14: services.web.volumes: not imported"), "{notes}");
    assert!(notes.contains("docker-compose.yml:18:3: volumes: not imported"), "{notes}");
    let (deployed, out, err) = d.deploy_yaml("imported.yaml", &spec);
    assert!(deployed, "{spec}\n{out}\n{err}");
    let st = d.wait_ready("web", 2, Duration::from_secs(60));
    let svc = service_of(&st, "web");
    let address = svc["address"].as_str().expect("address");
    assert_eq!(svc["ports"]["p18480"], 18480, "{svc}");
    let body = wait_for("the service answering on its port", Duration::from_secs(10), || {
        let out = Command::new("curl").args(["-sf", "--max-time", "2", &format!("http://{address}:18480/")]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        seen_unless(text.starts_with("imported from web-"), text.clone(), text)
    });
    assert!(body.starts_with("imported from web-"), "{body}");
    c.finish();
}
