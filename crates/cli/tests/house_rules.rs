//! House rules checked as tests: every source file says what it owns in a `//!` doc
//! comment, and no banned dependency (C/TLS stacks, unmaintained crates) is in the lock file.
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_crate_and_module_starts_with_a_doc_comment() {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(workspace_root().join("crates")).expect("crates dir").flatten() {
        rust_files(&krate.path().join("src"), &mut files);
    }
    assert!(files.len() > 20, "found the sources");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a leading //! doc comment: {missing:#?}");
}

#[test]
fn no_banned_dependencies() {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).expect("Cargo.lock");
    let banned = ["aws-lc-sys", "aws-lc-rs", "openssl-sys", "bincode", "serde_yaml", "serde_yml", "libyml", "sled"];
    let found: Vec<&str> = banned.iter().copied().filter(|b| lock.contains(&format!("name = \"{b}\""))).collect();
    assert!(found.is_empty(), "banned crates in Cargo.lock: {found:?}");
}
