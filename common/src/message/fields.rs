//! Field access on JSON objects with errors that name the field.

use serde_json::{Map, Value};

use super::ParseError;

pub(crate) type Object = Map<String, Value>;

pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(location: &str, key: &str) -> String {
    if location.is_empty() {
        key.to_string()
    } else {
        format!("{location}.{key}")
    }
}

/// A required, non-empty string field.
pub(crate) fn required_str<'a>(
    object: &'a Object,
    location: &str,
    key: &str,
) -> Result<&'a str, ParseError> {
    match object.get(key) {
        None | Some(Value::Null) => Err(ParseError::new(join(location, key), "missing")),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(ParseError::new(join(location, key), "empty"))
        }
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ParseError::new(
            join(location, key),
            format!("expected a string, found {}", json_type(other)),
        )),
    }
}

/// An optional string field: absent, null and empty all mean `None`; another type is an error.
pub(crate) fn optional_str(
    object: &Object,
    location: &str,
    key: &str,
) -> Result<Option<String>, ParseError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ParseError::new(
            join(location, key),
            format!("expected a string, found {}", json_type(other)),
        )),
    }
}

/// A required object field.
pub(crate) fn required_object<'a>(
    object: &'a Object,
    location: &str,
    key: &str,
) -> Result<&'a Object, ParseError> {
    match object.get(key) {
        Some(Value::Object(inner)) => Ok(inner),
        None | Some(Value::Null) => Err(ParseError::new(join(location, key), "missing")),
        Some(other) => Err(ParseError::new(
            join(location, key),
            format!("expected an object, found {}", json_type(other)),
        )),
    }
}

/// An optional object field; null counts as absent.
pub(crate) fn optional_object<'a>(
    object: &'a Object,
    location: &str,
    key: &str,
) -> Result<Option<&'a Object>, ParseError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(other) => Err(ParseError::new(
            join(location, key),
            format!("expected an object, found {}", json_type(other)),
        )),
    }
}

/// An unsigned number sent either as a JSON number or as a string of digits (instance refresh
/// events send checkpoint figures as strings).
pub(crate) fn optional_u64(
    object: &Object,
    location: &str,
    key: &str,
) -> Result<Option<u64>, ParseError> {
    let bad = |found: &str| {
        ParseError::new(
            join(location, key),
            format!("expected a non-negative whole number, found {found}"),
        )
    };
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(&n.to_string())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(&format!("{s:?}"))),
        Some(other) => Err(bad(json_type(other))),
    }
}

/// The strings of an optional array field; non-string items are an error.
pub(crate) fn optional_str_list(
    object: &Object,
    location: &str,
    key: &str,
) -> Result<Vec<String>, ParseError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(ParseError::new(
                    format!("{}[{index}]", join(location, key)),
                    format!("expected a string, found {}", json_type(other)),
                )),
            })
            .collect(),
        Some(other) => Err(ParseError::new(
            join(location, key),
            format!("expected an array, found {}", json_type(other)),
        )),
    }
}
