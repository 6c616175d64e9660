//! Guardrails: a bot's scopes, parsed once and applied to every turn before
//! any provider call.
//!
//! Scope kinds and their `config`:
//!
//! | kind | config | effect |
//! | --- | --- | --- |
//! | `allowed_origins` | `["https://app.example", "*"]` | public chat only from these `Origin`s (and CORS answers for them) |
//! | `api_keys` | `["<api key id>", ...]` | only these keys may chat with the bot |
//! | `blocked_terms` | `["term", ...]` | refuse messages containing a term (case-insensitive) |
//! | `blocked_patterns` | `["regex", ...]` | refuse messages matching a pattern |
//! | `max_input_length` | `2000` | refuse longer messages (characters) |
//! | `visitor_rate_limit` | `{"rpm": 10}` | public chat: requests per minute per visitor (IP) |

use regex::Regex;
use serde_json::Value;

use crate::domain::{ApiKeyId, Scope};

/// The scope kinds chatcore knows.
pub const SCOPE_KINDS: &[&str] = &[
    "allowed_origins",
    "api_keys",
    "blocked_terms",
    "blocked_patterns",
    "max_input_length",
    "visitor_rate_limit",
];

/// A bot's parsed guardrails.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    /// Allowed origins for public chat (None: any).
    pub allowed_origins: Option<Vec<String>>,
    /// API keys allowed to chat (None: any key of the tenant).
    pub api_keys: Option<Vec<ApiKeyId>>,
    /// Blocked terms, lowercased.
    pub blocked_terms: Vec<String>,
    /// Blocked patterns.
    pub blocked_patterns: Vec<Regex>,
    /// Longest message, in characters.
    pub max_input_length: Option<usize>,
    /// Public requests per minute per visitor.
    pub visitor_rpm: Option<u32>,
}

fn strings(config: &Value, kind: &str) -> Result<Vec<String>, String> {
    let arr = config
        .as_array()
        .ok_or_else(|| format!("{kind}: config must be an array of strings"))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{kind}: config must be an array of strings"))
        })
        .collect()
}

/// Checks a scope's configuration; the error names what is wrong.
pub fn validate_scope(kind: &str, config: &Value) -> Result<(), String> {
    let mut g = Guardrails::default();
    g.add(kind, config)
}

impl Guardrails {
    /// Parses a bot's scopes. A scope that does not parse (stored before
    /// validation existed, or by another writer) is an error: failing
    /// closed beats chatting without the guardrail.
    pub fn from_scopes(scopes: &[Scope]) -> Result<Self, String> {
        let mut g = Self::default();
        for s in scopes {
            g.add(&s.kind, &s.config)?;
        }
        Ok(g)
    }

