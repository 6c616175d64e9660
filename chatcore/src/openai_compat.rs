//! OpenAI's chat completions protocol as clients speak it to chatcore
//! (`POST /v1/chat/completions`): the request parsed into our provider
//! types with every refusal naming its parameter, and the reply shapes
//! (`chat.completion`, `chat.completion.chunk`, the error body) built
//! exactly as the official SDKs read them. Pure: no I/O, no HTTP.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat>.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::provider::{
    ChatMessage, ImagePart, ResponseFormat, Role, ToolCall, ToolChoice, ToolDefinition, Usage,
};

/// A chat completions request body. Fields we do not know are kept in
/// `unknown` (OpenAI's clients send fields a server may ignore).
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The bot, by slug or id: bots are models.
    pub model: String,
    /// The conversation as the client keeps it.
    pub messages: Vec<InMessage>,
    /// Sampling temperature (0..=2).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Legacy token bound.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Token bound (wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// A stop sequence or up to four.
    #[serde(default)]
    pub stop: Option<Value>,
    /// Sampling seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Presence penalty (-2..=2).
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty (-2..=2).
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Stream the answer as chunks.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `{"include_usage": true}`.
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `auto`, `none`, `required` or a function.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether several calls may come at once.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `text`, `json_object` or `json_schema`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// The end user.
    #[serde(default)]
    pub user: Option<String>,
    /// Number of choices: only 1.
    #[serde(default)]
    pub n: Option<u32>,
    /// Everything else, ignored (and logged at debug by the caller).
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// A message of a request.
#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, an array of parts, or null (an assistant's tool calls).
    #[serde(default)]
    pub content: Value,
    /// An assistant's tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// A refusal of a request, naming the parameter (OpenAI's `param`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    /// The parameter, e.g. `messages[2].content[1]`.
    pub param: String,
    /// What is wrong.
    pub message: String,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> ParamError {
    ParamError {
        param: param.into(),
        message: message.into(),
    }
}

/// What a request asks, in our terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The bot.
    pub model: String,
    /// The client's messages (the bot's system prompt goes before them).
    pub messages: Vec<ChatMessage>,
    /// Whether any message carries an image.
    pub has_images: bool,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Token bound.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed.
    pub seed: Option<i64>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Tools.
    pub tools: Vec<ToolDefinition>,
    /// Tool choice.
    pub tool_choice: Option<ToolChoice>,
    /// Parallel calls allowed.
    pub parallel_tool_calls: Option<bool>,
    /// Answer format.
    pub response_format: Option<ResponseFormat>,
    /// Stream.
    pub stream: bool,
    /// A final usage chunk when streaming.
    pub include_usage: bool,
    /// End user id.
    pub user: Option<String>,
    /// Names of the fields ignored.
    pub ignored: Vec<String>,
}

fn text_of_parts(
    param: &str,
    v: &Value,
    allow_images: bool,
) -> Result<(String, Vec<ImagePart>), ParamError> {
    match v {
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut images = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let at = format!("{param}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&at, "a text part needs `text`"))?;
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    Some("image_url") if allow_images => {
                        let img = p.get("image_url");
                        let url = img
                            .and_then(|i| i.get("url").or(Some(i)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(&at, "an image_url part needs `image_url.url`"))?;
                        let part = ImagePart {
                            url: url.to_owned(),
                            detail: img
                                .and_then(|i| i.get("detail"))
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        };
                        let ok = url.starts_with("https://")
                            || part.data().is_some_and(|(m, _)| m.starts_with("image/"));
                        if !ok {
                            return Err(bad(
                                &at,
                                "an image must be an https: URL or a data:image/...;base64 URL",
                            ));
                        }
                        images.push(part);
                    }
                    Some("image_url") => {
                        return Err(bad(&at, "only user messages may carry images"));
                    }
                    Some(other) => {
                        return Err(bad(
                            &at,
                            format!("content parts of type {other:?} are not supported"),
                        ));
                    }
                    None => return Err(bad(&at, "a content part needs a `type`")),
                }
            }
            Ok((text, images))
        }
        Value::Null => Ok((String::new(), Vec::new())),
        _ => Err(bad(param, "content must be a string or an array of parts")),
    }
}

