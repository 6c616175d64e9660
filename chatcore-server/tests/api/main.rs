//! Integration tests of the HTTP API, through [`helpers::spawn_app`]: the
//! real server on 127.0.0.1:0 with a fresh database per test, providers
//! pointed at local wire-format servers or the offline mock.

mod admin;
mod budgets;
mod chat;
mod cli;
mod connection;
mod durability;
mod fake_openai;
mod health;
mod helpers;
mod openai;
mod rag;
mod security;
mod telemetry;
mod widget;
