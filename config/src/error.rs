//! Config errors: each one says where (a path such as `models[2].weight`) and what is wrong.

use std::fmt;

/// One problem in a config document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the problem is: `listen`, `models[2].weight`, `models[0].stable.endpoints[1]`.
    /// Empty for problems with the document as a whole (YAML syntax).
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

/// Every problem found in a config document, in a stable order. Never empty when returned as
/// an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Errors(Vec<ConfigError>);

/// A scalar value that does not parse: a ratio, a size, a duration, an endpoint or an engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

// === impl ConfigError ===

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error seen from `prefix`: `weight` under `models[2]` is `models[2].weight`.
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.path = join(prefix, &self.path);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// === impl Errors ===

impl Errors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// Adds `other`'s errors with their paths put under `prefix`.
    pub(crate) fn extend_under(
        &mut self,
        prefix: &str,
        other: impl IntoIterator<Item = ConfigError>,
    ) {
        self.0.extend(other.into_iter().map(|e| e.under(prefix)));
    }
}

impl From<ConfigError> for Errors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl IntoIterator for Errors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// One error per line, no trailing newline.
impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

// === impl ParseError ===

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Joins a path prefix and a path relative to it: `models[2]` + `weight` = `models[2].weight`,
/// `stable` + `endpoints[0]` = `stable.endpoints[0]`, `models` + `[1]` = `models[1]`.
pub(crate) fn join(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_owned()
    } else if rel.is_empty() {
        prefix.to_owned()
    } else if rel.starts_with('[') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}.{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_paths() {
        let cases = [
            ("", "listen", "listen"),
            ("models[2]", "", "models[2]"),
            ("models[2]", "weight", "models[2].weight"),
            ("stable", "endpoints[0]", "stable.endpoints[0]"),
            ("models", "[1]", "models[1]"),
        ];
        for (prefix, rel, want) in cases {
            assert_eq!(join(prefix, rel), want, "{prefix:?} + {rel:?}");
        }
    }

    #[test]
    fn display_one_per_line() {
        let mut errors = Errors::default();
        errors.push(ConfigError::new("models[2].weight", "120% is above 100%"));
        errors.push(ConfigError::new("", "invalid YAML"));
        assert_eq!(
            errors.to_string(),
            "models[2].weight: 120% is above 100%\ninvalid YAML"
        );
        assert_eq!(errors.len(), 2);
    }
}
