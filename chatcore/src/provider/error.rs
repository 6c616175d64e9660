//! The typed error of the provider layer, and the helpers that build it
//! without leaking a secret.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use crate::error::Cause;

/// Longest vendor body kept in an error, in bytes.
pub const MAX_ERROR_BODY: usize = 512;

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// Opening the TCP/TLS connection.
    Connect,
    /// Waiting for the response head after the request was sent.
    FirstByte,
    /// Waiting for the next chunk of a response body or stream.
    Idle,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::FirstByte => "first byte",
            TimeoutKind::Idle => "idle",
        })
    }
}

/// Why a provider call failed.
///
/// Every message that comes from a vendor is redacted (see [`redact`]) and
/// truncated before it is stored here: an API key never appears in an
/// error's `Display` or `Debug`. A transport, decoding or configuration
/// failure also keeps the original error as its `source()` (a [`Cause`]):
/// a reqwest error is kept without its URL, which can carry a key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The vendor rejected the credentials (HTTP 401/403, a missing key,
    /// or an exhausted quota that only the account owner can fix).
    #[error("{provider}: authentication failed: {message}")]
    Authentication {
        /// Provider kind.
        provider: String,
        /// Redacted vendor message.
        message: String,
    },
    /// The vendor asked us to slow down (HTTP 429).
    #[error("{provider}: rate limited{}: {message}", fmt_retry_after(.retry_after))]
    RateLimited {
        /// Provider kind.
        provider: String,
        /// How long the vendor asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// Redacted vendor message.
        message: String,
    },
    /// The request was malformed or named an unknown model (HTTP 400/404/422).
    #[error("{provider}: invalid request: {message}")]
    InvalidRequest {
        /// Provider kind.
        provider: String,
        /// Redacted vendor message.
        message: String,
    },
    /// The conversation does not fit the model's context window.
    #[error("{provider}: context too long: {message}")]
    ContextTooLong {
        /// Provider kind.
        provider: String,
        /// Redacted vendor message.
        message: String,
    },
    /// The vendor is down or overloaded (HTTP 5xx, Anthropic 529, a refused
    /// or reset connection).
    #[error("{provider}: upstream unavailable{}: {message}", fmt_status(.status))]
    Unavailable {
        /// Provider kind.
        provider: String,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// Redacted vendor message or transport error.
        message: String,
        /// The transport error (reqwest's, kept without its URL), when
        /// there was no response.
        #[source]
        source: Option<Cause>,
    },
    /// A timeout fired.
    #[error("{provider}: {kind} timeout after {after:?}")]
    Timeout {
        /// Provider kind.
        provider: String,
        /// Which timeout.
        kind: TimeoutKind,
        /// Its configured duration.
        after: Duration,
    },
    /// A stream failed after text had started to arrive (or ended without
    /// its final event). Never retried once text reached the caller.
    #[error("{provider}: stream interrupted after {} bytes of text: {}", .partial.len(), fmt_cause(.cause))]
    StreamInterrupted {
        /// Provider kind.
        provider: String,
        /// The text that arrived before the failure.
        partial: String,
        /// What interrupted it; `None` when the stream ended without its
        /// final event.
        cause: Option<Box<ProviderError>>,
    },
    /// The provider cannot do this (e.g. embeddings on Anthropic).
    #[error("{provider}: unsupported: {operation}")]
    Unsupported {
        /// Provider kind.
        provider: String,
        /// What was asked.
        operation: String,
    },
    /// The provider could not be built from its configuration.
    #[error("provider configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The error that said so (a URL parser's, the HTTP client
        /// builder's), when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The vendor answered something we could not parse.
    #[error("{provider}: invalid response: {message}")]
    InvalidResponse {
        /// Provider kind.
        provider: String,
        /// What was wrong, with a redacted excerpt.
        message: String,
        /// The decoder's error (JSON, UTF-8, SSE), when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The egress policy refused the provider's address (see
    /// [`super::EgressPolicy`]). Never retried; the message names no address.
    #[error("{provider}: {}", super::egress::EgressError::Refused)]
    EgressRefused {
        /// Provider kind.
        provider: String,
    },
    /// Any other failure status, kept for debugging.
    #[error("{provider}: unexpected status {status}: {body}")]
    Unknown {
        /// Provider kind.
        provider: String,
        /// HTTP status.
        status: u16,
        /// Redacted body, truncated to [`MAX_ERROR_BODY`] bytes.
        body: String,
    },
}

