//! Prompt building: system prompt, retrieved context, as much history as
//! fits the bot's budget (counted with tiktoken), then the new message.

use serde::Serialize;

use crate::domain::{ChunkId, DocumentId, Message, MessageStatus, Role};
use crate::provider::ChatMessage;
use crate::provider::tokens::{count_tokens, uses_o200k};

/// Token counts of texts seen recently, by encoding and a 64-bit hash of
/// the text. System prompts and history repeat on every turn of a
/// conversation, and tiktoken costs about half a millisecond for even a
/// short text on this hardware (measured by benches/turn_breakdown.rs).
pub fn cached_count(model: &str, text: &str) -> usize {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::{LazyLock, Mutex};
    static CACHE: LazyLock<Mutex<HashMap<(bool, u64), u32>>> = LazyLock::new(Default::default);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let key = (uses_o200k(model), h.finish());
    if let Some(n) = CACHE.lock().expect("token cache poisoned").get(&key) {
        return *n as usize;
    }
    let n = count_tokens(model, text);
    let mut cache = CACHE.lock().expect("token cache poisoned");
    if cache.len() >= 100_000 {
        cache.clear();
    }
    cache.insert(key, n);
    n as usize
}

/// A retrieved piece of a document offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    /// The document.
    pub document_id: DocumentId,
    /// Its title.
    pub title: String,
    /// The chunk.
    pub chunk_id: ChunkId,
    /// Retrieval score (higher is better).
    pub score: f32,
    /// The chunk's text (the reply carries a snippet of it).
    #[serde(skip)]
    pub text: String,
    /// The first characters of the chunk.
    pub snippet: String,
}

/// Per-message overhead of chat formats (role markers), in tokens.
const PER_MESSAGE: usize = 4;

/// What went into a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The messages to send.
    pub messages: Vec<ChatMessage>,
    /// Prompt tokens: counted with tiktoken when `counted`, else an
    /// estimate (a quarter of the bytes) for limits that settle later with
    /// the provider's usage.
    pub tokens: usize,
    /// Whether `tokens` was counted exactly.
    pub counted: bool,
    /// How many history messages were included.
    pub history_used: usize,
    /// The sources included, in order.
    pub sources: Vec<Source>,
}

/// Measures a prompt against its budget, counting tokens only when it must.
///
/// A BPE token covers at least one byte, so a text's byte length bounds its
/// token count from above. While the bounds of everything taken so far fit
/// the budget, nothing is counted: most turns (a short conversation, a
/// budget of thousands of tokens) never call tiktoken, which costs tens to
/// hundreds of microseconds per text. The first text whose bound does not
/// fit switches the meter to exact counts (cached per text) for everything
/// taken so far and from then on.
struct Meter<'a> {
    model: &'a str,
    budget: usize,
    /// Texts taken, with their per-message overhead.
    taken: Vec<(&'a str, usize)>,
    /// Upper bound, or exact count once `exact`.
    used: usize,
    exact: bool,
}

impl<'a> Meter<'a> {
    fn new(model: &'a str, budget: usize) -> Self {
        Self {
            model,
            budget,
            taken: Vec::new(),
            used: 0,
            exact: false,
        }
    }

    fn exact_count(&self, text: &str, overhead: usize) -> usize {
        cached_count(self.model, text) + overhead
    }

    /// Switches to exact counts of everything taken so far.
    fn count_exactly(&mut self) {
        if !self.exact {
            self.exact = true;
            self.used = self
                .taken
                .iter()
                .map(|(t, o)| self.exact_count(t, *o))
                .sum();
        }
    }

    /// Takes `text` if it fits the budget (always when `force`).
    fn take(&mut self, text: &'a str, overhead: usize, force: bool) -> bool {
        if !self.exact {
            let bound = text.len() + overhead;
            if force || self.used + bound <= self.budget {
                self.used += bound;
                self.taken.push((text, overhead));
                return true;
            }
            self.count_exactly();
        }
        let n = self.exact_count(text, overhead);
        if force || self.used + n <= self.budget {
            self.used += n;
            self.taken.push((text, overhead));
            return true;
        }
        false
    }

    /// Tokens of what was taken: exact, or estimated from the bytes.
    fn tokens(&self) -> usize {
        if self.exact {
            self.used
        } else {
            self.taken
                .iter()
                .map(|(t, o)| t.len().div_ceil(4) + o)
                .sum()
        }
    }
}

