//! Field paths inside a spec (`services.web.health.interval`,
//! `routes[0].service`), kept structured so that names containing dots or
//! brackets cannot be confused with nesting.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Seg {
    /// A fixed field of the spec language (`services`, `health`, …).
    Field(&'static str),
    /// A user-chosen key (service name, port name, env var).
    Key(String),
    /// A list index.
    Index(usize),
}

/// A path from the document root to a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub(crate) fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    pub(crate) fn field(&self, name: &'static str) -> FieldPath {
        self.with(Seg::Field(name))
    }

    pub(crate) fn key(&self, name: &str) -> FieldPath {
        self.with(Seg::Key(name.to_string()))
    }

    pub(crate) fn index(&self, i: usize) -> FieldPath {
        self.with(Seg::Index(i))
    }

    fn with(&self, seg: Seg) -> FieldPath {
        let mut v = self.0.clone();
        v.push(seg);
        FieldPath(v)
    }

    pub(crate) fn segs(&self) -> &[Seg] {
        &self.0
    }

    pub(crate) fn from_segs(segs: &[Seg]) -> FieldPath {
        FieldPath(segs.to_vec())
    }

    /// True if `self` equals `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

fn plain_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '*')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Field(name) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(name)?;
                }
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if plain_key(k) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let p = FieldPath::root().field("routes").index(2).field("service");
        assert_eq!(p.to_string(), "routes[2].service");
        let p = FieldPath::root().field("services").key("a.b").field("env");
        assert_eq!(p.to_string(), "services.\"a.b\".env");
        assert!(p.starts_with(&FieldPath::root().field("services").key("a.b")));
        assert!(!p.starts_with(&FieldPath::root().field("services").key("a")));
    }
}
