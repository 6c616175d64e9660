//! Text at the edge: what every text value must be before it may reach the
//! database.
//!
//! PostgreSQL cannot store U+0000 (NUL) in `text` nor in `jsonb`: it fails
//! the statement. SQLite stores it, but a string that one backend refuses
//! must not be accepted by the other. So a NUL anywhere (a message, a slug,
//! a name, a JSON body's nested key or value, a query parameter) is a
//! validation error naming the field, on both backends, checked once where
//! the value enters: [`check_json_body`] for JSON bodies (the server's body
//! parser calls it before deserializing), [`check_text`] for query
//! parameters, raw uploads and the library's own inputs (a Rust
//! application calling `ChatService` directly), [`check_json`] for JSON
//! values built in code. Rust strings are always valid UTF-8, so NUL is the
//! only text PostgreSQL's UTF-8 databases cannot hold.

use serde_json::Value;

/// A text value the database cannot store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: must not contain NUL characters (U+0000)")]
pub struct TextError {
    /// The field, as a path (`metadata.tags[2]`).
    pub field: String,
}

impl From<TextError> for crate::engine::ChatError {
    fn from(e: TextError) -> Self {
        crate::engine::ChatError::InvalidRequest(e.to_string())
    }
}

/// Checks one text value.
pub fn check_text(field: &str, value: &str) -> Result<(), TextError> {
    if value.contains('\0') {
        return Err(TextError {
            field: field.to_string(),
        });
    }
    Ok(())
}

/// Checks an optional text value.
pub fn check_opt(field: &str, value: Option<&str>) -> Result<(), TextError> {
    value.map_or(Ok(()), |v| check_text(field, v))
}

/// Checks every key and string of a JSON value; the error names the path
/// under `field`.
pub fn check_json(field: &str, value: &Value) -> Result<(), TextError> {
    match first_nul(value) {
        None => Ok(()),
        Some(path) => Err(TextError {
            field: join(field, &path),
        }),
    }
}

/// Checks a JSON request body before it is deserialized: every key and
/// string anywhere in it. Cheap for the usual body: JSON can only carry a
/// NUL as the escape `\u0000` (raw control characters are invalid in JSON
/// strings), so a body without that byte sequence is not parsed here at
/// all. A body that does not parse is left to the deserializer's error.
pub fn check_json_body(body: &[u8]) -> Result<(), TextError> {
    if !contains(body, br"\u0000") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    match first_nul(&value) {
        None => Ok(()),
        Some(path) if path.is_empty() => Err(TextError {
            field: "body".into(),
        }),
        Some(path) => Err(TextError { field: path }),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn join(field: &str, path: &str) -> String {
    match (field.is_empty(), path.is_empty()) {
        (_, true) => field.to_string(),
        (true, false) => path.to_string(),
        (false, false) if path.starts_with('[') => format!("{field}{path}"),
        (false, false) => format!("{field}.{path}"),
    }
}

/// The path of the first key or string holding a NUL ("" for the root).
fn first_nul(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_nul(item).map(|p| join(&format!("[{i}]"), &p))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            if k.contains('\0') {
                // Name the key without its NUL, escaped, so the message
                // itself stays storable and printable.
                return Some(k.replace('\0', "\\u0000"));
            }
            first_nul(item).map(|p| join(k, &p))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_path() {
        assert_eq!(check_text("message", "a\0b").unwrap_err().field, "message");
        assert!(check_text("message", "fine").is_ok());
        let v = json!({"a": {"b": ["x", "y\u{0}"]}});
        assert_eq!(
            check_json("metadata", &v).unwrap_err().field,
            "metadata.a.b[1]"
        );
        let body = br#"{"bot_id": "x", "message": "hi\u0000there"}"#;
        assert_eq!(check_json_body(body).unwrap_err().field, "message");
        let body = br#"{"config": {"terms": ["ok", "\u0000"]}}"#;
        assert_eq!(check_json_body(body).unwrap_err().field, "config.terms[1]");
        let body = br#"{"k\u0000": 1}"#;
        assert_eq!(check_json_body(body).unwrap_err().field, "k\\u0000");
        assert_eq!(check_json_body(br#""\u0000""#).unwrap_err().field, "body");
    }

    #[test]
    fn an_escaped_backslash_is_not_a_nul() {
        assert!(check_json_body(br#"{"message": "\\u0000"}"#).is_ok());
        assert!(check_json_body(br#"{"message": "plain"}"#).is_ok());
        assert!(check_json_body(b"not json \\u0000").is_ok());
    }
}
