//! Property tests of the provider stream parsers (OpenAI, Anthropic,
//! Gemini): arbitrary bytes, cut anywhere, never panic, end, and yield at
//! most one final event with nothing after the end; a well-formed stream
//! cut at arbitrary points (inside a UTF-8 character, inside a line) gives
//! back exactly its text.

use bytes::Bytes;
use chatcore::provider::{
    ChatEvent, ChatMessage, ChatStream, ProviderError, StreamContext, anthropic, gemini, openai,
};
use futures::StreamExt;
use proptest::prelude::*;
use serde_json::json;

type Parser = fn(
    futures::stream::BoxStream<'static, Result<Bytes, ProviderError>>,
    StreamContext,
) -> ChatStream;

fn parsers() -> [(&'static str, Parser); 3] {
    [
        ("openai", |b, c| openai::parse_stream(b, c)),
        ("anthropic", |b, c| anthropic::parse_stream(b, c)),
        ("google", |b, c| gemini::parse_stream(b, c)),
    ]
}

/// Cuts `body` at the given points (taken modulo its length).
fn pieces(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| if body.is_empty() { 0 } else { c % body.len() })
        .collect();
    at.push(0);
    at.push(body.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| Bytes::copy_from_slice(&body[w[0]..w[1]]))
        .collect()
}

/// Runs a parser over the pieces; returns the items, checking the stream
/// ends and that nothing follows the final event or an error.
fn run(kind: &str, parse: Parser, chunks: Vec<Bytes>) -> Vec<Result<ChatEvent, ProviderError>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let input = futures::stream::iter(chunks.into_iter().map(Ok)).boxed();
        let ctx = StreamContext::new(kind, "m", vec![ChatMessage::user("hi")]);
        let mut s = parse(input, ctx);
        let mut out = vec![];
        while let Some(item) = s.next().await {
            out.push(item);
            assert!(out.len() < 100_000, "{kind}: the stream does not end");
        }
        out
    })
}

fn check_shape(kind: &str, items: &[Result<ChatEvent, ProviderError>]) {
    let dones = items
        .iter()
        .filter(|i| matches!(i, Ok(ChatEvent::Done(_))))
        .count();
    assert!(dones <= 1, "{kind}: {dones} final events");
    if let Some(last) = items
        .iter()
        .position(|i| matches!(i, Ok(ChatEvent::Done(_)) | Err(_)))
    {
        assert_eq!(
            last,
            items.len() - 1,
            "{kind}: items after the end: {items:?}"
        );
    }
    for i in items {
        if let Ok(ChatEvent::Delta(d)) = i {
            assert!(!d.is_empty(), "{kind}: an empty delta");
        }
    }
}

fn openai_body(deltas: &[String]) -> String {
    let mut s = String::new();
    for d in deltas {
        let v = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]});
        s.push_str(&format!("data: {v}\n\n"));
    }
    let fin = json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    s.push_str(&format!("data: {fin}\n\ndata: [DONE]\n\n"));
    s
}

fn anthropic_body(deltas: &[String]) -> String {
    let mut s = String::new();
    let ev = |name: &str, v: serde_json::Value| format!("event: {name}\ndata: {v}\n\n");
    s.push_str(&ev("message_start", json!({"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 0}}})));
    s.push_str(&ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    for d in deltas {
        s.push_str(&ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}})));
    }
    s.push_str(&ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    s.push_str(&ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})));
    s.push_str(&ev("message_stop", json!({"type": "message_stop"})));
    s
}

fn gemini_body(deltas: &[String]) -> String {
    let mut s = String::new();
    let n = deltas.len();
    for (i, d) in deltas.iter().enumerate() {
        let mut c = json!({"content": {"role": "model", "parts": [{"text": d}]}, "index": 0});
        if i + 1 == n {
            c["finishReason"] = json!("STOP");
        }
        let mut v = json!({"candidates": [c], "modelVersion": "m"});
        if i + 1 == n {
            v["usageMetadata"] =
                json!({"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8});
        }
        s.push_str(&format!("data: {v}\r\n\r\n"));
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_end(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        for (kind, parse) in parsers() {
            let items = run(kind, parse, pieces(&body, &cuts));
            check_shape(kind, &items);
        }
    }

    #[test]
    fn sse_shaped_noise_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("data: [DONE]".to_string()),
                Just("data: {}".to_string()),
                Just("event: message_stop".to_string()),
                Just(": ping".to_string()),
                Just(String::new()),
                "data: \\{[a-z\":{}\\[\\], 0-9]{0,60}\\}".prop_map(String::from),
                "[ -~]{0,40}".prop_map(String::from),
            ],
            0..40,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let body = lines.join("\n");
        for (kind, parse) in parsers() {
            let items = run(kind, parse, pieces(body.as_bytes(), &cuts));
            check_shape(kind, &items);
        }
    }

    #[test]
    fn a_well_formed_stream_cut_anywhere_gives_back_its_text(
        deltas in proptest::collection::vec("\\PC{1,12}", 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let want: String = deltas.concat();
        for (kind, parse, body) in [
            ("openai", parsers()[0].1, openai_body(&deltas)),
            ("anthropic", parsers()[1].1, anthropic_body(&deltas)),
            ("google", parsers()[2].1, gemini_body(&deltas)),
        ] {
            let items = run(kind, parse, pieces(body.as_bytes(), &cuts));
            check_shape(kind, &items);
            let mut text = String::new();
            let mut done = false;
            for i in &items {
                match i {
                    Ok(ChatEvent::Delta(d)) => text.push_str(d),
                    Ok(ChatEvent::Done(_)) => done = true,
                    Ok(ChatEvent::ToolCall(c)) => panic!("{kind}: a tool call from text: {c:?}"),
                    Err(e) => panic!("{kind}: {e}"),
                }
            }
            prop_assert!(done, "{} ended without its final event", kind);
            prop_assert_eq!(&text, &want, "{}", kind);
        }
    }
}
