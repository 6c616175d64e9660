//! The provider conformance suite: what every [`Provider`] must do.
//!
//! Run it against your provider pointed at a deterministic upstream (a
//! wire-format mock server of your own, or an offline implementation): the
//! suite compares a streamed answer with a complete one, so the same
//! request must produce the same text.
//!
//! ```no_run
//! # async fn demo(provider: std::sync::Arc<dyn chatcore::provider::Provider>) {
//! let report = chatcore::testkit::provider::run_provider_conformance(provider, "my-model").await;
//! println!("{report}");
//! assert!(report.is_ok());
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use futures::StreamExt;

use crate::provider::{
    ChatEvent, ChatMessage, ChatRequest, ChatResponse, EmbedRequest, FinishReason, Provider,
    ProviderError, ResponseFormat, ToolCall, ToolCallBuffer, ToolChoice, ToolDefinition, Usage,
};

/// Settings of a conformance run.
#[derive(Debug, Clone, Default)]
pub struct ConformanceConfig {
    /// The chat model to ask for.
    pub model: String,
    /// The embedding model, if the provider's default should not be used.
    pub embedding_model: Option<String>,
    /// The API key the provider was built with: the suite checks that it
    /// appears in no `Debug` or `Display` output.
    pub secret: Option<String>,
    /// Also check structured output (`json_schema`): the answer, complete
    /// and streamed, is a JSON object with the schema's required field.
    pub structured_output: bool,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// Name of the check.
    pub name: &'static str,
    /// `Err` with what went wrong.
    pub outcome: Result<(), String>,
}

/// The outcome of a conformance run.
#[derive(Debug, Clone)]
pub struct ConformanceReport {
    /// Provider kind.
    pub provider: String,
    /// Each check, in order.
    pub checks: Vec<CheckResult>,
}

impl ConformanceReport {
    /// Whether every check passed.
    pub fn is_ok(&self) -> bool {
        self.checks.iter().all(|c| c.outcome.is_ok())
    }

    /// The failed checks.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| c.outcome.is_err()).collect()
    }

    /// Panics with the failures, for use in tests.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().len();
        writeln!(
            f,
            "provider conformance of {:?}: {} checks, {} failed",
            self.provider,
            self.checks.len(),
            failed
        )?;
        for c in &self.checks {
            match &c.outcome {
                Ok(()) => writeln!(f, "  ok   {}", c.name)?,
                Err(e) => writeln!(f, "  FAIL {}: {e}", c.name)?,
            }
        }
        Ok(())
    }
}

/// Runs the suite with `model` and no known secret.
pub async fn run_provider_conformance(
    provider: Arc<dyn Provider>,
    model: &str,
) -> ConformanceReport {
    run_provider_conformance_with(
        provider,
        ConformanceConfig {
            model: model.to_owned(),
            ..ConformanceConfig::default()
        },
    )
    .await
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

fn check_usage(u: &Usage, what: &str) -> Result<(), String> {
    ensure!(u.prompt_tokens > 0, "{what}: prompt_tokens is 0 ({u:?})");
    ensure!(
        u.completion_tokens > 0,
        "{what}: completion_tokens is 0 ({u:?})"
    );
    ensure!(
        u.total_tokens == u.prompt_tokens + u.completion_tokens,
        "{what}: total_tokens {} != prompt {} + completion {}",
        u.total_tokens,
        u.prompt_tokens,
        u.completion_tokens
    );
    Ok(())
}

fn check_secret(secret: Option<&str>, text: &str, what: &str) -> Result<(), String> {
    if let Some(s) = secret {
        ensure!(!text.contains(s), "{what} contains the API key");
    }
    Ok(())
}

fn base_request(model: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::system("You are the subject of a conformance test. Answer briefly."),
        ChatMessage::user("Please say hello to the conformance suite."),
    ])
    .with_model(model)
    .with_temperature(0.0)
    .with_max_tokens(128)
}

