//! Configuration errors: what is wrong, at which YAML path, on which line.

use std::fmt;

/// One step of a YAML path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Formats a path as `endpoints[0].listen[1]` (`.` for the document itself).
pub(crate) fn display_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSegment::Key(k) if out.is_empty() => out.push_str(k),
            PathSegment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            PathSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() { ".".into() } else { out }
}

/// A problem an application found in its settings, at a YAML path relative to the
/// section it was given (`app:` in [`crate::OxyApp::app_context`], the endpoint's `app:`
/// in [`crate::OxyApp::endpoint_context`]): returned as the error, it is reported with
/// the file's line and column like the framework's own problems.
///
/// ```ignore
/// Rule::compile(rule).map_err(|e| SettingError::at(format!("rules[{i}]"), e))?;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    /// Where, relative to the section (`rules[2].path_patterns[0]`; empty: the section).
    pub path: Vec<PathSegment>,
    /// What is wrong.
    pub message: String,
}

impl SettingError {
    /// The problem `message` at `path` (`rules[2].path_patterns[0]`, `users[0].name`).
    pub fn at(path: impl AsRef<str>, message: impl fmt::Display) -> Self {
        Self {
            path: parse_path(path.as_ref()),
            message: message.to_string(),
        }
    }
}

/// The segments of a path written as `rules[2].path_patterns[0]`.
fn parse_path(text: &str) -> Vec<PathSegment> {
    let mut path = Vec::new();
    for part in text.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            path.push(PathSegment::Key(key.to_string()));
        }
        for index in pieces {
            match index.trim_end_matches(']').parse() {
                Ok(i) => path.push(PathSegment::Index(i)),
                Err(_) => path.push(PathSegment::Key(format!("[{index}"))),
            }
        }
    }
    path
}

/// One problem in a settings file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The YAML path of the offending setting, e.g. `endpoints[1].listen[0]`.
    pub path: String,
    /// 1-based line and column in the file, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a settings file, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file (or `<string>`) the settings came from.
    pub source_name: String,
    /// The problems, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match e.location {
                Some((line, col)) => write!(f, "{}:{line}:{col}: ", self.source_name)?,
                None => write!(f, "{}: ", self.source_name)?,
            }
            if e.path != "." {
                write!(f, "{}: ", e.path)?;
            }
            write!(f, "{}", e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_back_to_what_they_display() {
        for text in ["rules[2].path_patterns[0]", "users", "a.b[0][1].c"] {
            assert_eq!(display_path(&parse_path(text)), text);
        }
        assert_eq!(parse_path(""), Vec::<PathSegment>::new());
    }
}