/// Builds the prompt within `budget` tokens. The system prompt and the new
/// message are always included; retrieved context may take up to half of
/// what remains, history (newest first) the rest. History that is not
/// usable (errors, pending, empty) is skipped.
pub fn build_prompt(
    model: &str,
    system: &str,
    sources: Vec<Source>,
    history: &[Message],
    message: &str,
    budget: usize,
) -> Prompt {
    let mut meter = Meter::new(model, budget);
    meter.take(message, PER_MESSAGE, true);
    if !system.is_empty() {
        meter.take(system, PER_MESSAGE, true);
    }
    let mut context_text = String::new();
    let mut kept_sources = Vec::new();
    if !sources.is_empty() {
        // The context's allowance depends on what the rest takes: count.
        meter.count_exactly();
        let allowance = budget.saturating_sub(meter.used) / 2;
        let header =
            "Answer from the following sources when they are relevant. Cite them by number.\n";
        let mut ctx_used = cached_count(model, header) + PER_MESSAGE;
        for (i, s) in sources.into_iter().enumerate() {
            let block = format!("\n[{}] {}\n{}\n", i + 1, s.title, s.text);
            let t = cached_count(model, &block);
            if ctx_used + t > allowance {
                break;
            }
            ctx_used += t;
            context_text.push_str(&block);
            kept_sources.push(s);
        }
        if !kept_sources.is_empty() {
            context_text.insert_str(0, header);
            meter.used += ctx_used;
        }
    }
    let usable = |m: &&Message| {
        !m.content.is_empty()
            && match m.role {
                Role::User => true,
                Role::Assistant => {
                    matches!(
                        m.status,
                        MessageStatus::Complete
                            | MessageStatus::Incomplete
                            | MessageStatus::Cancelled
                    )
                }
                // Tool results belong to turns with tools (the
                // OpenAI-compatible API, whose clients send them back).
                Role::System | Role::Tool => false,
            }
    };
    let mut picked: Vec<&Message> = Vec::new();
    for m in history.iter().rev().filter(usable) {
        if !meter.take(&m.content, PER_MESSAGE, false) {
            break;
        }
        picked.push(m);
    }
    picked.reverse();
    let mut messages = Vec::with_capacity(picked.len() + 3);
    let mut system_text = system.to_string();
    if !context_text.is_empty() {
        if !system_text.is_empty() {
            system_text.push_str("\n\n");
        }
        system_text.push_str(&context_text);
    }
    if !system_text.is_empty() {
        messages.push(ChatMessage::system(system_text));
    }
    for m in &picked {
        messages.push(match m.role {
            Role::Assistant => ChatMessage::assistant(m.content.clone()),
            _ => ChatMessage::user(m.content.clone()),
        });
    }
    messages.push(ChatMessage::user(message));
    Prompt {
        messages,
        tokens: meter.tokens(),
        counted: meter.exact,
        history_used: picked.len(),
        sources: kept_sources,
    }
}

