//! Turning a vendor's SSE byte stream into [`ChatEvent`]s.
//!
//! The bytes are split into SSE events by `eventsource-stream`; a vendor's
//! decoder turns each event into deltas and, at the end, the final event.
//! The driver here owns what is common: the text so far (for
//! [`ProviderError::StreamInterrupted`] and usage estimates), the single
//! final event, and the rule that nothing follows it.

use std::collections::VecDeque;

use bytes::Bytes;
use eventsource_stream::{Event, EventStream, EventStreamError, Eventsource};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::{
    ChatEvent, ChatMessage, ChatStream, FinishReason, ProviderError, StreamEnd, ToolCallDelta,
    Usage,
};

/// What a stream decoder needs to know about the call it decodes.
#[derive(Debug, Clone)]
pub struct StreamContext {
    /// Provider kind, reported in the final event and errors.
    pub provider: String,
    /// Requested model, reported when the vendor names none and used for
    /// token estimates.
    pub model: String,
    /// The request's messages, to estimate prompt tokens when the vendor
    /// reports no usage.
    pub prompt: Vec<ChatMessage>,
}

impl StreamContext {
    /// A context for a call of `provider` with `model` and `prompt`.
    pub fn new(
        provider: impl Into<String>,
        model: impl Into<String>,
        prompt: Vec<ChatMessage>,
    ) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            prompt,
        }
    }
}

/// Where a decoder puts what it decoded.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) ctx: StreamContext,
    text: String,
    /// Tool names and arguments streamed, for usage estimates.
    tool_text: String,
    /// How many tool calls have started.
    tool_calls: u32,
    out: VecDeque<ChatEvent>,
    done: bool,
}

impl Sink {
    pub(crate) fn new(ctx: StreamContext) -> Self {
        Self {
            ctx,
            text: String::new(),
            tool_text: String::new(),
            tool_calls: 0,
            out: VecDeque::new(),
            done: false,
        }
    }

    /// Emits a piece of text (empty pieces are dropped).
    pub(crate) fn delta(&mut self, text: &str) {
        if !text.is_empty() && !self.done {
            self.text.push_str(text);
            self.out.push_back(ChatEvent::Delta(text.to_owned()));
        }
    }

    /// Starts tool call number [`Sink::tool_calls_started`] with its id
    /// and name (and perhaps a first piece of its arguments); returns its
    /// index.
    pub(crate) fn tool_start(&mut self, id: String, name: String, arguments: &str) -> u32 {
        let index = self.tool_calls;
        self.tool_calls += 1;
        if !self.done {
            self.tool_text.push_str(&name);
            self.tool_text.push_str(arguments);
            self.out.push_back(ChatEvent::ToolCall(ToolCallDelta {
                index,
                id: Some(id),
                name: Some(name),
                arguments: arguments.to_owned(),
            }));
        }
        index
    }

    /// Emits a fragment of the arguments of tool call `index`.
    pub(crate) fn tool_arguments(&mut self, index: u32, fragment: &str) {
        if !fragment.is_empty() && !self.done {
            self.tool_text.push_str(fragment);
            self.out.push_back(ChatEvent::ToolCall(ToolCallDelta {
                index,
                id: None,
                name: None,
                arguments: fragment.to_owned(),
            }));
        }
    }

    /// How many tool calls have started.
    pub(crate) fn tool_calls_started(&self) -> u32 {
        self.tool_calls
    }

    /// Emits the final event; usage is estimated when the vendor gave none.
    pub(crate) fn finish(
        &mut self,
        usage: Option<Usage>,
        finish_reason: FinishReason,
        model: Option<String>,
    ) {
        if self.done {
            return;
        }
        let model = model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.ctx.model.clone());
        let usage = usage.unwrap_or_else(|| {
            let generated = format!("{}{}", self.text, self.tool_text);
            super::tokens::estimate_usage(&model, &self.ctx.prompt, &generated)
        });
        self.out.push_back(ChatEvent::Done(StreamEnd {
            usage,
            finish_reason,
            provider: self.ctx.provider.clone(),
            model,
        }));
        self.done = true;
    }
}

/// A vendor's SSE decoder.
pub(crate) trait SseDecoder: Send + 'static {
    /// Handles one SSE event. An error ends the stream (the driver wraps
    /// it in [`ProviderError::StreamInterrupted`] if text was emitted).
    fn on_event(&mut self, event: &Event, sink: &mut Sink) -> Result<(), ProviderError>;

    /// The bytes ended. Call [`Sink::finish`] if the stream is complete
    /// without an explicit end marker (Gemini); otherwise the driver
    /// reports an interrupted stream.
    fn on_end(&mut self, sink: &mut Sink) {
        let _ = sink;
    }
}

struct Driver<D> {
    events: EventStream<BoxStream<'static, Result<Bytes, ProviderError>>>,
    decoder: D,
    sink: Sink,
    ended: bool,
    pending_error: Option<ProviderError>,
}

fn map_sse_error(provider: &str, e: EventStreamError<ProviderError>) -> ProviderError {
    match e {
        EventStreamError::Transport(e) => e,
        EventStreamError::Utf8(e) => ProviderError::InvalidResponse {
            provider: provider.to_owned(),
            message: format!("stream is not UTF-8: {e}"),
            source: super::error::clean_cause(e, None),
        },
        EventStreamError::Parser(e) => ProviderError::InvalidResponse {
            provider: provider.to_owned(),
            message: super::redact(&format!("malformed SSE: {e}"), None),
            source: super::error::clean_cause(e, None),
        },
    }
}

/// Decodes an SSE byte stream with `decoder`.
pub(crate) fn drive<S, D>(bytes: S, decoder: D, ctx: StreamContext) -> ChatStream
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
    D: SseDecoder,
{
    let driver = Driver {
        events: bytes.boxed().eventsource(),
        decoder,
        sink: Sink::new(ctx),
        ended: false,
        pending_error: None,
    };
    Box::pin(futures::stream::unfold(driver, |mut d| async move {
        loop {
            // Deltas decoded before a failure still reach the caller, then
            // the failure (which carries them as its partial text).
            if let Some(ev) = d.sink.out.pop_front() {
                return Some((Ok(ev), d));
            }
            if let Some(e) = d.pending_error.take() {
                return Some((Err(e), d));
            }
            if d.sink.done && !d.ended {
                // Read the (usually empty) rest of the body, so that the
                // connection goes back to the pool: a caller that reads the
                // stream to its end after the final event reuses it.
                d.ended = true;
                while let Some(Ok(_)) = d.events.next().await {}
            }
            if d.sink.done || d.ended {
                return None;
            }
            match d.events.next().await {
                Some(Ok(event)) => {
                    if let Err(e) = d.decoder.on_event(&event, &mut d.sink) {
                        d.ended = true;
                        d.pending_error = Some(e.interrupting(&d.sink.ctx.provider, &d.sink.text));
                    }
                }
                Some(Err(e)) => {
                    d.ended = true;
                    let provider = d.sink.ctx.provider.clone();
                    d.pending_error =
                        Some(map_sse_error(&provider, e).interrupting(&provider, &d.sink.text));
                }
                None => {
                    d.ended = true;
                    d.decoder.on_end(&mut d.sink);
                    if !d.sink.done {
                        d.pending_error = Some(ProviderError::StreamInterrupted {
                            provider: d.sink.ctx.provider.clone(),
                            partial: d.sink.text.clone(),
                            cause: None,
                        });
                    }
                }
            }
        }
    }))
}
