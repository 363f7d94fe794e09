//! The YAML layer: turns spec text into a generic tree of [`Node`]s, each
//! with its 1-based line:column, using serde-saphyr's `Spanned` wrapper.
//!
//! Parsing into a generic tree (rather than straight into typed structs)
//! lets the conversion pass report *every* problem in a file, not just the
//! first one serde would stop at. Plain scalars that YAML would type as
//! numbers or booleans keep their source text, so `1.10` stays `1.10` when
//! used as a string.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, NonFiniteFloatPolicy, Spanned, UserMessageFormatter};

use crate::error::LineCol;

/// A YAML node and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// Position of the node (for an alias: where it is used).
    pub(crate) pos: Option<LineCol>,
    /// Source text of a plain scalar typed as a number or boolean.
    pub(crate) raw: Option<String>,
}

/// The shape of a YAML node.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

const MAX_SHOWN: usize = 40;

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_SHOWN {
        s.escape_debug().to_string()
    } else {
        let head: String = s.chars().take(MAX_SHOWN).collect();
        format!("{}…", head.escape_debug())
    }
}

impl Node {
    /// The scalar as the user wrote it, if it is a non-null scalar.
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Bool(b) => Some(self.raw.clone().unwrap_or_else(|| b.to_string())),
            Kind::Int(i) => Some(self.raw.clone().unwrap_or_else(|| i.to_string())),
            Kind::Float(f) => Some(self.raw.clone().unwrap_or_else(|| f.to_string())),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// Short description for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing (null)".to_string(),
            Kind::Bool(_) => format!("boolean `{}`", self.scalar_text().unwrap_or_default()),
            Kind::Int(_) => format!("integer `{}`", self.scalar_text().unwrap_or_default()),
            Kind::Float(_) => format!("number `{}`", self.scalar_text().unwrap_or_default()),
            Kind::Str(s) => format!("string `{}`", shorten(s)),
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) pos: Option<LineCol>,
}

/// Parses every document of `src` (empty documents are skipped).
pub(crate) fn parse_documents(src: &str) -> Result<Vec<Node>, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        with_snippet: false,
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
    };
    match serde_saphyr::from_multiple_with_options::<Spanned<RawKind>>(src, options) {
        Ok(docs) => Ok(docs.into_iter().map(|d| to_node(d, src)).filter(|n| !matches!(n.kind, Kind::Null)).collect()),
        Err(e) => {
            let message: String =
                UserMessageFormatter.format_message(&e).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            Err(SyntaxError { message, pos: e.location().and_then(|l| line_col(l.line(), l.column())) })
        }
    }
}

fn line_col(line: u64, column: u64) -> Option<LineCol> {
    let line = u32::try_from(line).ok()?;
    let column = u32::try_from(column).ok()?;
    (line > 0 && column > 0).then_some(LineCol { line, column })
}

fn to_node(sp: Spanned<RawKind>, src: &str) -> Node {
    let pos = line_col(sp.referenced.line(), sp.referenced.column());
    let span = sp.defined.span();
    let raw_text = || {
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        let text = src.get(start..start.checked_add(len)?)?;
        // Only plain scalars: a quoted or tagged scalar keeps its typed value.
        (!text.is_empty() && !text.starts_with(['"', '\'', '!', '*', '&'])).then(|| text.to_string())
    };
    let (kind, raw) = match sp.value {
        RawKind::Null => (Kind::Null, None),
        RawKind::Bool(b) => (Kind::Bool(b), raw_text()),
        RawKind::Int(i) => (Kind::Int(i), raw_text()),
        RawKind::Float(f) => (Kind::Float(f), raw_text()),
        RawKind::Str(s) => (Kind::Str(s), None),
        RawKind::Seq(items) => (Kind::Seq(items.into_iter().map(|i| to_node(i, src)).collect()), None),
        RawKind::Map(entries) => {
            (Kind::Map(entries.into_iter().map(|(k, v)| (to_node(k, src), to_node(v, src))).collect()), None)
        }
    };
    Node { kind, pos, raw }
}

/// What serde hands us: any YAML value, children wrapped in `Spanned`.
enum RawKind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawKind>>),
    Map(Vec<(Spanned<RawKind>, Spanned<RawKind>)>),
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Int(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::Int(i128::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKind, E> {
        Ok(RawKind::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
        Ok(match i128::try_from(v) {
            Ok(i) => RawKind::Int(i),
            Err(_) => RawKind::Str(v.to_string()),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawKind, E> {
        Ok(RawKind::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(RawKind::Map(entries))
    }
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(n: &Node) -> (u32, u32) {
        n.pos.map(|p| (p.line, p.column)).unwrap_or((0, 0))
    }

    #[test]
    fn positions_and_raw_text() -> Result<(), SyntaxError> {
        let docs = parse_documents("a: 1.10\nb: [x, 7]\n---\nc: yes\nd: 0.50\n")?;
        assert_eq!(docs.len(), 2);
        let Kind::Map(m) = &docs[0].kind else { panic!("not a map") };
        assert_eq!(pos(&m[0].0), (1, 1));
        assert_eq!(pos(&m[0].1), (1, 4));
        assert_eq!(m[0].1.scalar_text().as_deref(), Some("1.10"));
        let Kind::Seq(items) = &m[1].1.kind else { panic!("not a seq") };
        assert_eq!(pos(&items[1]), (2, 8));
        let Kind::Map(m2) = &docs[1].kind else { panic!("not a map") };
        // YAML 1.2 booleans only: `yes` is a string.
        assert!(matches!(&m2[0].1.kind, Kind::Str(s) if s == "yes"));
        assert_eq!(m2[1].1.scalar_text().as_deref(), Some("0.50"));
        assert_eq!(pos(&m2[1].1), (5, 4));
        Ok(())
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_documents("a: [1, 2\n").err();
        let err = err.unwrap_or(SyntaxError { message: String::new(), pos: None });
        assert_eq!(err.pos, Some(LineCol { line: 1, column: 4 }));
        assert!(err.message.contains("unclosed bracket"), "{}", err.message);
    }

    #[test]
    fn empty_input_has_no_documents() -> Result<(), SyntaxError> {
        assert!(parse_documents("")?.is_empty());
        assert!(parse_documents("# only a comment\n")?.is_empty());
        assert!(parse_documents("---\n---\n")?.is_empty());
        Ok(())
    }
}
