//! Shared helpers for the examples in this folder.
