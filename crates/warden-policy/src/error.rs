//! Load errors: every problem found in a set of policy files, each with the place it was found.

use std::fmt;

/// Loading policies failed. Always the operator's fault (the policy files or the patterns naming them), and retrying
/// without changing them gives the same answer. Holds every problem found in every file, sorted by place, so one run
/// of `warden check` shows them all; `Display` prints one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", DisplayLines(&self.problems))]
pub struct PolicyError {
    problems: Vec<Problem>,
}

impl PolicyError {
    /// The problems, sorted by file, line and column.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// `problems` must not be empty.
    pub(crate) fn new(mut problems: Vec<Problem>) -> PolicyError {
        problems.sort();
        problems.dedup();
        PolicyError { problems }
    }
}

/// One problem: where (a file label, or a pattern for [`ProblemKind::NoMatch`]) and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The file as it was named (the path for [`crate::Policies::load`], the label for
    /// [`crate::Policies::from_sources`]), or the pattern that matched nothing.
    pub file: String,
    /// 1-based line and column (in characters) inside `file`, when the problem has a place.
    pub position: Option<Position>,
    pub kind: ProblemKind,
    pub message: String,
}

/// A 1-based place in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// What kind of problem, for callers that decide on it (never on the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// A pattern (glob, file or directory) matched no policy file, or is not a valid pattern.
    NoMatch,
    /// A file could not be read.
    Unreadable,
    /// Cedar could not parse the file.
    Syntax,
    /// A policy does not validate against warden's schema (strict mode).
    Validation,
    /// Two policies have the same id.
    DuplicateId,
    /// Something Cedar accepts but warden does not: templates, empty `@id` or `@approval` annotations.
    Unsupported,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

struct DisplayLines<'a>(&'a [Problem]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
