//! HTTP plumbing shared by the vendor clients: one connection pool per
//! provider instance, timeouts driven by `tokio::time`, transport errors
//! mapped to [`ProviderError`], and secrets kept out of every message.
//!
//! Every client enforces the provider's [`EgressPolicy`]: names are
//! resolved through [`PolicyResolver`], IP literals are checked before a
//! request is sent, redirects are never followed and no proxy is used.

use std::sync::{Arc, Once};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};

use super::egress::{EgressDenied, EgressPolicy, PolicyResolver, redact_url};
use super::error::clean_cause;
use super::{ProviderError, TimeoutKind, Timeouts, redact};

/// Largest non-streamed response body we read.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// Largest error body we read before redacting and truncating it.
const MAX_ERROR_READ: usize = 64 * 1024;

/// Maps a vendor's failure status and body to an error. Arguments: provider
/// kind, status, headers, body (raw), secret to redact.
pub(crate) type StatusMapper =
    fn(&str, StatusCode, &HeaderMap, &str, Option<&str>) -> ProviderError;

/// Installs rustls' `ring` crypto provider once per process (reqwest is
/// built without a default one, to avoid aws-lc).
pub(crate) fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means the application installed one already: keep it.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A pooled HTTP client of one provider instance.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    timeouts: Timeouts,
    provider: String,
    egress: EgressPolicy,
}

impl HttpClient {
    /// A client for calls to `base` (its port decides the `ip:port` rules
    /// of the policy) under `egress`.
    pub(crate) fn new(
        provider: &str,
        timeouts: Timeouts,
        egress: &EgressPolicy,
        base: &Url,
    ) -> Result<Self, ProviderError> {
        ensure_crypto_provider();
        let port = base.port_or_known_default().unwrap_or(0);
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("chatcore/", env!("CARGO_PKG_VERSION")))
            // A public server must not be able to bounce a call inward.
            .redirect(reqwest::redirect::Policy::none())
            // The policy is enforced on the connections we open ourselves.
            .no_proxy()
            .dns_resolver(Arc::new(PolicyResolver::new(egress.clone(), port)))
            .build()
            .map_err(|e| ProviderError::Config {
                message: format!("cannot build the HTTP client: {e}"),
                source: clean_cause(e.without_url(), None),
            })?;
        Ok(Self {
            client,
            timeouts,
            provider: provider.to_owned(),
            egress: egress.clone(),
        })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request; a failure status becomes an error via `map`.
    pub(crate) async fn send(
        &self,
        rb: RequestBuilder,
        secret: Option<&SecretString>,
        map: StatusMapper,
    ) -> Result<Response, ProviderError> {
        let secret = secret.map(|s| s.expose_secret());
        let req = rb.build().map_err(|e| self.map_transport(e, secret))?;
        // IP literals skip the resolver: check them here.
        if self.egress.check_url(req.url()).is_err() {
            tracing::warn!(provider = %self.provider, url = %redact_url(req.url().as_str()), "the egress policy refused a provider call");
            return Err(ProviderError::EgressRefused {
                provider: self.provider.clone(),
            });
        }
        let resp =
            match tokio::time::timeout(self.timeouts.first_byte, self.client.execute(req)).await {
                Err(_) => {
                    return Err(ProviderError::Timeout {
                        provider: self.provider.clone(),
                        kind: TimeoutKind::FirstByte,
                        after: self.timeouts.first_byte,
                    });
                }
                Ok(Err(e)) => return Err(self.map_transport(e, secret)),
                Ok(Ok(resp)) => resp,
            };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        // A body that fails to arrive still leaves the status to map.
        let body = self
            .read_limited(resp, MAX_ERROR_READ, secret)
            .await
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        let err = map(&self.provider, status, &headers, &body, secret);
        tracing::warn!(provider = %self.provider, status = status.as_u16(), error = %crate::error::Report(&err), "provider call failed");
        Err(err)
    }

    /// Reads a whole body, with the idle timeout between chunks.
    pub(crate) async fn read_body(
        &self,
        resp: Response,
        secret: Option<&SecretString>,
    ) -> Result<Bytes, ProviderError> {
        self.read_limited(resp, MAX_BODY, secret.map(|s| s.expose_secret()))
            .await
    }

