//! Provider tests: each vendor against a local wire-format fake, faults,
//! retries, fallback, the registry and the conformance suite.

mod anthropic;
mod gemini;
mod openai;
mod support;
