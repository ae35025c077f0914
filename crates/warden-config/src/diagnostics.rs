//! Problems found in a config file, each pinned to a file, line, column and field.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (e.g. a missing section).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `connection[0].password`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.path.display(), self.field, self.message)
        } else {
            write!(f, "{}:{}:{}: {}: {}", self.path.display(), self.line, self.column, self.field, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems (empty when the file could not be read at all).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Unreadable { .. } => &[],
            ConfigError::Invalid(diagnostics) => diagnostics,
        }
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Maps byte offsets of one text to 1-based line and column numbers.
pub(crate) struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(offset, _)| offset + 1));
        LineIndex { line_starts }
    }

    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let column = offset - self.line_starts[line - 1] + 1;
        (line, column)
    }
}
