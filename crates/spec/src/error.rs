//! Spec diagnostics: [`SpecError`] (one problem, with file, 1-based
//! line:column, field path, and a message that says what would be valid)
//! and [`SpecErrors`] (every problem found, printed one per line).

use std::fmt;

use thiserror::Error;

/// A 1-based line and column in a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineCol {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub column: u32,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What kind of problem a [`SpecError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpecErrorKind {
    /// A spec file could not be read.
    Io,
    /// The file is not valid YAML.
    Syntax,
    /// A mapping has a field that does not exist there.
    UnknownField,
    /// A required field is missing.
    MissingField,
    /// A value has the wrong YAML type (e.g. a list where a string belongs).
    WrongType,
    /// A value has the right type but is not allowed.
    InvalidValue,
    /// Something is defined twice.
    Duplicate,
    /// A name refers to something that does not exist.
    UnknownReference,
}

/// One problem in a spec.
///
/// Display: `file:line:col: path: message`, leaving out the parts that are
/// unknown (a [`crate::Stack::validate`] error has no file or position).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}", self.render())]
pub struct SpecError {
    /// What kind of problem.
    pub kind: SpecErrorKind,
    /// The spec file (as named by the caller), if known.
    pub file: Option<String>,
    /// Where in `file`, if known.
    pub pos: Option<LineCol>,
    /// Field path, e.g. `services.web.health.interval` or `routes[0].service`;
    /// empty for file-level problems.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl SpecError {
    /// A problem at `path` with no file position.
    pub fn new(kind: SpecErrorKind, path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError { kind, file: None, pos: None, path: path.into(), message: message.into() }
    }

    /// `file:line:col`, `file`, or empty, depending on what is known.
    pub fn location(&self) -> String {
        match (&self.file, self.pos) {
            (Some(f), Some(p)) => format!("{f}:{p}"),
            (Some(f), None) => f.clone(),
            (None, Some(p)) => p.to_string(),
            (None, None) => String::new(),
        }
    }

    fn render(&self) -> String {
        let mut out = self.location();
        if !out.is_empty() {
            out.push_str(": ");
        }
        if !self.path.is_empty() {
            out.push_str(&self.path);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

/// Every problem found in a spec, in file and position order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// The individual errors.
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }

    /// Number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are none (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<Vec<SpecError>> for SpecErrors {
    fn from(v: Vec<SpecError>) -> Self {
        SpecErrors(v)
    }
}

impl IntoIterator for SpecErrors {
    type Item = SpecError;
    type IntoIter = std::vec::IntoIter<SpecError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