fn tool_calls_of(param: &str, calls: &[Value]) -> Result<Vec<ToolCall>, ParamError> {
    calls
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let at = format!("{param}[{k}]");
            let f = c.get("function");
            let get = |v: Option<&Value>, name: &str| {
                v.and_then(|v| v.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| bad(&at, format!("a tool call needs `{name}`")))
            };
            Ok(ToolCall {
                id: get(Some(c), "id")?,
                name: get(f, "name")?,
                arguments: get(f, "arguments")?,
            })
        })
        .collect()
}

fn message(i: usize, m: &InMessage) -> Result<ChatMessage, ParamError> {
    let at = format!("messages[{i}]");
    let content_at = format!("{at}.content");
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(bad(
                format!("{at}.role"),
                format!("unknown role {other:?}: use system, developer, user, assistant or tool"),
            ));
        }
    };
    let (content, images) = text_of_parts(&content_at, &m.content, role == Role::User)?;
    let mut out = ChatMessage::new(role, content);
    out.images = images;
    match role {
        Role::Assistant => {
            if let Some(calls) = &m.tool_calls {
                out.tool_calls = tool_calls_of(&format!("{at}.tool_calls"), calls)?;
            }
            if out.content.is_empty() && out.tool_calls.is_empty() {
                return Err(bad(
                    content_at,
                    "an assistant message needs content or tool_calls",
                ));
            }
        }
        Role::Tool => {
            out.tool_call_id = Some(
                m.tool_call_id
                    .clone()
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| {
                        bad(
                            format!("{at}.tool_call_id"),
                            "a tool message needs tool_call_id",
                        )
                    })?,
            );
        }
        _ => {
            if m.content.is_null() {
                return Err(bad(content_at, "content is required"));
            }
        }
    }
    Ok(out)
}

fn tool(i: usize, t: &Value) -> Result<ToolDefinition, ParamError> {
    let at = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad(
            format!("{at}.type"),
            "only tools of type function are supported",
        ));
    }
    let f = t
        .get("function")
        .ok_or_else(|| bad(format!("{at}.function"), "a tool needs `function`"))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.function.name"), "a function needs a name"))?;
    Ok(ToolDefinition {
        name: name.to_owned(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parameters: f
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    })
}

fn tool_choice(v: &Value) -> Result<ToolChoice, ParamError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad("tool_choice", format!("unknown tool_choice {other:?}"))),
        },
        Value::Object(_) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Function(n.to_owned()))
            .ok_or_else(|| bad("tool_choice", "a function tool_choice needs function.name")),
        _ => Err(bad(
            "tool_choice",
            "tool_choice must be a string or an object",
        )),
    }
}

fn response_format(v: &Value) -> Result<ResponseFormat, ParamError> {
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = v
                .get("json_schema")
                .ok_or_else(|| bad("response_format.json_schema", "json_schema is required"))?;
            let schema = js
                .get("schema")
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| {
                    bad(
                        "response_format.json_schema.schema",
                        "a JSON Schema object is required",
                    )
                })?;
            Ok(ResponseFormat::JsonSchema {
                name: js
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema,
                strict: js.get("strict").and_then(Value::as_bool),
            })
        }
        _ => Err(bad(
            "response_format.type",
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

fn in_range(param: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<(), ParamError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => {
            Err(bad(param, format!("{param} must be between {lo} and {hi}")))
        }
        _ => Ok(()),
    }
}

impl CompletionRequest {
    /// Parses a body; a malformed one names the field that failed.
    pub fn from_json(body: &[u8]) -> Result<Self, ParamError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let r: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let param = if path == "." { String::new() } else { path };
            bad(param, format!("invalid request body: {}", e.inner()))
        })?;
        Ok(r)
    }

    /// Checks the request and turns it into our terms.
    pub fn parse(self) -> Result<Parsed, ParamError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(bad("n", "only n = 1 is supported"));
        }
        if self.model.trim().is_empty() {
            return Err(bad("model", "model (a bot's slug or id) is required"));
        }
        if self.messages.is_empty() {
            return Err(bad("messages", "messages must not be empty"));
        }
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| message(i, m))
            .collect::<Result<Vec<_>, _>>()?;
        if !messages
            .iter()
            .any(|m| m.role == Role::User || m.role == Role::Tool)
        {
            return Err(bad("messages", "messages need a user message"));
        }
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("top_p", self.top_p, 0.0, 1.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        let stop = match &self.stop {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => return Err(bad("stop", "stop must be a string or up to 4 strings")),
        };
        let tools = self
            .tools
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        let tool_choice = self.tool_choice.as_ref().map(tool_choice).transpose()?;
        if let Some(ToolChoice::Function(name)) = &tool_choice
            && !tools.iter().any(|t| &t.name == name)
        {
            return Err(bad(
                "tool_choice",
                format!("tool_choice names {name}, which is not among the tools"),
            ));
        }
        let response_format = self
            .response_format
            .as_ref()
            .map(response_format)
            .transpose()?;
        let stream = self.stream.unwrap_or(false);
        let include_usage = stream
            && self
                .stream_options
                .as_ref()
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        Ok(Parsed {
            has_images: messages.iter().any(|m| !m.images.is_empty()),
            model: self.model,
            messages,
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format,
            stream,
            include_usage,
            user: self.user.filter(|u| !u.is_empty()),
            ignored: self.unknown.keys().cloned().collect(),
        })
    }
}

