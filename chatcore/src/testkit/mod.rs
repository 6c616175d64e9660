//! Conformance kits for plugin authors, and the fixtures of chatcore's own
//! tests and benchmarks (feature `testkit`).
//!
//! - [`store`]: the suite every `Store` implementation must pass, and
//!   [`store_conformance_tests!`](crate::store_conformance_tests) to run it.
//! - [`provider`]: the suite every `Provider` implementation must pass.
//! - [`fixtures`]: a tenant with a provider, a bot, a key and a dataset,
//!   and the management writes as typed calls through `AuditStore::apply`.
//! - [`pg`]: fresh PostgreSQL schemas for tests.

pub mod fixtures;
pub mod pg;
pub mod provider;
pub mod store;