/// The prompt of a turn whose client holds the conversation (the
/// OpenAI-compatible API): the bot's system prompt with its retrieved
/// context first (from `query`, the last user message, within `budget` as in
/// [`build_prompt`]), then the client's messages as sent. The client's
/// messages are never trimmed: they are the conversation the client chose
/// to send. `tokens` is an estimate (a quarter of the bytes per text) that
/// the provider's usage settles.
pub fn client_prompt(
    model: &str,
    system: &str,
    sources: Vec<Source>,
    client: Vec<ChatMessage>,
    query: &str,
    budget: usize,
) -> Prompt {
    let mut p = build_prompt(model, system, sources, &[], query, budget);
    // `build_prompt` ends with the query as the user message; the client's
    // messages take its place.
    p.messages.pop();
    let client_tokens: usize = client
        .iter()
        .map(|m| {
            let calls: usize = m
                .tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments.len())
                .sum();
            (m.content.len() + calls).div_ceil(4) + PER_MESSAGE
        })
        .sum();
    p.tokens = p
        .tokens
        .saturating_sub(query.len().div_ceil(4) + PER_MESSAGE)
        + client_tokens;
    p.counted = false;
    p.messages.extend(client);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn msg(role: Role, content: &str, status: MessageStatus) -> Message {
        Message {
            id: MessageId::new(),
            tenant_id: TenantId::new(),
            conversation_id: ConversationId::new(),
            role,
            content: content.into(),
            usage: None,
            response_time_ms: None,
            time_to_first_token_ms: None,
            provider: None,
            model: None,
            finish_reason: None,
            status,
            error: None,
            source_chunk_ids: vec![],
            api_key_id: None,
            created_at: now(),
            tool_call_id: None,
            cost: None,
            tool_calls: Vec::new(),
        }
    }

    #[test]
    fn history_fills_the_budget_newest_first_and_skips_failures() {
        let mut history = Vec::new();
        for i in 0..50 {
            history.push(msg(
                Role::User,
                &format!("question number {i} about things"),
                MessageStatus::Complete,
            ));
            history.push(msg(
                Role::Assistant,
                &format!("answer number {i}"),
                MessageStatus::Complete,
            ));
        }
        history.push(msg(Role::Assistant, "", MessageStatus::Error));
        let p = build_prompt("gpt-4o-mini", "Be brief.", vec![], &history, "latest", 120);
        assert!(p.tokens <= 120, "{}", p.tokens);
        assert!(p.history_used > 0 && p.history_used < 100);
        assert_eq!(p.messages[0], ChatMessage::system("Be brief."));
        assert_eq!(p.messages.last().unwrap(), &ChatMessage::user("latest"));
        // The newest history is kept, in order.
        assert_eq!(
            p.messages[p.messages.len() - 2],
            ChatMessage::assistant("answer number 49")
        );
        let big = build_prompt(
            "gpt-4o-mini",
            "Be brief.",
            vec![],
            &history,
            "latest",
            100_000,
        );
        assert_eq!(big.history_used, 100, "the error message is skipped");
    }

    #[test]
    fn context_is_included_within_half_the_remaining_budget() {
        let src = |i: usize| Source {
            document_id: DocumentId::new(),
            title: format!("Doc {i}"),
            chunk_id: ChunkId::new(),
            score: 1.0,
            text: "word ".repeat(40),
            snippet: String::new(),
        };
        let p = build_prompt(
            "gpt-4o-mini",
            "sys",
            (0..10).map(src).collect(),
            &[],
            "q",
            400,
        );
        assert!(
            !p.sources.is_empty() && p.sources.len() < 10,
            "{}",
            p.sources.len()
        );
        assert!(p.messages[0].content.contains("[1] Doc 0"));
        assert!(p.tokens <= 400);
    }

    #[test]
    fn a_prompt_whose_bytes_fit_the_budget_is_not_counted() {
        let history = vec![
            msg(Role::User, "first question", MessageStatus::Complete),
            msg(Role::Assistant, "first answer", MessageStatus::Complete),
        ];
        let p = build_prompt("gpt-4o-mini", "sys", vec![], &history, "latest", 1000);
        assert!(!p.counted);
        assert_eq!(p.history_used, 2);
        // The estimate: a quarter of each text's bytes, rounded up, plus
        // the per-message overhead.
        let est = |t: &str| t.len().div_ceil(4) + PER_MESSAGE;
        assert_eq!(
            p.tokens,
            est("latest") + est("sys") + est("first answer") + est("first question")
        );
    }

    #[test]
    fn near_the_budget_tokens_are_counted_exactly() {
        // 30 copies of a two-token word: 150 bytes but about 30 tokens.
        let long = "hello ".repeat(30);
        let history = vec![msg(Role::User, &long, MessageStatus::Complete)];
        let exact = |t: &str| cached_count("gpt-4o-mini", t) + PER_MESSAGE;
        let needed = exact("q") + exact(&long);
        // The byte bound (150 + ...) does not fit, the exact count does.
        let p = build_prompt("gpt-4o-mini", "", vec![], &history, "q", needed);
        assert!(p.counted);
        assert_eq!(p.history_used, 1, "counted exactly, it fits");
        assert_eq!(p.tokens, needed);
        // One token less and it does not.
        let p = build_prompt("gpt-4o-mini", "", vec![], &history, "q", needed - 1);
        assert_eq!(p.history_used, 0);
        assert_eq!(p.tokens, exact("q"));
        // The message and the system prompt are kept even over the budget.
        let p = build_prompt("gpt-4o-mini", "system", vec![], &[], &long, 1);
        assert_eq!(p.messages.len(), 2);
        // Nothing was left to decide: not counted, estimated.
        assert!(!p.counted);
        let est = |t: &str| t.len().div_ceil(4) + PER_MESSAGE;
        assert_eq!(p.tokens, est(&long) + est("system"));
    }

    /// Tokens of `t` with its per-message overhead, counted independently
    /// of the prompt builder's cache.
    fn tiktoken(t: &str) -> usize {
        crate::provider::tokens::count_tokens("gpt-4o-mini", t) as usize + PER_MESSAGE
    }

    #[test]
    fn cached_counts_are_tiktokens_counts() {
        for t in [
            "hello world",
            "",
            "Answer from the following sources.",
            "日本語のテキスト",
        ] {
            assert_eq!(
                cached_count("gpt-4o-mini", t),
                crate::provider::tokens::count_tokens("gpt-4o-mini", t) as usize,
                "{t:?}"
            );
            // Asked twice (the second from the cache): the same count.
            assert_eq!(
                cached_count("gpt-4o-mini", t),
                crate::provider::tokens::count_tokens("gpt-4o-mini", t) as usize
            );
        }
        assert_eq!(cached_count("gpt-4o-mini", "hello world"), 2);
        // Another encoding is another entry: gpt-4 counts with cl100k.
        let text = "ünïcödé façade naïve";
        assert_eq!(
            cached_count("gpt-4", text),
            crate::provider::tokens::count_tokens("gpt-4", text) as usize
        );
    }

    #[test]
    fn exact_counts_include_the_per_message_overhead() {
        let long = "hello ".repeat(30);
        let history = vec![msg(Role::User, &long, MessageStatus::Complete)];
        let needed = tiktoken("q") + tiktoken(&long);
        let p = build_prompt("gpt-4o-mini", "", vec![], &history, "q", needed);
        assert!(p.counted);
        assert_eq!(p.history_used, 1);
        assert_eq!(p.tokens, needed);
        let p = build_prompt("gpt-4o-mini", "", vec![], &history, "q", needed - 1);
        assert_eq!(
            p.history_used, 0,
            "one token short, the message is left out"
        );
        assert_eq!(p.tokens, tiktoken("q"));
    }

    #[test]
    fn a_budget_of_exactly_the_byte_bound_is_met_without_counting() {
        // The byte bound of a text is its length plus the overhead.
        let history = vec![
            msg(Role::User, "first question", MessageStatus::Complete),
            msg(Role::Assistant, "first answer", MessageStatus::Complete),
        ];
        let bound = |t: &str| t.len() + PER_MESSAGE;
        let budget =
            bound("latest") + bound("sys") + bound("first answer") + bound("first question");
        let p = build_prompt("gpt-4o-mini", "sys", vec![], &history, "latest", budget);
        assert!(!p.counted, "the bounds fit exactly: nothing counted");
        assert_eq!(p.history_used, 2);

        // One byte less: the oldest message's bound no longer fits, so
        // everything is counted, and counted it all fits.
        let p = build_prompt("gpt-4o-mini", "sys", vec![], &history, "latest", budget - 1);
        assert!(p.counted);
        assert_eq!(p.history_used, 2);
        assert_eq!(
            p.tokens,
            tiktoken("latest")
                + tiktoken("sys")
                + tiktoken("first answer")
                + tiktoken("first question")
        );
    }

    #[test]
    fn history_skips_empty_failed_pending_system_and_tool_messages() {
        let history = vec![
            msg(Role::User, "kept question", MessageStatus::Complete),
            msg(Role::User, "", MessageStatus::Complete),
            msg(Role::System, "an old system note", MessageStatus::Complete),
            msg(Role::Tool, "a tool result", MessageStatus::Complete),
            msg(Role::Assistant, "failed", MessageStatus::Error),
            msg(Role::Assistant, "still writing", MessageStatus::Pending),
            msg(Role::Assistant, "half an answer", MessageStatus::Incomplete),
            msg(Role::Assistant, "cut short", MessageStatus::Cancelled),
            msg(Role::Assistant, "", MessageStatus::Complete),
            msg(Role::Assistant, "full answer", MessageStatus::Complete),
        ];
        let p = build_prompt("gpt-4o-mini", "", vec![], &history, "now", 10_000);
        assert_eq!(
            p.messages,
            vec![
                ChatMessage::user("kept question"),
                ChatMessage::assistant("half an answer"),
                ChatMessage::assistant("cut short"),
                ChatMessage::assistant("full answer"),
                ChatMessage::user("now"),
            ],
            "no system message without a system prompt"
        );
        assert_eq!(p.history_used, 4);
    }

    fn source(i: usize) -> Source {
        Source {
            document_id: DocumentId::new(),
            title: format!("Doc {i}"),
            chunk_id: ChunkId::new(),
            score: 1.0,
            text: format!("fact number {i} is that {}", "word ".repeat(20)),
            snippet: String::new(),
        }
    }

    const HEADER: &str =
        "Answer from the following sources when they are relevant. Cite them by number.\n";

    fn block(i: usize) -> String {
        let s = source(i);
        format!("\n[{}] {}\n{}\n", i + 1, s.title, s.text)
    }

    #[test]
    fn context_takes_at_most_half_of_what_remains_to_the_token() {
        let n = |t: &str| crate::provider::tokens::count_tokens("gpt-4o-mini", t) as usize;
        // The message and the system prompt; then the header and three
        // sources, whose blocks are counted without overhead.
        let fixed = tiktoken("q") + tiktoken("sys");
        let three = tiktoken(HEADER) + n(&block(0)) + n(&block(1)) + n(&block(2));
        let sources = || (0..5).map(source).collect::<Vec<_>>();
        // Half of what remains is exactly the three sources.
        let budget = fixed + 2 * three;
        let p = build_prompt("gpt-4o-mini", "sys", sources(), &[], "q", budget);
        assert_eq!(p.sources.len(), 3);
        assert!(p.counted);
        assert_eq!(p.tokens, fixed + three);
        assert_eq!(
            p.messages[0],
            ChatMessage::system(format!(
                "sys\n\n{HEADER}{}{}{}",
                block(0),
                block(1),
                block(2)
            ))
        );
        assert_eq!(p.messages[1], ChatMessage::user("q"));
        // A token less of allowance and the third does not fit.
        let p = build_prompt("gpt-4o-mini", "sys", sources(), &[], "q", budget - 2);
        assert_eq!(p.sources.len(), 2);
        let two = tiktoken(HEADER) + n(&block(0)) + n(&block(1));
        assert_eq!(p.tokens, fixed + two);
        // Without a system prompt the context is the system message.
        let p = build_prompt("gpt-4o-mini", "", sources(), &[], "q", 100_000);
        assert_eq!(p.sources.len(), 5);
        assert!(
            p.messages[0].content.starts_with(HEADER),
            "{:?}",
            p.messages[0]
        );
    }

    #[test]
    fn context_that_does_not_fit_leaves_no_header() {
        // Not even the first source fits half of a small budget.
        let p = build_prompt("gpt-4o-mini", "sys", vec![source(0)], &[], "q", 30);
        assert!(p.sources.is_empty());
        assert_eq!(
            p.messages,
            vec![ChatMessage::system("sys"), ChatMessage::user("q")]
        );
        assert_eq!(p.tokens, tiktoken("q") + tiktoken("sys"));
    }

    #[test]
    fn a_client_held_prompt_estimates_a_quarter_of_the_bytes_per_message() {
        use crate::provider::ToolCall;
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        };
        let client = vec![
            ChatMessage::user("What is the weather in Paris today?"),
            ChatMessage::assistant_tool_calls("", vec![call.clone()]),
            ChatMessage::tool_result("call_1", "sunny, 21 degrees"),
        ];
        let system = "You are a helpful weather assistant for travellers.";
        let p = client_prompt(
            "gpt-4o-mini",
            system,
            vec![],
            client.clone(),
            "What is the weather in Paris today?",
            10_000,
        );
        let est = |bytes: usize| bytes.div_ceil(4) + PER_MESSAGE;
        assert_eq!(
            p.tokens,
            est(system.len())
                + est("What is the weather in Paris today?".len())
                + est(call.name.len() + call.arguments.len())
                + est("sunny, 21 degrees".len())
        );
        assert!(!p.counted);
        let mut expected = vec![ChatMessage::system(system)];
        expected.extend(client);
        assert_eq!(p.messages, expected, "the client's messages as sent");
    }
}
