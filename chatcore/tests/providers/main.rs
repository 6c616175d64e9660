//! Provider tests: each vendor against a local wire-format fake, faults,
//! retries, fallback, the registry and the conformance suite.

mod anthropic;
mod gemini;
mod mock;
mod openai;
mod registry;
mod resilience;
mod support;
