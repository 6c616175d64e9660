//! Parsing a long streamed reply, bytes in, `ChatEvent`s out, for each
//! vendor's SSE format (no network: the pure `parse_stream` functions).
//!
//! ```sh
//! cargo bench -p chatcore-benches --bench provider_parse -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Throughput is reported in events (deltas plus the final event) per
//! second.

use bytes::Bytes;
use chatcore::provider::{
    ChatEvent, ChatMessage, ProviderError, StreamContext, anthropic, gemini, openai,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use serde_json::json;

/// Deltas per reply.
const DELTAS: usize = 2_000;
/// Bytes per network read.
const READ: usize = 1_460;

fn word(i: usize) -> String {
    format!("word{} ", i % 97)
}

fn openai_body() -> String {
    let mut s = String::new();
    for i in 0..DELTAS {
        let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": word(i)}, "logprobs": null, "finish_reason": null}], "usage": null});
        s.push_str(&format!("data: {v}\n\n"));
    }
    let fin = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null});
    let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": DELTAS, "total_tokens": DELTAS + 10}});
    s.push_str(&format!("data: {fin}\n\ndata: {usage}\n\ndata: [DONE]\n\n"));
    s
}

fn anthropic_body() -> String {
    let ev = |k: &str, v: serde_json::Value| format!("event: {k}\ndata: {v}\n\n");
    let mut s = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    );
    s.push_str(&ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    for i in 0..DELTAS {
        if i % 200 == 0 {
            s.push_str(&ev("ping", json!({"type": "ping"})));
        }
        s.push_str(&ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word(i)}}),
        ));
    }
    s.push_str(&ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    s.push_str(&ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": DELTAS}}),
    ));
    s.push_str(&ev("message_stop", json!({"type": "message_stop"})));
    s
}

fn gemini_body() -> String {
    let mut s = String::new();
    for i in 0..DELTAS {
        let mut cand =
            json!({"content": {"parts": [{"text": word(i)}], "role": "model"}, "index": 0});
        if i + 1 == DELTAS {
            cand["finishReason"] = json!("STOP");
        }
        let v = json!({"candidates": [cand],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": i + 1, "totalTokenCount": i + 11},
            "modelVersion": "gemini-2.0-flash", "responseId": "r1"});
        s.push_str(&format!("data: {v}\r\n\r\n"));
    }
    s
}

fn chunks(body: &str) -> Vec<Bytes> {
    body.as_bytes()
        .chunks(READ)
        .map(Bytes::copy_from_slice)
        .collect()
}

type Parser = fn(
    futures::stream::Iter<std::vec::IntoIter<Result<Bytes, ProviderError>>>,
    StreamContext,
) -> chatcore::provider::ChatStream;

async fn parse(parser: Parser, chunks: &[Bytes]) -> usize {
    let input: Vec<Result<Bytes, ProviderError>> = chunks.iter().cloned().map(Ok).collect();
    let ctx = StreamContext::new("bench", "gpt-4o", vec![ChatMessage::user("hi")]);
    let mut s = parser(futures::stream::iter(input), ctx);
    let mut n = 0;
    while let Some(ev) = s.next().await {
        match ev.expect("valid stream") {
            ChatEvent::Delta(_) | ChatEvent::ToolCall(_) | ChatEvent::Done(_) => n += 1,
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let vendors: [(&str, String, Parser); 3] = [
        ("openai", openai_body(), openai::parse_stream),
        ("anthropic", anthropic_body(), anthropic::parse_stream),
        ("gemini", gemini_body(), gemini::parse_stream),
    ];
    let mut group = c.benchmark_group("provider_parse");
    for (name, body, parser) in vendors {
        let chunks = chunks(&body);
        // Check once that the parse is complete and right.
        let events = rt.block_on(parse(parser, &chunks));
        assert_eq!(events, DELTAS + 1, "{name}");
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(name, |b| b.to_async(&rt).iter(|| parse(parser, &chunks)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
