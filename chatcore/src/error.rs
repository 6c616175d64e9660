//! What the error types of every layer share: [`Cause`], the error that
//! caused another, kept as its `source()`, and [`Report`], which prints an
//! error with its whole chain for a log line.
//!
//! # Per-layer errors, not one `chatcore::Error`
//!
//! chatcore keeps one typed error per layer: [`crate::provider::ProviderError`]
//! (a vendor call), [`crate::store::StoreError`] (persistence),
//! [`crate::auth::AuthError`], [`crate::ratelimit::RateLimitError`],
//! [`crate::budget::BudgetError`], and the services' [`crate::engine::ChatError`]
//! (chat, admin and RAG), which wraps the others. Why not one crate-wide
//! enum: each layer's callers match on that layer's cases (the writer
//! retries a [`crate::store::StoreError::Unavailable`], fallback moves on
//! after a retryable provider error), a `Store` or `Provider` plugin returns
//! its own layer's error without knowing about chat turns, and the server
//! maps only `ChatError`, once, to an HTTP status. What a single enum would
//! have given (a chain to the root cause) comes from [`Cause`]: the
//! variants that stand for a failure of something underneath (a database
//! error, I/O, JSON, a TLS or TCP failure, Redis, PDF extraction, a
//! decryption) keep that failure as their `source()` instead of formatting
//! it into their message.
//!
//! Messages say what failed in a few words; the cause is not repeated in
//! them (a [`Report`] prints it once, after the message). A cause never
//! reaches an HTTP caller: the server answers a 500 or 503 with a generic
//! message and logs the [`Report`] with the request id.

use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The error underneath another: any `std::error::Error`, shared so that
/// the error holding it stays `Clone` (the store's group-commit writer
/// answers many callers with one error).
///
/// A field of this type marked `#[source]` makes `source()` return the
/// original error itself (it derefs to `dyn Error`), so
/// `source().and_then(|s| s.downcast_ref::<DbErr>())` finds it.
///
/// Two causes are equal when they print the same (errors have no other
/// equality; this keeps `PartialEq` on the errors that had it).
#[derive(Clone)]
pub struct Cause(Arc<dyn StdError + Send + Sync + 'static>);

impl Cause {
    /// Keeps `e` as a cause.
    pub fn new(e: impl StdError + Send + Sync + 'static) -> Self {
        Cause(Arc::new(e))
    }

    /// Keeps an already boxed error as a cause.
    pub fn from_boxed(e: Box<dyn StdError + Send + Sync + 'static>) -> Self {
        Cause(Arc::from(e))
    }

    /// The cause as a plain error.
    pub fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl Deref for Cause {
    type Target = dyn StdError + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

/// An error and its chain of sources on one line, `error: cause: cause`,
/// for logs: `tracing::error!(error = %Report(&e), "...")`.
///
/// Only for logs: a cause may name a host, a file or a SQL statement,
/// which callers are not shown. (No error of chatcore holds a secret in its
/// chain: provider transport errors are kept without their URL.)
pub struct Report<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut printed = self.0.to_string();
        f.write_str(&printed)?;
        for e in chain(self.0).skip(1) {
            let text = e.to_string();
            // A wrapper that already prints its cause's text (an
            // `#[error(transparent)]`, a `"...: {0}"`, a provider error's
            // message that spells out the transport chain) would show it
            // twice.
            if !printed.contains(&text) {
                write!(f, ": {text}")?;
                printed.push_str(": ");
                printed.push_str(&text);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The chain of `e`: itself, then each `source()` in turn.
pub fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading the file")]
        Read {
            #[source]
            source: Cause,
        },
    }

    #[test]
    fn source_is_the_original_error() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Outer::Read {
            source: Cause::new(io),
        };
        let s = e.source().expect("a source");
        let io = s.downcast_ref::<std::io::Error>().expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(Report(&e).to_string(), "reading the file: no such file");
        assert_eq!(chain(&e).count(), 2);
    }

    #[test]
    fn report_skips_a_cause_its_wrapper_already_printed() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Loud(#[source] std::io::Error);
        let e = Loud(std::io::Error::other("boom"));
        assert_eq!(Report(&e).to_string(), "outer: boom");
    }

    #[test]
    fn clones_share_the_cause() {
        let c = Cause::new(std::io::Error::other("x"));
        assert_eq!(c.clone(), c);
        assert_eq!(c.to_string(), "x");
    }
}
