//! Metadata filters on documents.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Equality conditions on top-level keys of a document's metadata object;
/// a document matches when every condition holds.
///
/// Deserialises from (and serialises to) a JSON object, such as
/// `{"lang": "en", "year": 2024}`; any other JSON value is rejected. Numbers
/// compare by value (`1` equals `1.0`); arrays and objects compare
/// element by element. The empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetadataFilter {
    equals: Map<String, Value>,
}

impl MetadataFilter {
    /// The empty filter, which matches every document.
    pub fn new() -> Self {
        Self::default()
    }

    /// This filter with one more condition: `key` must equal `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.equals.insert(key.into(), value.into());
        self
    }

    /// Whether the filter has no condition.
    pub fn is_empty(&self) -> bool {
        self.equals.is_empty()
    }

    /// Whether `metadata` satisfies every condition. A metadata value that is
    /// not a JSON object matches only the empty filter.
    pub fn matches(&self, metadata: &Value) -> bool {
        if self.equals.is_empty() {
            return true;
        }
        let Some(object) = metadata.as_object() else {
            return false;
        };
        self.equals
            .iter()
            .all(|(key, want)| object.get(key).is_some_and(|have| json_eq(have, want)))
    }
}

/// JSON equality, with numbers compared by value.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(v: Value) -> MetadataFilter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn all_conditions_must_hold() {
        let f = filter(json!({"lang": "en", "year": 2024}));
        assert!(f.matches(&json!({"lang": "en", "year": 2024, "extra": true})));
        assert!(!f.matches(&json!({"lang": "fr", "year": 2024})));
        assert!(!f.matches(&json!({"lang": "en"})));
        assert!(!f.matches(&json!({"lang": "en", "year": "2024"})));
        assert!(!f.matches(&json!(null)));
        assert!(!f.matches(&json!(["lang", "en"])));
    }

    #[test]
    fn values_compare_structurally_and_numbers_by_value() {
        let f = filter(json!({"n": 1, "tags": ["a", 2], "owner": {"id": 7}, "gone": null}));
        assert!(
            f.matches(&json!({"n": 1.0, "tags": ["a", 2.0], "owner": {"id": 7}, "gone": null}))
        );
        assert!(!f.matches(&json!({"n": 1, "tags": ["a", 2], "owner": {"id": 7}})));
        assert!(!f.matches(&json!({"n": 1, "tags": ["a"], "owner": {"id": 7}, "gone": null})));
        assert!(
            !f.matches(
                &json!({"n": 1, "tags": ["a", 2], "owner": {"id": 7, "x": 1}, "gone": null})
            )
        );
        assert!(!f.matches(&json!({"n": 2, "tags": ["a", 2], "owner": {"id": 7}, "gone": null})));
        let big = filter(json!({"n": u64::MAX}));
        assert!(big.matches(&json!({"n": u64::MAX})));
        assert!(!big.matches(&json!({"n": u64::MAX - 1})));
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = filter(json!({}));
        assert!(f.is_empty());
        assert!(f.matches(&json!({"a": 1})));
        assert!(f.matches(&json!(null)));
    }

    #[test]
    fn only_objects_deserialize_and_builder_round_trips() {
        assert!(serde_json::from_value::<MetadataFilter>(json!(["a"])).is_err());
        assert!(serde_json::from_value::<MetadataFilter>(json!("a")).is_err());
        let f = MetadataFilter::new().with("lang", "en").with("v", 3);
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"lang": "en", "v": 3})
        );
        assert_eq!(filter(json!({"lang": "en", "v": 3})), f);
    }
}