/// Runs the suite with these settings.
pub async fn run_provider_conformance_with(
    provider: Arc<dyn Provider>,
    config: ConformanceConfig,
) -> ConformanceReport {
    let mut checks = Vec::new();
    let secret = config.secret.as_deref();
    let p = provider.as_ref();
    let caps = p.capabilities();

    checks.push(CheckResult {
        name: "capabilities: chat",
        outcome: if caps.chat {
            Ok(())
        } else {
            Err(format!("capabilities {caps:?} do not include chat"))
        },
    });

    // complete
    let request = base_request(&config.model);
    let complete = p.complete(&request).await;
    let outcome = (|| {
        let r: &ChatResponse = complete
            .as_ref()
            .map_err(|e| format!("complete failed: {e}"))?;
        ensure!(!r.content.is_empty(), "complete returned no text");
        ensure!(!r.provider.is_empty(), "complete names no provider");
        ensure!(!r.model.is_empty(), "complete names no model");
        check_usage(&r.usage, "complete")
    })();
    checks.push(CheckResult {
        name: "complete: text, provider, model, usage",
        outcome,
    });

    // stream
    let outcome = async {
        let mut stream = p
            .stream(&request)
            .await
            .map_err(|e| format!("stream failed: {e}"))?;
        let mut text = String::new();
        let mut deltas = 0;
        let mut end = None;
        while let Some(item) = stream.next().await {
            let ev = item.map_err(|e| format!("stream item failed after {deltas} deltas: {e}"))?;
            ensure!(end.is_none(), "an event follows the final event: {ev:?}");
            match ev {
                ChatEvent::Delta(t) => {
                    ensure!(!t.is_empty(), "empty delta");
                    deltas += 1;
                    text.push_str(&t);
                }
                ChatEvent::ToolCall(d) => {
                    return Err(format!("a tool call without tools in the request: {d:?}"));
                }
                ChatEvent::Done(e) => end = Some(e),
            }
        }
        let end = end.ok_or("the stream ended without a final event")?;
        ensure!(deltas > 0, "the stream had no delta");
        check_usage(&end.usage, "stream final event")?;
        if let Ok(c) = &complete {
            ensure!(
                text == c.content,
                "streamed text {text:?} differs from the complete text {:?}",
                c.content
            );
            ensure!(
                end.provider == c.provider,
                "stream provider {:?} != complete provider {:?}",
                end.provider,
                c.provider
            );
            ensure!(
                end.model == c.model,
                "stream model {:?} != complete model {:?}",
                end.model,
                c.model
            );
            ensure!(
                end.usage.prompt_tokens == c.usage.prompt_tokens,
                "stream prompt tokens {} != complete prompt tokens {}",
                end.usage.prompt_tokens,
                c.usage.prompt_tokens
            );
            ensure!(
                end.finish_reason == c.finish_reason,
                "stream finish {:?} != complete finish {:?}",
                end.finish_reason,
                c.finish_reason
            );
        }
        Ok(())
    }
    .await;
    checks.push(CheckResult {
        name: "stream: deltas, then exactly one final event, same text as complete",
        outcome,
    });

    // multi-turn
    let multi = ChatRequest::new(vec![
        ChatMessage::user("My name is Ada."),
        ChatMessage::assistant("Hello Ada."),
        ChatMessage::user("What is my name?"),
    ])
    .with_model(&config.model);
    let outcome = match p.complete(&multi).await {
        Ok(r) if !r.content.is_empty() => Ok(()),
        Ok(_) => Err("multi-turn complete returned no text".to_owned()),
        Err(e) => Err(format!("multi-turn complete failed: {e}")),
    };
    checks.push(CheckResult {
        name: "complete: multi-turn conversation",
        outcome,
    });

    // concurrency (one instance shared by tasks)
    let outcome = async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let provider = provider.clone();
                let request = request.clone();
                tokio::spawn(async move { provider.complete(&request).await })
            })
            .collect();
        for t in tasks {
            let r = t.await.map_err(|e| format!("task panicked: {e}"))?;
            let r = r.map_err(|e| format!("concurrent complete failed: {e}"))?;
            if let Ok(c) = &complete {
                ensure!(r.content == c.content, "concurrent answer differs");
            }
        }
        Ok(())
    }
    .await;
    checks.push(CheckResult {
        name: "complete: concurrent calls on one instance",
        outcome,
    });

    // invalid request, rejected before any network call
    let mut errors: Vec<ProviderError> = Vec::new();
    let outcome = match p
        .complete(&ChatRequest::new(Vec::new()).with_model(&config.model))
        .await
    {
        Err(e @ ProviderError::InvalidRequest { .. }) => {
            errors.push(e);
            Ok(())
        }
        Err(e) => Err(format!(
            "a request without messages gave {e:?}, not InvalidRequest"
        )),
        Ok(_) => Err("a request without messages succeeded".to_owned()),
    };
    checks.push(CheckResult {
        name: "complete: a request without messages is InvalidRequest",
        outcome,
    });

    // embeddings
    let mut embed = EmbedRequest::new(vec![
        "the cat sat on the mat".to_owned(),
        "a cat sat on a mat".to_owned(),
        "interest rates rose sharply".to_owned(),
    ]);
    embed.model = config.embedding_model.clone();
    let outcome = match (caps.embeddings, p.embed(&embed).await) {
        (true, Ok(r)) => (|| {
            ensure!(
                r.vectors.len() == 3,
                "{} vectors for 3 inputs",
                r.vectors.len()
            );
            let dim = r.vectors[0].len();
            ensure!(dim > 0, "empty vectors");
            ensure!(
                r.vectors.iter().all(|v| v.len() == dim),
                "vectors of different dimensions"
            );
            ensure!(
                r.vectors.iter().flatten().all(|x| x.is_finite()),
                "non-finite values"
            );
            ensure!(
                r.vectors[0] != r.vectors[2],
                "different texts gave identical vectors"
            );
            Ok(())
        })(),
        (true, Err(e)) => Err(format!("embeddings are advertised but failed: {e}")),
        (false, Err(e @ ProviderError::Unsupported { .. })) => {
            errors.push(e);
            Ok(())
        }
        (false, Err(e)) => Err(format!(
            "embeddings are not advertised; expected Unsupported, got {e:?}"
        )),
        (false, Ok(_)) => Err("embeddings are not advertised but succeeded".to_owned()),
    };
    checks.push(CheckResult {
        name: "embed: one vector per input, same dimension (or Unsupported)",
        outcome,
    });

    if caps.tools {
        tool_checks(p, &config.model, &mut checks).await;
    }
    if config.structured_output {
        structured_checks(p, &config.model, &mut checks).await;
    }

    // redaction
    let outcome = (|| {
        check_secret(secret, &format!("{provider:?}"), "Debug of the provider")?;
        for e in &errors {
            check_secret(secret, &format!("{e:?}"), "Debug of an error")?;
            check_secret(secret, &e.to_string(), "Display of an error")?;
        }
        if let Err(e) = &complete {
            check_secret(secret, &format!("{e:?} {e}"), "the complete error")?;
        }
        Ok(())
    })();
    checks.push(CheckResult {
        name: "redaction: no key in Debug or errors",
        outcome,
    });

    ConformanceReport {
        provider: p.kind().to_owned(),
        checks,
    }
}

