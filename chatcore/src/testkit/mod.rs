//! Conformance kits for plugin authors.

pub mod provider;