fn fmt_retry_after(d: &Option<Duration>) -> String {
    d.map(|d| format!(" (retry after {d:?})"))
        .unwrap_or_default()
}

fn fmt_status(s: &Option<u16>) -> String {
    s.map(|s| format!(" (status {s})")).unwrap_or_default()
}

fn fmt_cause(c: &Option<Box<ProviderError>>) -> String {
    match c {
        Some(e) => e.to_string(),
        None => "the stream ended before its final event".to_owned(),
    }
}

impl ProviderError {
    /// Whether a retry (or the next provider of a fallback chain) may
    /// succeed. Only meaningful before any text reached the caller.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Unavailable { .. }
            | ProviderError::Timeout { .. } => true,
            ProviderError::StreamInterrupted { partial, .. } => partial.is_empty(),
            _ => false,
        }
    }

    /// The wait the vendor asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider kind that failed, if the error is tied to one.
    pub fn provider(&self) -> Option<&str> {
        match self {
            ProviderError::Authentication { provider, .. }
            | ProviderError::RateLimited { provider, .. }
            | ProviderError::InvalidRequest { provider, .. }
            | ProviderError::ContextTooLong { provider, .. }
            | ProviderError::Unavailable { provider, .. }
            | ProviderError::Timeout { provider, .. }
            | ProviderError::StreamInterrupted { provider, .. }
            | ProviderError::Unsupported { provider, .. }
            | ProviderError::InvalidResponse { provider, .. }
            | ProviderError::EgressRefused { provider }
            | ProviderError::Unknown { provider, .. } => Some(provider),
            ProviderError::Config { .. } => None,
        }
    }

    /// The upstream HTTP status, when the vendor answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Unavailable { status, .. } => *status,
            ProviderError::Unknown { status, .. } => Some(*status),
            ProviderError::StreamInterrupted { cause: Some(c), .. } => c.status(),
            _ => None,
        }
    }

    /// What a caller (a public visitor as much as a key holder) may be
    /// told: the provider kind, what kind of failure, and the upstream
    /// status when there was one. Never a vendor's body or message, a URL
    /// or an address: those go to the log (see `Display`).
    pub fn public_message(&self) -> String {
        let status = self
            .status()
            .map(|s| format!(" (upstream status {s})"))
            .unwrap_or_default();
        let what = match self {
            ProviderError::Authentication { .. } => "the provider refused the credentials",
            ProviderError::RateLimited { .. } => "the provider is rate limiting requests",
            ProviderError::InvalidRequest { .. } => "the provider rejected the request",
            ProviderError::ContextTooLong { .. } => {
                "the conversation is too long for the model's context window"
            }
            ProviderError::Unavailable { .. } => "the provider is unavailable",
            ProviderError::Timeout { .. } => "the provider did not answer in time",
            ProviderError::StreamInterrupted { cause, .. } => match cause {
                Some(c) if c.is_timeout() => "the provider's stream stalled",
                _ => "the provider's stream was interrupted",
            },
            ProviderError::Unsupported { .. } => "the provider does not support this operation",
            ProviderError::Config { .. } => {
                return "the provider configuration is not usable".into();
            }
            ProviderError::InvalidResponse { .. } => "the provider's answer could not be read",
            ProviderError::EgressRefused { provider } => {
                return format!("{provider}: {}", super::egress::EgressError::Refused);
            }
            ProviderError::Unknown { .. } => "the provider failed",
        };
        match self.provider() {
            Some(p) => format!("{p}: {what}{status}"),
            None => format!("{what}{status}"),
        }
    }

    /// Whether this is a timeout (directly or as the cause of an
    /// interrupted stream); the server answers those with 504.
    pub fn is_timeout(&self) -> bool {
        match self {
            ProviderError::Timeout { .. } => true,
            ProviderError::StreamInterrupted { cause: Some(c), .. } => c.is_timeout(),
            _ => false,
        }
    }

    /// Wraps a failure in the middle of a stream: with no text yet, the
    /// failure itself; with text, a [`ProviderError::StreamInterrupted`]
    /// keeping it.
    pub fn interrupting(self, provider: &str, partial: &str) -> ProviderError {
        if partial.is_empty() || matches!(self, ProviderError::StreamInterrupted { .. }) {
            self
        } else {
            ProviderError::StreamInterrupted {
                provider: provider.to_owned(),
                partial: partial.to_owned(),
                cause: Some(Box::new(self)),
            }
        }
    }
}

