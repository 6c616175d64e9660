//! Conformance kits for plugin authors (feature `testkit`).
//!
//! - [`store`]: the suite every `Store` implementation must pass, and
//!   [`store_conformance_tests!`](crate::store_conformance_tests) to run it.
//! - [`provider`]: the suite every `Provider` implementation must pass.
//! - [`pg`]: fresh PostgreSQL schemas for tests.

pub mod pg;
pub mod provider;
pub mod store;
