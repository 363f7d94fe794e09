//! House rules checked as tests, on the source tree itself:
//!
//! - every source file says what it owns in a `//!` doc comment;
//! - no banned dependency (C/TLS stacks, unmaintained crates) is in the lock file;
//! - the dependency table in ARCHITECTURE.md lists exactly the real `holdfast-*` arrows of
//!   every crate's Cargo.toml, and every arrow points down the table;
//! - the pure crates (decisions) depend on no runtime, network, disk or process crate and
//!   read no clock.
use std::collections::{BTreeMap, BTreeSet};
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

/// crate dir name -> its `holdfast-*` [dependencies] (not dev-dependencies), and every
/// dependency name.
fn manifests() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(workspace_root().join("crates")).expect("crates/") {
        let dir = e.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        let mut section = String::new();
        let (mut ours, mut all) = (BTreeSet::new(), BTreeSet::new());
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            if section != "[dependencies]" || line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line.split(['=', '.', ' ']).next().unwrap_or("").to_string();
            if let Some(short) = name.strip_prefix("holdfast-") {
                ours.insert(short.to_string());
            }
            all.insert(name);
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.insert(name, (ours, all));
    }
    out
}

/// The rows of the dependency table in ARCHITECTURE.md, top (depends on more) to bottom.
fn documented() -> Vec<(String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text.find("<!-- dependency table").expect("ARCHITECTURE.md has the dependency table marker");
    let mut rows = Vec::new();
    for line in text[start..].lines().skip(1) {
        let line = line.trim();
        if !line.starts_with('|') {
            if rows.is_empty() {
                continue;
            }
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 2 || cells[0] == "crate" || cells[0].starts_with("---") {
            continue;
        }
        let name = cells[0].trim_matches('`').to_string();
        let deps: BTreeSet<String> = cells[1]
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_string())
            .filter(|d| !d.is_empty() && d != "—")
            .collect();
        rows.push((name, deps));
    }
    rows
}

#[test]
fn the_documented_dependency_arrows_are_the_real_ones_and_point_down() {
    let real = manifests();
    let doc = documented();
    let order: BTreeMap<&str, usize> = doc.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    let mut problems = Vec::new();
    for (name, (deps, _)) in &real {
        let Some((_, listed)) = doc.iter().find(|(n, _)| n == name) else {
            problems.push(format!("crate `{name}` is missing from the dependency table"));
            continue;
        };
        for d in deps.difference(listed) {
            problems.push(format!("`{name}` depends on `{d}`, but the table does not say so"));
        }
        for d in listed.difference(deps) {
            problems.push(format!("the table says `{name}` depends on `{d}`, but its Cargo.toml does not"));
        }
        for d in deps {
            match (order.get(name.as_str()), order.get(d.as_str())) {
                (Some(a), Some(b)) if b <= a => {
                    problems.push(format!("`{name}` -> `{d}` points up the table (a dependency must be listed below)"))
                }
                _ => {}
            }
        }
    }
    for (name, _) in &doc {
        if !real.contains_key(name) {
            problems.push(format!("the table lists `{name}`, which is not a crate"));
        }
    }
    assert!(problems.is_empty(), "ARCHITECTURE.md's dependency table is out of date:\n  {}", problems.join("\n  "));
}

/// Crates that hold decisions only.
const PURE: &[&str] = &["spec", "placement", "state", "control", "ui"];
/// Dependencies that mean IO, a runtime or a clock.
const IO_CRATES: &[&str] =
    &["tokio", "tokio-util", "futures", "hyper", "hyper-util", "axum", "redb", "rustix", "libc", "openraft", "rustls"];

#[test]
fn pure_crates_depend_on_no_runtime_and_read_no_clock() {
    let real = manifests();
    let mut problems = Vec::new();
    for name in PURE {
        let (_, all) = real.get(*name).unwrap_or_else(|| panic!("pure crate `{name}` exists"));
        for d in all.iter().filter(|d| IO_CRATES.contains(&d.as_str())) {
            problems.push(format!("pure crate `{name}` depends on `{d}`"));
        }
        let mut files = Vec::new();
        rust_files(&workspace_root().join("crates").join(name).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let mut banned = vec![
                "Instant::now",
                "SystemTime::now",
                "thread::sleep",
                "TcpStream",
                "TcpListener",
                "UdpSocket",
                "process::Command",
            ];
            // `spec` reads the files it is given; nothing else pure touches the disk.
            if *name != "spec" {
                banned.push("std::fs::");
            }
            for bad in banned {
                if text.contains(bad) {
                    problems.push(format!("{} uses `{bad}`", f.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "pure crates must stay pure:\n  {}", problems.join("\n  "));
}