    fn add(&mut self, kind: &str, config: &Value) -> Result<(), String> {
        match kind {
            "allowed_origins" => {
                let o = strings(config, kind)?;
                self.allowed_origins
                    .get_or_insert_with(Vec::new)
                    .extend(o.into_iter().map(|s| s.trim_end_matches('/').to_string()));
            }
            "api_keys" => {
                let ids = strings(config, kind)?
                    .iter()
                    .map(|s| {
                        s.parse::<ApiKeyId>()
                            .map_err(|_| format!("api_keys: {s:?} is not an API key id"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.api_keys.get_or_insert_with(Vec::new).extend(ids);
            }
            "blocked_terms" => {
                let terms = strings(config, kind)?;
                if terms.iter().any(|t| t.trim().is_empty()) {
                    return Err("blocked_terms: terms must not be empty".into());
                }
                self.blocked_terms
                    .extend(terms.into_iter().map(|t| t.to_lowercase()));
            }
            "blocked_patterns" => {
                for p in strings(config, kind)? {
                    let re = regex::RegexBuilder::new(&p)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| {
                            format!("blocked_patterns: {p:?} is not a valid pattern: {e}")
                        })?;
                    self.blocked_patterns.push(re);
                }
            }
            "max_input_length" => {
                let n = config
                    .as_u64()
                    .filter(|n| *n > 0 && *n <= 1_000_000)
                    .ok_or("max_input_length: config must be a number from 1 to 1000000")?;
                self.max_input_length = Some(
                    self.max_input_length
                        .map_or(n as usize, |m| m.min(n as usize)),
                );
            }
            "visitor_rate_limit" => {
                let rpm = config
                    .get("rpm")
                    .and_then(Value::as_u64)
                    .filter(|n| *n > 0 && *n <= 1_000_000)
                    .ok_or("visitor_rate_limit: config must be {\"rpm\": <1 to 1000000>}")?;
                self.visitor_rpm = Some(rpm as u32);
            }
            other => {
                return Err(format!(
                    "unknown scope kind {other:?}; known kinds: {}",
                    SCOPE_KINDS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Why `message` is refused, if it is.
    pub fn check_message(&self, message: &str) -> Result<(), GuardViolation> {
        if let Some(max) = self.max_input_length
            && message.chars().count() > max
        {
            return Err(GuardViolation::TooLong { max });
        }
        if !self.blocked_terms.is_empty() {
            let lower = message.to_lowercase();
            if self
                .blocked_terms
                .iter()
                .any(|t| lower.contains(t.as_str()))
            {
                return Err(GuardViolation::BlockedContent);
            }
        }
        if self.blocked_patterns.iter().any(|re| re.is_match(message)) {
            return Err(GuardViolation::BlockedContent);
        }
        Ok(())
    }

    /// Whether a public request from `origin` may chat.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match &self.allowed_origins {
            None => true,
            Some(list) => match origin {
                None => false,
                Some(o) => {
                    let o = o.trim_end_matches('/');
                    list.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(o))
                }
            },
        }
    }

    /// Whether API key `id` may chat with the bot.
    pub fn key_allowed(&self, id: ApiKeyId) -> bool {
        self.api_keys.as_ref().is_none_or(|ids| ids.contains(&id))
    }
}

/// A guardrail refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardViolation {
    /// Over the bot's input length limit.
    #[error("message is longer than {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A blocked term or pattern matched (which one is not said).
    #[error("message contains blocked content")]
    BlockedContent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn g(pairs: &[(&str, Value)]) -> Guardrails {
        let mut g = Guardrails::default();
        for (k, v) in pairs {
            g.add(k, v).unwrap();
        }
        g
    }

    #[test]
    fn terms_patterns_and_length() {
        let g = g(&[
            ("blocked_terms", json!(["Password"])),
            ("blocked_patterns", json!([r"\b\d{4}-\d{4}-\d{4}-\d{4}\b"])),
            ("max_input_length", json!(20)),
        ]);
        assert!(g.check_message("hello").is_ok());
        assert_eq!(
            g.check_message("my PASSWORD is"),
            Err(GuardViolation::BlockedContent)
        );
        assert_eq!(
            g.check_message("1234-5678-9012-3456"),
            Err(GuardViolation::BlockedContent)
        );
        assert_eq!(
            g.check_message(&"é".repeat(21)),
            Err(GuardViolation::TooLong { max: 20 })
        );
        assert!(
            g.check_message(&"é".repeat(20)).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn origins_and_keys() {
        let open = Guardrails::default();
        assert!(open.origin_allowed(None));
        let g = g(&[("allowed_origins", json!(["https://app.example/"]))]);
        assert!(g.origin_allowed(Some("https://app.example")));
        assert!(!g.origin_allowed(Some("https://evil.example")));
        assert!(!g.origin_allowed(None));
        let k = ApiKeyId::new();
        let only = self::g(&[("api_keys", json!([k.to_string()]))]);
        assert!(only.key_allowed(k));
        assert!(!only.key_allowed(ApiKeyId::new()));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(
            validate_scope("blocked_patterns", &json!(["("]))
                .unwrap_err()
                .contains("not a valid pattern")
        );
        assert!(validate_scope("max_input_length", &json!(0)).is_err());
        assert!(
            validate_scope("api_keys", &json!(["nope"]))
                .unwrap_err()
                .contains("not an API key id")
        );
        assert!(
            validate_scope("teleport", &json!({}))
                .unwrap_err()
                .contains("unknown scope kind")
        );
        assert!(validate_scope("visitor_rate_limit", &json!({"rpm": 5})).is_ok());
        assert!(validate_scope("blocked_terms", &json!("x")).is_err());
    }

    #[test]
    fn numeric_scopes_accept_one_to_a_million() {
        let length = |n: u64| validate_scope("max_input_length", &json!(n));
        assert!(length(1).is_ok());
        assert!(length(1_000_000).is_ok());
        assert!(length(0).is_err());
        assert!(length(1_000_001).is_err());
        let rpm = |n: u64| validate_scope("visitor_rate_limit", &json!({ "rpm": n }));
        assert!(rpm(1).is_ok());
        assert!(rpm(1_000_000).is_ok());
        assert!(rpm(0).is_err());
        assert!(rpm(1_000_001).is_err());
        assert_eq!(
            g(&[("visitor_rate_limit", json!({"rpm": 12}))]).visitor_rpm,
            Some(12)
        );
        // Two length limits: the lower one holds.
        let two = g(&[
            ("max_input_length", json!(50)),
            ("max_input_length", json!(10)),
        ]);
        assert_eq!(two.max_input_length, Some(10));
        assert!(two.check_message(&"a".repeat(10)).is_ok());
        assert_eq!(
            two.check_message(&"a".repeat(11)),
            Err(GuardViolation::TooLong { max: 10 })
        );
    }

    #[test]
    fn a_wildcard_origin_admits_any_and_origins_compare_without_case() {
        let any = g(&[("allowed_origins", json!(["*"]))]);
        assert!(any.origin_allowed(Some("https://anything.example")));
        assert!(!any.origin_allowed(None), "a listed origin needs an Origin");
        let one = g(&[("allowed_origins", json!(["https://App.Example"]))]);
        assert!(one.origin_allowed(Some("https://app.example/")));
        assert!(!one.origin_allowed(Some("https://app.example.evil")));
    }

    #[test]
    fn a_blocked_term_or_pattern_alone_refuses() {
        let terms = g(&[("blocked_terms", json!(["secret"]))]);
        assert!(terms.check_message("nothing to see").is_ok());
        assert_eq!(
            terms.check_message("the SECRET plan"),
            Err(GuardViolation::BlockedContent)
        );
        let patterns = g(&[("blocked_patterns", json!([r"^\d+$"]))]);
        assert!(patterns.check_message("call 42").is_ok());
        assert_eq!(
            patterns.check_message("42"),
            Err(GuardViolation::BlockedContent)
        );
        assert!(validate_scope("blocked_terms", &json!(["ok", "  "])).is_err());
        assert!(validate_scope("allowed_origins", &json!([1])).is_err());
    }
}
