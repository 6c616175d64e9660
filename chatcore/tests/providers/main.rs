//! Provider tests: each vendor against a local wire-format fake, faults,
//! retries, fallback, the registry and the conformance suite.

// The fakes return a ready-made error response as `Err`; boxing it would
// only add noise to test code.
#![allow(clippy::result_large_err)]

mod anthropic;
mod conformance;
mod egress;
mod gemini;
mod mock;
mod openai;
mod registry;
mod resilience;
mod support;
