//! Offline token counting with tiktoken, used to estimate usage when a
//! vendor reports none (a cut stream, an OpenAI-compatible server without
//! usage).
//!
//! Each encoder is loaded once per process (tiktoken-rs keeps them in
//! `LazyLock`s) on first use: `o200k_base` for the GPT-4o family and newer
//! OpenAI models, `cl100k_base` for everything else (an approximation for
//! non-OpenAI models, which is why such counts are marked `estimated`).

use tiktoken_rs::CoreBPE;

use super::{ChatMessage, Usage};

/// Framing tokens per message, per OpenAI's cookbook.
const TOKENS_PER_MESSAGE: u32 = 3;
/// Tokens priming the reply (`<|start|>assistant<|message|>`).
const REPLY_PRIMING: u32 = 3;

/// Whether `model` uses the `o200k_base` encoding.
pub fn uses_o200k(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    [
        "gpt-4o",
        "chatgpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "gpt-oss",
    ]
    .iter()
    .any(|p| m.starts_with(p))
}

/// The encoder for `model`, loaded on first use and shared afterwards.
pub fn encoder_for_model(model: &str) -> &'static CoreBPE {
    if uses_o200k(model) {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

/// Tokens of `text` under `model`'s encoding.
pub fn count_tokens(model: &str, text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    let n = encoder_for_model(model).encode_ordinary(text).len();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Prompt tokens of a message list, with OpenAI's per-message framing.
pub fn count_message_tokens(model: &str, messages: &[ChatMessage]) -> u32 {
    let bpe = encoder_for_model(model);
    let mut total = REPLY_PRIMING;
    for m in messages {
        let n = bpe.encode_ordinary(&m.content).len() + bpe.encode_ordinary(m.role.as_str()).len();
        total = total
            .saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
    total
}

/// Usage of a call counted by us, marked `estimated`.
pub fn estimate_usage(model: &str, messages: &[ChatMessage], completion: &str) -> Usage {
    let prompt_tokens = count_message_tokens(model, messages);
    let completion_tokens = count_tokens(model, completion);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
        estimated: true,
        cached_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_encoding_by_model_family() {
        assert!(uses_o200k("gpt-4o-mini"));
        assert!(uses_o200k("o3-mini"));
        assert!(uses_o200k("openai/gpt-4.1"));
        assert!(!uses_o200k("gpt-4-turbo"));
        assert!(!uses_o200k("llama3"));
    }

    #[test]
    fn counts_known_texts() {
        // Reference counts from OpenAI's tokenizer.
        assert_eq!(count_tokens("gpt-4", "hello world"), 2);
        assert_eq!(count_tokens("gpt-4o", "hello world"), 2);
        assert_eq!(count_tokens("gpt-4", ""), 0);
        let msgs = [ChatMessage::user("hello world")];
        // 3 priming + 3 framing + 2 content + 1 role.
        assert_eq!(count_message_tokens("gpt-4", &msgs), 9);
        let u = estimate_usage("gpt-4", &msgs, "hello world");
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (9, 2, 11)
        );
        assert!(u.estimated);
    }
}