/// OpenAI's finish reason for ours (`stop`, `length`, `tool_calls`,
/// `content_filter`; anything else is `stop`).
pub fn finish_reason(ours: &str) -> &'static str {
    match ours {
        "length" => "length",
        "tool_calls" => "tool_calls",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    })
}

fn calls_json(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

/// What every reply of one request shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyHead {
    /// `chatcmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// The bot as the client named it.
    pub model: String,
}

/// A `chat.completion` object.
pub fn completion(
    head: &ReplyHead,
    content: &str,
    calls: &[ToolCall],
    finish: &str,
    usage: &Usage,
) -> Value {
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = calls_json(calls);
        if content.is_empty() {
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": head.id,
        "object": "chat.completion",
        "created": head.created,
        "model": head.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(finish)}],
        "usage": usage_json(usage),
    })
}

/// A `chat.completion.chunk` with one choice delta. With `include_usage`
/// it carries `usage: null`, as OpenAI's do.
pub fn chunk(head: &ReplyHead, delta: Value, finish: Option<&str>, include_usage: bool) -> Value {
    let mut v = json!({
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish.map(finish_reason)}],
    });
    if include_usage {
        v["usage"] = Value::Null;
    }
    v
}

/// The last chunk of a stream with `include_usage`: no choices, the usage.
pub fn usage_chunk(head: &ReplyHead, usage: &Usage) -> Value {
    json!({
        "id": head.id,
        "object": "chat.completion.chunk",
        "created": head.created,
        "model": head.model,
        "choices": [],
        "usage": usage_json(usage),
    })
}

