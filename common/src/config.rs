//! Loading the strict TOML configuration files: errors name the file, the line and column, and
//! the key, so `validate` in `ExecStartPre` tells an operator exactly what to fix.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {message}{}", path.display(), position(*line_col), key_suffix(key.as_deref()))]
    Parse {
        path: PathBuf,
        /// 1-based line and column, when the parser knows where.
        line_col: Option<(usize, usize)>,
        /// The dotted key the error is about, when it can be told from the text.
        key: Option<String>,
        message: String,
    },
    #[error("{}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

fn position(line_col: Option<(usize, usize)>) -> String {
    line_col.map_or_else(String::new, |(line, col)| format!(":{line}:{col}"))
}

fn key_suffix(key: Option<&str>) -> String {
    key.map_or_else(String::new, |key| format!(" (key `{key}`)"))
}

/// Reads and parses a TOML file into `T`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_toml(path, &text)
}

/// Parses TOML text that came from `path` (used in messages only).
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|error| {
        let span = error.span();
        ConfigError::Parse {
            path: path.to_path_buf(),
            line_col: span.as_ref().map(|span| line_col(text, span.start)),
            key: span.and_then(|span| key_at(text, span.start)),
            message: error.message().trim().to_string(),
        }
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The dotted key on the line holding `offset`, prefixed by the nearest table header above it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if let Some(header) = table_header(line) {
        return Some(header);
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .find_map(|line| table_header(line.trim()));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

fn table_header(line: &str) -> Option<String> {
    let inner = line
        .strip_prefix("[[")
        .and_then(|rest| rest.split_once("]]"))
        .map(|(name, _)| name)
        .or_else(|| {
            line.strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .map(|(name, _)| name)
        })?;
    let name = inner.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        #[serde(default)]
        drain: Drain,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Drain {
        #[serde(default)]
        timeout_secs: u64,
    }

    fn error(text: &str) -> String {
        parse_toml::<Sample>(Path::new("/etc/lifeguard/x.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = error("name = \"a\"\n\n[drain]\ntimeout_sec = 5\n");
        assert!(
            err.starts_with("/etc/lifeguard/x.toml:4:1: unknown field `timeout_sec`"),
            "{err}"
        );
        assert!(err.ends_with("(key `drain.timeout_sec`)"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = error("name = \"a\"\n[drain]\ntimeout_secs = \"ten\"\n");
        assert!(
            err.starts_with("/etc/lifeguard/x.toml:3:16: invalid type"),
            "{err}"
        );
        assert!(err.ends_with("(key `drain.timeout_secs`)"), "{err}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = error("name = \"a\n");
        assert!(err.starts_with("/etc/lifeguard/x.toml:1:"), "{err}");
    }

    #[test]
    fn missing_file_says_which() {
        let err = load_toml::<Sample>(Path::new("/nonexistent/lifeguard.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("reading configuration /nonexistent/lifeguard.toml"),
            "{err}"
        );
    }
}
