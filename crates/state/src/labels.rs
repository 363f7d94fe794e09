//! Node labels: the rules for labels users set (`--label`, `holdfast node label`), the
//! parsing of `KEY=VALUE` / `KEY-` arguments, and a node's full label set as selectors
//! see it (the user's labels plus the built-ins `name`, `site`, `arch`).
use std::collections::{BTreeMap, BTreeSet};

pub use holdfast_placement::BUILTIN_LABELS;
use holdfast_placement::{LABEL_ARCH, LABEL_NAME, LABEL_SITE};
use holdfast_spec::names::{label_key_problem, label_value_problem};

use crate::model::NodeRecord;

/// One label change from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// `KEY=VALUE`.
    Set(String, String),
    /// `KEY-`.
    Remove(String),
}

/// Why `key` (with `value` when set) cannot be a user label: a built-in, or a bad key
/// or value.
pub fn user_label_problem(key: &str, value: Option<&str>) -> Option<String> {
    if BUILTIN_LABELS.contains(&key) {
        let from = match key {
            LABEL_NAME => "the node's name",
            LABEL_SITE => "--site when the node starts",
            _ => "the machine's CPU architecture",
        };
        return Some(format!(
            "`{key}` is a built-in label (set from {from}); it cannot be set or removed, and selectors can use it as it is"
        ));
    }
    label_key_problem(key).or_else(|| value.and_then(|v| label_value_problem(key, v)))
}

/// The `--label` flags of one start of a node: the leader applies them once per start
/// (a restart with the same flags re-applies them, a label changed at runtime in between
/// is not overwritten by the same start again).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StartLabels {
    /// Random per process start.
    pub start_id: u64,
    pub labels: BTreeMap<String, String>,
}

/// Parses `KEY=VALUE` (set) or `KEY-` (remove), checking the rules; the error names the
/// argument and says what is wrong.
pub fn parse_label_arg(arg: &str) -> Result<LabelChange, String> {
    let change = if let Some((k, v)) = arg.split_once('=') {
        LabelChange::Set(k.to_string(), v.to_string())
    } else if let Some(k) = arg.strip_suffix('-') {
        LabelChange::Remove(k.to_string())
    } else {
        return Err(format!(
            "invalid label `{}`: write KEY=VALUE to set a label or KEY- to remove one, e.g. `gpu=true` or `gpu-`",
            arg.escape_debug()
        ));
    };
    let problem = match &change {
        LabelChange::Set(k, v) if v.is_empty() => {
            Some(format!("the value is empty; give one (e.g. `{k}=true`), or write `{k}-` to remove the label"))
        }
        LabelChange::Set(k, v) => user_label_problem(k, Some(v)),
        LabelChange::Remove(k) => user_label_problem(k, None),
    };
    match problem {
        Some(p) => Err(format!("invalid label `{}`: {p}", arg.escape_debug())),
        None => Ok(change),
    }
}

/// Splits changes into (labels to set, labels to remove); a key both set and removed, or
/// set twice to different values, is an error.
pub fn split_changes(changes: &[LabelChange]) -> Result<(BTreeMap<String, String>, BTreeSet<String>), String> {
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    let mut remove = BTreeSet::new();
    for c in changes {
        match c {
            LabelChange::Set(k, v) => {
                if remove.contains(k) {
                    return Err(format!("label `{k}` is both set and removed; give one of them"));
                }
                if let Some(old) = set.insert(k.clone(), v.clone()) {
                    if &old != v {
                        return Err(format!("label `{k}` is given twice ({k}={old} and {k}={v}); give one value"));
                    }
                }
            }
            LabelChange::Remove(k) => {
                if set.contains_key(k) {
                    return Err(format!("label `{k}` is both set and removed; give one of them"));
                }
                remove.insert(k.clone());
            }
        }
    }
    Ok((set, remove))
}

/// Every label of a node as selectors match it: its user labels and the built-ins
/// (which win over a user label of the same key, should one ever be stored).
pub fn node_labels(node: &NodeRecord) -> BTreeMap<String, String> {
    let mut labels = node.labels.clone();
    labels.insert(LABEL_NAME.into(), node.name.clone());
    labels.insert(LABEL_SITE.into(), node.site.clone());
    labels.insert(LABEL_ARCH.into(), node.arch.clone());
    labels
}

/// `gpu=true, zone=b` (or `-` for none).
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arg: &str) -> String {
        match parse_label_arg(arg) {
            Ok(LabelChange::Set(k, v)) => format!("set {k}={v}"),
            Ok(LabelChange::Remove(k)) => format!("remove {k}"),
            Err(e) => e,
        }
    }

    #[test]
    fn label_arguments() {
        assert_eq!(parse("gpu=true"), "set gpu=true");
        assert_eq!(parse("disk-type=nvme"), "set disk-type=nvme");
        assert_eq!(parse("version=1.10"), "set version=1.10");
        assert_eq!(parse("gpu-"), "remove gpu");
        assert_eq!(parse("disk-type-"), "remove disk-type");
        assert_eq!(
            parse("gpu"),
            "invalid label `gpu`: write KEY=VALUE to set a label or KEY- to remove one, e.g. `gpu=true` or `gpu-`"
        );
        assert_eq!(
            parse("gpu="),
            "invalid label `gpu=`: the value is empty; give one (e.g. `gpu=true`), or write `gpu-` to remove the label"
        );
        assert_eq!(
            parse("GPU=true"),
            "invalid label `GPU=true`: invalid label key `GPU`: use 1-63 lowercase letters, digits, '-', '_' and '.', starting with a letter and ending with a letter or digit, e.g. `gpu`"
        );
        assert!(parse("gpu=a b").starts_with("invalid label `gpu=a b`: invalid value `a b` for label `gpu`"));
        assert!(parse(&format!("k={}", "v".repeat(64))).contains("it is 64 characters long"));
        assert_eq!(
            parse("site=b"),
            "invalid label `site=b`: `site` is a built-in label (set from --site when the node starts); it cannot be set or removed, and selectors can use it as it is"
        );
        assert!(parse("arch-").contains("`arch` is a built-in label (set from the machine's CPU architecture)"));
        assert!(parse("name=x").contains("`name` is a built-in label (set from the node's name)"));
    }

    #[test]
    fn conflicting_changes_are_refused() {
        let set = |k: &str, v: &str| LabelChange::Set(k.into(), v.into());
        let rm = |k: &str| LabelChange::Remove(k.into());
        assert_eq!(
            split_changes(&[set("a", "1"), rm("b")]),
            Ok((BTreeMap::from([("a".to_string(), "1".to_string())]), BTreeSet::from(["b".to_string()])))
        );
        assert_eq!(
            split_changes(&[set("a", "1"), rm("a")]),
            Err("label `a` is both set and removed; give one of them".into())
        );
        assert_eq!(
            split_changes(&[set("a", "1"), set("a", "2")]),
            Err("label `a` is given twice (a=1 and a=2); give one value".into())
        );
        assert!(split_changes(&[set("a", "1"), set("a", "1")]).is_ok());
    }
}