fn weather_request(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(vec![
        ChatMessage::system("You are the subject of a conformance test."),
        ChatMessage::user("What is the weather in Paris?"),
    ])
    .with_model(model)
    .with_temperature(0.0)
    .with_max_tokens(128);
    r.tools = vec![ToolDefinition {
        name: "get_weather".to_owned(),
        description: Some("The current weather of a city".to_owned()),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
    }];
    r.tool_choice = Some(ToolChoice::Function("get_weather".to_owned()));
    r
}

fn check_calls(calls: &[ToolCall], what: &str) -> Result<(), String> {
    ensure!(!calls.is_empty(), "{what}: no tool call");
    for c in calls {
        ensure!(!c.id.is_empty(), "{what}: a call without id: {c:?}");
        ensure!(
            c.name == "get_weather",
            "{what}: a call of {:?}, not get_weather",
            c.name
        );
        let args: serde_json::Value = serde_json::from_str(&c.arguments)
            .map_err(|e| format!("{what}: arguments {:?} are not JSON: {e}", c.arguments))?;
        ensure!(
            args.get("city").is_some_and(serde_json::Value::is_string),
            "{what}: arguments {args} have no string `city`"
        );
    }
    Ok(())
}

/// Tool calling: a forced call, complete and streamed (pieces by index,
/// id and name first), then its result sent back.
async fn tool_checks(p: &dyn Provider, model: &str, checks: &mut Vec<CheckResult>) {
    let request = weather_request(model);
    let complete = p.complete(&request).await;
    let outcome = (|| {
        let r = complete
            .as_ref()
            .map_err(|e| format!("complete with tools failed: {e}"))?;
        check_calls(&r.tool_calls, "complete")?;
        ensure!(
            r.finish_reason == FinishReason::ToolCalls,
            "finish reason {:?}, not ToolCalls",
            r.finish_reason
        );
        Ok(())
    })();
    checks.push(CheckResult {
        name: "tools: a forced call, with id, name and JSON arguments",
        outcome,
    });

    let outcome = async {
        let mut stream = p
            .stream(&request)
            .await
            .map_err(|e| format!("stream with tools failed: {e}"))?;
        let mut buffer = ToolCallBuffer::default();
        let mut started: Vec<u32> = Vec::new();
        let mut end = None;
        while let Some(item) = stream.next().await {
            let ev = item.map_err(|e| format!("stream item failed: {e}"))?;
            ensure!(end.is_none(), "an event follows the final event: {ev:?}");
            match ev {
                ChatEvent::ToolCall(d) => {
                    if !started.contains(&d.index) {
                        ensure!(
                            d.id.is_some() && d.name.is_some(),
                            "the first piece of call {} has no id or name: {d:?}",
                            d.index
                        );
                        started.push(d.index);
                    }
                    buffer.push(&d);
                }
                ChatEvent::Delta(_) => {}
                ChatEvent::Done(e) => end = Some(e),
            }
        }
        let end = end.ok_or("the stream ended without a final event")?;
        let calls = buffer.finish();
        check_calls(&calls, "stream")?;
        ensure!(
            end.finish_reason == FinishReason::ToolCalls,
            "stream finish reason {:?}, not ToolCalls",
            end.finish_reason
        );
        if let Ok(c) = &complete {
            let names = |v: &[ToolCall]| -> Vec<(String, String)> {
                v.iter()
                    .map(|c| (c.name.clone(), c.arguments.replace(' ', "")))
                    .collect()
            };
            ensure!(
                names(&calls) == names(&c.tool_calls),
                "streamed calls {calls:?} differ from the complete ones {:?}",
                c.tool_calls
            );
        }
        Ok(())
    }
    .await;
    checks.push(CheckResult {
        name: "tools: streamed calls by index, id and name first, same as complete",
        outcome,
    });

    let outcome = async {
        let calls = complete
            .as_ref()
            .map_err(|_| "no calls to answer".to_owned())?
            .tool_calls
            .clone();
        let mut follow = request.clone();
        follow.tool_choice = Some(ToolChoice::Auto);
        follow
            .messages
            .push(ChatMessage::assistant_tool_calls("", calls.clone()));
        for c in &calls {
            follow.messages.push(ChatMessage::tool_result(
                c.id.clone(),
                r#"{"forecast":"sunny"}"#,
            ));
        }
        let r = p
            .complete(&follow)
            .await
            .map_err(|e| format!("complete after tool results failed: {e}"))?;
        ensure!(
            !r.content.is_empty(),
            "no text after the tool results (finish {:?}, calls {:?})",
            r.finish_reason,
            r.tool_calls
        );
        Ok(())
    }
    .await;
    checks.push(CheckResult {
        name: "tools: results sent back as tool messages get an answer",
        outcome,
    });
}

