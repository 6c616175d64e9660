//! chatcore: a multi-tenant, multi-provider chatbot engine.
//!
//! The crate owns all the logic; `chatcore-server` only translates HTTP to
//! calls into it.
//!
//! # Start here
//!
//! [`Chatcore::builder`] gives the wired services in a line or two: a store
//! (a URL or your own [`store::Store`]), the provider registry (the
//! built-ins plus yours), the master keyring, settings; then
//! [`Chatcore::chat`] holds turns, [`Chatcore::admin`] manages tenants,
//! providers, bots and keys, [`Chatcore::rag`] datasets. See
//! `examples/embed.rs` (in process) and `examples/plugin_server.rs` (your
//! provider behind the bundled HTTP server).
//!
//! ```text
//! Chatcore::builder() ─► Chatcore { chat, admin, rag, providers }
//!
//! ChatService ──retriever──► RagService     AdminService
//!   │      │                   │      │          │
//!   │      └─► Providers ◄─────┘      │          │   registry + keyring +
//!   │                                 │          │   providers built per config
//!   └────────► Caches ◄── invalidate ─┴──────────┘   verified keys, bots
//!
//! each over the Store (SeaORM on SQLite or PostgreSQL, or your own)
//! ```
//!
//! # Modules
//!
//! One concern each:
//!
//! - [`domain`]: plain domain types (`Tenant`, `Bot`, `Conversation`, ...)
//!   with newtype ids (UUIDv7). No ORM type appears here.
//! - [`admin`]: `AdminService`, management (tenants, providers, bots, keys,
//!   scopes, conversations, audit log, usage) for the server and the CLI;
//!   every change takes an [`admin::Writer`], which only the permission
//!   check makes.
//! - [`engine`]: `ChatService`, the chat entry point (one turn: access,
//!   guardrails, limits, history, prompt, provider, persistence), with
//!   `Providers` (tenant provider configs built into providers, shared
//!   with RAG) and `Caches` (keys and bots in memory, shared with those
//!   that invalidate them).
//! - [`error`]: what the per-layer errors share: [`error::Cause`] (the
//!   error underneath, kept as `source()`) and [`error::Report`] (an error
//!   and its chain on one log line).
//! - [`provider`]: the `Provider` trait and its implementations (OpenAI,
//!   Anthropic, Google Gemini, OpenAI-compatible, mock), retries, fallback,
//!   token counting.
//! - [`store`]: the `Store` trait (every persistence operation, tenant-scoped),
//!   made of five parts (`StoreBase`, `TenantStore`, `ChatStore`, `RagStore`,
//!   `AuditStore`; management writes are `AuditStore::apply`), and
//!   `SeaOrmStore`, its SeaORM implementation for SQLite and PostgreSQL.
//! - [`rag`]: `RagService` (ingestion, indexing, hybrid retrieval) and the
//!   pure parts: normalisation, chunking, cosine top-k, BM25, fusion, filters.
//! - [`openai_compat`]: OpenAI's chat completions protocol as clients speak
//!   it (request parsing naming each bad parameter, reply shapes).
//! - [`ratelimit`]: GCRA rate limits, in process or atomic in Redis.
//! - [`pricing`]: prices per model (catalog and tenant overrides) and the
//!   cost of a turn, in integer micro-units.
//! - [`budget`]: spending budgets: reserve a turn's worst case before the
//!   provider call, settle to its real cost after, atomic in process or in
//!   one Redis script.
//! - [`audit`]: the batched, bounded, off-request-path audit writer.
//! - [`auth`]: API keys: generation from a CSPRNG, SHA-256 hashing, constant
//!   time verification, permissions.
//! - [`bootstrap`]: the demo tenant and bot created on first start.
//! - [`cache`]: the bounded TTL cache for hot lookups (keys, bots), on moka.
//! - [`text`]: what a text value must be to reach the database (no NUL),
//!   checked once where it enters, with the field named.
//! - [`crypto`]: encryption at rest of provider API keys (AES-256-GCM with a
//!   rotating master keyring).
//! - [`widget`]: the chat widget for public bots: settings per bot, signed
//!   visitor sessions, identity verification, feedback on answers.
//! - `testkit` (feature `testkit`): conformance suites that plugin authors run
//!   on their own `Store` and `Provider` implementations, and the fixtures of
//!   chatcore's own tests and benchmarks.
//!
//! # One turn, end to end
//!
//! A `POST /v1/chat` reaches [`engine::ChatService::chat`] (or `chat_stream`)
//! as a [`engine::Caller`] (a key's [`auth::Principal`], or a public visitor)
//! and a [`engine::ChatInput`]:
//!
//! 1. **validate** the input (lengths, ids, text the database can store);
//! 2. **resolve** the bot in the caller's tenant (cached in
//!    [`engine::Caches`]: no read when warm) with its provider, built once
//!    per provider config version by [`engine::Providers`];
//! 3. **authorize**: permission, the key's bot list, tenant status and
//!    features, the bot's guardrails;
//! 4. **limit**: requests per minute of tenant and key, or the public
//!    budgets ([`ratelimit`], in process or in Redis);
//! 5. **conversation**: the one to continue, and its recent history;
//! 6. **retrieve** context from the bot's datasets (the service's
//!    retriever, [`rag::RagService`] unless the builder was given another);
//! 7. **prompt**: system prompt, context and as much history as fits
//!    ([`engine::prompt`]); the tenant's tokens per minute take its
//!    estimate;
//! 8. **begin**: the user's message and a pending answer are stored in one
//!    group commit ([`store`]'s writer) before the provider is called;
//! 9. the **provider** answers ([`provider`]: retries, fallback, streams);
//! 10. **finish**: the outcome (complete, failed, cancelled) with tokens and
//!     timings is stored, usage rolled up, tokens settled, the action
//!     audited ([`audit`]), and only then is the reply or `done` sent.
#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod budget;
mod builder;
pub mod cache;
pub mod crypto;
pub mod domain;
pub mod engine;
pub mod error;
pub mod openai_compat;
pub mod pricing;
pub mod provider;
pub mod rag;
pub mod ratelimit;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub mod widget;

pub use builder::{BuildError, Chatcore, ChatcoreBuilder};
