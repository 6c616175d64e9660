//! LLM providers (see issue 3).
