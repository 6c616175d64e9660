//! Integration tests of the HTTP API, through [`helpers::spawn_app`]: the
//! real server on 127.0.0.1:0 with a fresh database per test.

mod health;
mod helpers;
