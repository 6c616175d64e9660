//! Anthropic Messages API. No embeddings: Anthropic offers none.
//!
//! `client.rs` makes the HTTP calls; `wire.rs` holds the wire structs and
//! their pure mapping to our types.

mod client;
pub mod wire;

pub use client::{API_VERSION, AnthropicProvider, DEFAULT_BASE_URL};
pub use wire::parse_stream;
