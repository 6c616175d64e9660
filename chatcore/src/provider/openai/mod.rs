//! OpenAI chat completions and embeddings; also every OpenAI-compatible
//! server (vLLM, Ollama, Groq, Mistral, DeepSeek, ...).
//!
//! `client.rs` makes the HTTP calls; `wire.rs` holds the wire structs and
//! their pure mapping to our types.

mod client;
pub mod wire;

pub use client::{DEFAULT_BASE_URL, DEFAULT_EMBEDDING_MODEL, OpenAiProvider};
pub use wire::parse_stream;