    async fn read_limited(
        &self,
        mut resp: Response,
        limit: usize,
        secret: Option<&str>,
    ) -> Result<Bytes, ProviderError> {
        let mut buf = BytesMut::new();
        loop {
            match tokio::time::timeout(self.timeouts.idle, resp.chunk()).await {
                Err(_) => {
                    return Err(ProviderError::Timeout {
                        provider: self.provider.clone(),
                        kind: TimeoutKind::Idle,
                        after: self.timeouts.idle,
                    });
                }
                Ok(Err(e)) => return Err(self.map_transport(e, secret)),
                Ok(Ok(None)) => return Ok(buf.freeze()),
                Ok(Ok(Some(chunk))) => {
                    let room = limit.saturating_sub(buf.len());
                    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if buf.len() >= limit {
                        return Ok(buf.freeze());
                    }
                }
            }
        }
    }

    /// The body as a stream of chunks, each awaited with the idle timeout.
    pub(crate) fn byte_stream(
        &self,
        resp: Response,
        secret: Option<&SecretString>,
    ) -> BoxStream<'static, Result<Bytes, ProviderError>> {
        struct State {
            body: BoxStream<'static, reqwest::Result<Bytes>>,
            provider: String,
            timeouts: Timeouts,
            secret: Option<SecretString>,
        }
        let state = State {
            body: resp.bytes_stream().boxed(),
            provider: self.provider.clone(),
            timeouts: self.timeouts,
            secret: secret.cloned(),
        };
        futures::stream::unfold(Some(state), |st| async move {
            let mut st = st?;
            match tokio::time::timeout(st.timeouts.idle, st.body.next()).await {
                Err(_) => Some((
                    Err(ProviderError::Timeout {
                        provider: st.provider.clone(),
                        kind: TimeoutKind::Idle,
                        after: st.timeouts.idle,
                    }),
                    None,
                )),
                Ok(None) => None,
                Ok(Some(Err(e))) => {
                    let secret = st.secret.as_ref().map(|s| s.expose_secret());
                    let e = map_transport_error(&st.provider, e, &st.timeouts, secret);
                    Some((Err(e), None))
                }
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(st))),
            }
        })
        .boxed()
    }

    fn map_transport(&self, e: reqwest::Error, secret: Option<&str>) -> ProviderError {
        map_transport_error(&self.provider, e, &self.timeouts, secret)
    }
}

/// Maps a reqwest error (connect, TLS, a reset connection) to an error.
pub(crate) fn map_transport_error(
    provider: &str,
    e: reqwest::Error,
    timeouts: &Timeouts,
    secret: Option<&str>,
) -> ProviderError {
    // reqwest's message names the URL: keep it, with its query values
    // and any userinfo removed.
    let mut message = e.to_string();
    if let Some(u) = e.url() {
        message = message.replace(u.as_str(), &redact_url(u.as_str()));
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if s.downcast_ref::<EgressDenied>().is_some() {
            tracing::warn!(
                provider,
                "the egress policy refused every address of a provider's host"
            );
            return ProviderError::EgressRefused {
                provider: provider.to_owned(),
            };
        }
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    let message = redact(&message, secret);
    if e.is_connect() && e.is_timeout() {
        return ProviderError::Timeout {
            provider: provider.to_owned(),
            kind: TimeoutKind::Connect,
            after: timeouts.connect,
        };
    }
    // The message keeps the chain's text (redacted) for `Display`; the
    // error itself, without its URL, is the `source()`.
    let builder = e.is_builder();
    let source = clean_cause(e.without_url(), secret);
    if builder {
        return ProviderError::Config { message, source };
    }
    ProviderError::Unavailable {
        provider: provider.to_owned(),
        status: None,
        message,
        source,
    }
}

/// A header value holding a secret, marked sensitive so that it is never
/// printed by `Debug` of the request or its headers.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| ProviderError::Config {
        message: "the API key contains characters not allowed in a header".to_owned(),
        source: None,
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The common mapping of a failure status, for what a vendor's own codes
/// do not settle.
pub(crate) fn map_status_common(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
    raw_body: &str,
    secret: Option<&str>,
) -> ProviderError {
    let provider = provider.to_owned();
    match status.as_u16() {
        401 | 403 => ProviderError::Authentication { provider, message },
        429 => ProviderError::RateLimited {
            provider,
            retry_after: super::parse_retry_after(headers),
            message,
        },
        400 | 404 | 405 | 409 | 413 | 415 | 422 => {
            ProviderError::InvalidRequest { provider, message }
        }
        408 | 500..=599 => ProviderError::Unavailable {
            source: None,
            provider,
            status: Some(status.as_u16()),
            message,
        },
        s => ProviderError::Unknown {
            provider,
            status: s,
            body: redact(raw_body, secret),
        },
    }
}

/// `base` with `path`'s segments appended to its path: no doubled or
/// dropped slash, and a query string in `base` stays the query string.
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty();
        segs.extend(path.split('/').filter(|s| !s.is_empty()));
    }
    url
}