/// Removes secrets from text that came from a vendor or a transport error,
/// and truncates it to [`MAX_ERROR_BODY`] bytes.
///
/// Replaced: the exact `secret` when given, and any word that looks like an
/// API key (`sk-...`, `sk-ant-...`, `AIza...`, or a `key=`/`api_key=` query
/// parameter value), since vendors echo partial keys in their messages.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    let mut out = match secret {
        Some(s) if s.len() >= 4 => text.replace(s, "[REDACTED]"),
        _ => text.to_owned(),
    };
    out = redact_key_like_words(&out);
    truncate(&mut out, MAX_ERROR_BODY);
    out
}

/// `e` as the [`Cause`] of a provider error, unless the text of `e` or of
/// one of its sources holds something [`redact`] would remove (the
/// `secret`, a key-like word): a cause is printed as it is, so one that
/// could show a key is dropped and only the redacted message stays.
pub(crate) fn clean_cause(
    e: impl std::error::Error + Send + Sync + 'static,
    secret: Option<&str>,
) -> Option<Cause> {
    let cause = Cause::new(e);
    clean(&cause, secret).then_some(cause)
}

/// Whether no text in `cause`'s chain holds something [`redact`] removes.
pub(crate) fn clean(cause: &Cause, secret: Option<&str>) -> bool {
    crate::error::chain(cause.as_error()).all(|e| {
        let text = e.to_string();
        let has_secret = matches!(secret, Some(s) if s.len() >= 4 && text.contains(s));
        !has_secret && redact_key_like_words(&text) == text
    })
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*' | '.')
}

fn redact_key_like_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev_word_end_with_key_param = false;
    while !rest.is_empty() {
        let start = rest.find(is_word_char).unwrap_or(rest.len());
        let (sep, tail) = rest.split_at(start);
        out.push_str(sep);
        let param = prev_word_end_with_key_param && sep.ends_with('=');
        let end = tail.find(|c| !is_word_char(c)).unwrap_or(tail.len());
        let (word, after) = tail.split_at(end);
        let looks_like_key = word.len() >= 12
            && (word.starts_with("sk-") || word.starts_with("AIza") || word.starts_with("sk_"));
        if !word.is_empty() && (looks_like_key || param) {
            out.push_str("[REDACTED]");
        } else {
            out.push_str(word);
        }
        let lower = word.to_ascii_lowercase();
        prev_word_end_with_key_param =
            lower == "key" || lower == "api_key" || lower == "apikey" || lower == "api-key";
        rest = after;
    }
    out
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

/// Parses a `retry-after` header (seconds, possibly fractional, or an HTTP
/// date) or `retry-after-ms`, as OpenAI sends.
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    parse_retry_after_value(value, SystemTime::now())
}

/// Parses one `retry-after` value relative to `now`.
pub fn parse_retry_after_value(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a protobuf `Duration` in its JSON form (`"30s"`, `"1.5s"`), as in
/// Google's `RetryInfo.retryDelay`.
pub fn parse_proto_duration(value: &str) -> Option<Duration> {
    let secs: f64 = value.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn redacts_exact_secret_and_key_like_words() {
        let s = redact(
            "Incorrect API key provided: sk-proj-abcdef123456. Your key myfakekey99 and AIzaSyAbCdEf0123456789 url?key=zzz",
            Some("myfakekey99"),
        );
        assert!(!s.contains("abcdef123456"), "{s}");
        assert!(!s.contains("myfakekey99"), "{s}");
        assert!(!s.contains("AIzaSy"), "{s}");
        assert!(!s.contains("zzz"), "{s}");
        assert!(s.contains("Incorrect API key provided"));
    }

    #[test]
    fn truncates_on_char_boundary() {
        let long = "é".repeat(1000);
        let s = redact(&long, None);
        assert!(s.len() <= MAX_ERROR_BODY + '…'.len_utf8());
    }

    #[test]
    fn retry_after_seconds_date_and_ms() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(1500)));

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after_value("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after_value("soon", now), None);
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_proto_duration("30"), None);
    }

    #[test]
    fn retryability() {
        let p = "x".to_owned();
        assert!(
            ProviderError::Unavailable {
                source: None,
                provider: p.clone(),
                status: Some(503),
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::StreamInterrupted {
                provider: p.clone(),
                partial: "a".into(),
                cause: None
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::Authentication {
                provider: p,
                message: String::new()
            }
            .is_retryable()
        );
    }
}
