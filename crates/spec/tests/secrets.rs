//! The `secrets:` section, `{ secret: name }` env values and `files:`: a full example
//! parses to the canonical model, old JSON still loads, and every rule has a case with its
//! exact diagnostic.

mod common;
use std::collections::BTreeMap;

use common::{check_errs_exactly, check_ok};
use holdfast_spec::{EnvValue, FileSource, SecretSpec, Stack};

const FULL: &str = r#"
project: shop
secrets:
  oauth-key: {}
  api-token:
services:
  web:
    run: [srv]
    workdir: /srv/web
    env:
      PLAIN: "value"
      OAUTH_KEY: { secret: oauth-key }
    files:
      /run/secrets/oauth: { secret: oauth-key }
      /etc/web/token: { secret: api-token }
"#;

#[test]
fn full_example_parses() {
    let stack = check_ok(FULL);
    assert_eq!(
        stack.secrets,
        BTreeMap::from([("api-token".to_string(), SecretSpec {}), ("oauth-key".to_string(), SecretSpec {})])
    );
    let web = &stack.services["web"];
    assert_eq!(web.env["OAUTH_KEY"], EnvValue::Secret { secret: "oauth-key".into() });
    assert_eq!(web.files["/run/secrets/oauth"], FileSource { secret: "oauth-key".into() });
    assert_eq!(web.secrets_used().into_iter().collect::<Vec<_>>(), vec!["api-token", "oauth-key"]);
    // The wire form: a secret reference is `{"secret": ...}`, and it comes back as one.
    let json = serde_json::to_string(&stack).unwrap();
    assert!(json.contains(r#""OAUTH_KEY":{"secret":"oauth-key"}"#), "{json}");
    let back: Stack = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stack);
}

#[test]
fn json_without_secrets_still_loads() {
    // Written before secrets existed: no `secrets`, no `files` (and empty ones are still
    // left out, so older nodes read what this version writes).
    let stack = check_ok("services:\n  w:\n    run: [x]\n    env: { A: \"1\" }\n");
    let json = serde_json::to_string(&stack).unwrap();
    assert!(!json.contains("secrets") && !json.contains("files"), "{json}");
    let back: Stack = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stack);
}

fn svc(extra: &str) -> String {
    format!("secrets:\n  key: {{}}\nservices:\n  web:\n    run: [srv]\n{extra}")
}

macro_rules! exact {
    ($($name:ident: $yaml:expr => [$($expected:expr),* $(,)?];)*) => {
        $( #[test] fn $name() { check_errs_exactly(&$yaml, &[$($expected),*]) } )*
    };
}

exact! {
    undeclared_env_secret: svc("    env: { K: { secret: keys } }\n")
        => ["demo.yaml:6:25: services.web.env.K.secret: secret `keys` is not declared in project `default`, did you mean `key`? (declared: key)"];
    no_secrets_section: "services:\n  web:\n    run: [srv]\n    env: { K: { secret: key } }\n"
        => ["demo.yaml:4:25: services.web.env.K.secret: secret `key` is not declared: add `secrets: { key: {} }` at the top level of project `default`, then set its value with `holdfast secret set default/key`"];
    value_in_spec: "secrets:\n  key: hunter2\n"
        => ["demo.yaml:2:8: secrets.key: a secret is declared as `key: {}`; its value never goes in a spec: set it with `holdfast secret set <project>/key` (from stdin or --from-file)"];
    bad_secret_name: "secrets:\n  Key_1: {}\n"
        => ["demo.yaml:2:3: secrets.Key_1: invalid secret name `Key_1`: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-', e.g. `key-1`"];
    relative_file: svc("    files: { run/key: { secret: key } }\n")
        => ["demo.yaml:6:14: services.web.files.\"run/key\": file path `run/key` must be absolute, e.g. `/run/secrets/run/key`"];
    file_in_system_dir: svc("    files: { /etc/key: { secret: key } }\n")
        => ["demo.yaml:6:14: services.web.files.\"/etc/key\": `/etc/key` is directly in `/etc`: the instance sees only its secret files in a secret file's directory, so put it in a directory of its own, e.g. `/run/secrets/key`"];
    file_over_workdir: svc("    workdir: /srv/web\n    files: { /srv/web/key: { secret: key } }\n")
        => ["demo.yaml:7:14: services.web.files.\"/srv/web/key\": `/srv/web/key` is in `/srv/web`, which holds the workdir `/srv/web`: the instance sees only its secret files in that directory; use a directory of its own, e.g. `/run/secrets`"];
    dotdot_file: svc("    files: { /run/secrets/../key: { secret: key } }\n")
        => ["demo.yaml:6:14: services.web.files.\"/run/secrets/../key\": file path `/run/secrets/../key` must be a plain path to a file (no `.`, `..`, `//` or trailing `/`)"];
    file_without_secret: svc("    files: { /run/secrets/k: { value: x } }\n")
        => ["demo.yaml:6:30: services.web.files.\"/run/secrets/k\": missing required field `secret`: the declared secret the file holds, e.g. `{ secret: oauth-key }`",
            "demo.yaml:6:32: services.web.files.\"/run/secrets/k\": unknown field `value` (valid fields: secret)"];
    file_as_string: svc("    files: { /run/secrets/k: key }\n")
        => ["demo.yaml:6:30: services.web.files.\"/run/secrets/k\": expected `{ secret: <name> }`, naming a secret declared under `secrets:`, found string `key`"];
}