/// The delta of a piece of a tool call.
pub fn tool_delta(d: &crate::provider::ToolCallDelta) -> Value {
    let mut call = json!({"index": d.index, "function": {"arguments": d.arguments}});
    if let Some(id) = &d.id {
        call["id"] = id.clone().into();
        call["type"] = "function".into();
    }
    if let Some(name) = &d.name {
        call["function"]["name"] = name.clone().into();
    }
    json!({"tool_calls": [call]})
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
pub fn error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Parsed, ParamError> {
        CompletionRequest::from_json(v.to_string().as_bytes())?.parse()
    }

    #[test]
    fn a_full_request_in_our_terms() {
        let p = parse(json!({
            "model": "helpdesk",
            "messages": [
                {"role": "developer", "content": "Be terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
            ],
            "temperature": 0.2, "max_tokens": 10, "max_completion_tokens": 20,
            "stop": "END", "seed": 3, "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
            "user": "u-1", "n": 1, "logprobs": false, "metadata": {"a": 1}
        }))
        .unwrap();
        assert_eq!(p.model, "helpdesk");
        assert_eq!(p.messages[0], ChatMessage::system("Be terse."));
        assert_eq!(p.messages[1].content, "What is this?");
        assert_eq!(p.messages[1].images[0].detail.as_deref(), Some("low"));
        assert!(p.has_images);
        assert_eq!(p.messages[2].tool_calls[0].name, "look");
        assert_eq!(p.messages[3], ChatMessage::tool_result("call_1", "a cat"));
        assert_eq!(p.max_tokens, Some(20), "max_completion_tokens wins");
        assert_eq!(p.stop, ["END"]);
        assert_eq!(p.tool_choice, Some(ToolChoice::Function("look".into())));
        assert!(p.stream && p.include_usage);
        assert!(matches!(
            p.response_format,
            Some(ResponseFormat::JsonSchema {
                strict: Some(true),
                ..
            })
        ));
        let mut ignored = p.ignored.clone();
        ignored.sort();
        assert_eq!(ignored, ["logprobs", "metadata"]);
    }

    #[test]
    fn refusals_name_their_parameter() {
        let base = || json!({"model": "b", "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base();
            b[k] = v;
            b
        };
        let cases = [
            (with("n", json!(2)), "n"),
            (with("model", json!(" ")), "model"),
            (with("messages", json!([])), "messages"),
            (
                with("messages", json!([{"role": "wizard", "content": "x"}])),
                "messages[0].role",
            ),
            (
                with(
                    "messages",
                    json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]),
                ),
                "messages[0].content[0]",
            ),
            (
                with(
                    "messages",
                    json!([{"role": "user", "content": "a"}, {"role": "tool", "content": "r"}]),
                ),
                "messages[1].tool_call_id",
            ),
            (
                with(
                    "messages",
                    json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": null}]),
                ),
                "messages[1].content",
            ),
            (
                with(
                    "messages",
                    json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}, {"role": "user", "content": "a"}]),
                ),
                "messages[0].content[0]",
            ),
            (with("temperature", json!(3)), "temperature"),
            (with("stop", json!(["a", "b", "c", "d", "e"])), "stop"),
            (
                with("tools", json!([{"type": "retrieval"}])),
                "tools[0].type",
            ),
            (with("tool_choice", json!("sometimes")), "tool_choice"),
            (
                with(
                    "tool_choice",
                    json!({"type": "function", "function": {"name": "nope"}}),
                ),
                "tool_choice",
            ),
            (
                with("response_format", json!({"type": "yaml"})),
                "response_format.type",
            ),
            (
                with(
                    "response_format",
                    json!({"type": "json_schema", "json_schema": {"name": "x"}}),
                ),
                "response_format.json_schema.schema",
            ),
            (with("max_tokens", json!("ten")), "max_tokens"),
        ];
        for (body, param) in cases {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.param, param, "{body}: {e:?}");
        }
        let e = CompletionRequest::from_json(b"{\"model\": \"b\"}").unwrap_err();
        assert!(e.message.contains("messages"), "{e:?}");
    }

    #[test]
    fn reply_shapes_are_openais() {
        let head = ReplyHead {
            id: "chatcmpl-1".into(),
            created: 1_700_000_000,
            model: "helpdesk".into(),
        };
        let calls = vec![ToolCall {
            id: "call_1".into(),
            name: "look".into(),
            arguments: "{}".into(),
        }];
        let c = completion(&head, "", &calls, "tool_calls", &Usage::reported(3, 4));
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "look"
        );
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            c["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        let c = completion(&head, "hi", &[], "end_turn", &Usage::default());
        assert_eq!(c["choices"][0]["message"]["content"], "hi");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        let ch = chunk(&head, json!({"content": "h"}), None, true);
        assert_eq!(ch["usage"], Value::Null);
        assert!(ch.get("usage").is_some());
        assert!(
            chunk(&head, json!({}), Some("stop"), false)
                .get("usage")
                .is_none()
        );
        let u = usage_chunk(&head, &Usage::reported(1, 2));
        assert_eq!(u["choices"], json!([]));
        let d = tool_delta(&crate::provider::ToolCallDelta {
            index: 1,
            id: Some("call_2".into()),
            name: Some("look".into()),
            arguments: String::new(),
        });
        assert_eq!(
            d,
            json!({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "look", "arguments": ""}}]})
        );
        assert_eq!(
            error("no", "invalid_request_error", Some("n"), None),
            json!({"error": {"message": "no", "type": "invalid_request_error", "param": "n", "code": null}})
        );
    }
}