/// Structured output: `json_schema`, complete and streamed.
async fn structured_checks(p: &dyn Provider, model: &str, checks: &mut Vec<CheckResult>) {
    let mut request = base_request(model);
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "greeting".to_owned(),
        schema: serde_json::json!({
            "type": "object",
            "properties": {"greeting": {"type": "string"}},
            "required": ["greeting"],
            "additionalProperties": false
        }),
        strict: Some(true),
    });
    let parse = |text: &str, what: &str| -> Result<(), String> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("{what}: the answer {text:?} is not JSON: {e}"))?;
        ensure!(
            v.get("greeting").is_some_and(serde_json::Value::is_string),
            "{what}: {v} has no string `greeting`"
        );
        Ok(())
    };
    let outcome = match p.complete(&request).await {
        Ok(r) => parse(&r.content, "complete"),
        Err(e) => Err(format!("complete with json_schema failed: {e}")),
    };
    checks.push(CheckResult {
        name: "structured output: json_schema, complete",
        outcome,
    });
    let outcome = async {
        let mut s = p
            .stream(&request)
            .await
            .map_err(|e| format!("stream with json_schema failed: {e}"))?;
        let mut text = String::new();
        while let Some(item) = s.next().await {
            if let ChatEvent::Delta(d) = item.map_err(|e| format!("stream item failed: {e}"))? {
                text.push_str(&d);
            }
        }
        parse(&text, "stream")
    }
    .await;
    checks.push(CheckResult {
        name: "structured output: json_schema, streamed",
        outcome,
    });
}