/// Parses a JSON body into `T`, mapping failures to `InvalidResponse` with
/// a redacted excerpt.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    provider: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::InvalidResponse {
        provider: provider.to_owned(),
        // serde_json quotes the value it refused, which can be a key.
        message: format!(
            "{}; body: {}",
            redact(&e.to_string(), secret),
            redact(&String::from_utf8_lossy(body), secret)
        ),
        source: clean_cause(e, secret),
    })
}

/// The secret's text, for redaction.
pub(crate) fn secret_str(s: Option<&SecretString>) -> Option<&str> {
    s.map(|s| s.expose_secret())
}

/// Removes the key from an error built without it (a parse error quoting
/// the body).
pub(crate) fn scrub(e: ProviderError, secret: Option<&str>) -> ProviderError {
    match e {
        ProviderError::InvalidResponse {
            provider,
            message,
            source,
        } => ProviderError::InvalidResponse {
            provider,
            message: crate::provider::redact(&message, secret),
            source: source.filter(|c| super::error::clean(c, secret)),
        },
        other => other,
    }
}

#[cfg(test)]
mod cause_tests {
    use std::error::Error as _;

    use super::*;
    use crate::error::Report;

    #[test]
    fn a_body_that_does_not_parse_keeps_the_serde_json_error() {
        let e = parse_json::<serde_json::Value>("openai", b"{not json", None).unwrap_err();
        assert!(matches!(e, ProviderError::InvalidResponse { .. }), "{e:?}");
        let source = e.source().expect("a source");
        assert!(
            source.downcast_ref::<serde_json::Error>().is_some(),
            "{source:?}"
        );
    }

    #[test]
    fn a_cause_that_could_show_the_key_is_dropped() {
        // serde_json quotes the offending value: here, the key.
        let body = br#"{"n": "sk-live-0123456789abcdef"}"#;
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct N {
            n: u32,
        }
        let e = parse_json::<N>("openai", body, Some("sk-live-0123456789abcdef")).unwrap_err();
        assert!(e.source().is_none(), "{e:?}");
        let all = format!("{e:?} {e} {}", Report(&e));
        assert!(!all.contains("0123456789abcdef"), "{all}");
    }

    #[tokio::test]
    async fn a_transport_failure_keeps_the_reqwest_error_without_its_url() {
        ensure_crypto_provider();
        // Nothing listens on port 1; the key rides in the query, as Gemini's does.
        let key = "AIzaSyTESTKEY0123456789";
        let err = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:1/v1/models?key={key}"))
            .send()
            .await
            .unwrap_err();
        let e = map_transport_error("google", err, &Timeouts::default(), Some(key));
        assert!(matches!(e, ProviderError::Unavailable { .. }), "{e:?}");
        let source = e.source().expect("a source");
        let reqwest = source
            .downcast_ref::<reqwest::Error>()
            .expect("the reqwest::Error");
        assert!(reqwest.is_connect(), "{reqwest:?}");
        assert!(reqwest.url().is_none(), "kept without its URL");
        let all = format!("{e:?} {e} {}", Report(&e));
        assert!(!all.contains(key), "{all}");
        assert!(!all.contains("TESTKEY"), "{all}");
    }
}
