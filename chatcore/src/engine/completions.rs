//! Turns whose client holds the conversation: the OpenAI-compatible API
//! (`/v1/chat/completions`). The client sends every message each time; the
//! bot applies as in `/v1/chat` (its system prompt first, then its context
//! retrieved for the last user message, guardrails, limits, audit, retries
//! and fallback); each request is one stored turn (what the client sent
//! after the last assistant message: tool results, then its last user
//! message; and the reply, with its tool calls).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::prompt::client_prompt;
use super::{Caller, ChatError, ChatReply, ChatService, Outcome, Turn, TurnEvent, Who, authorize};
use crate::auth::Principal;
use crate::domain::{Bot, BotStatus, Channel, ConversationId, Permission};
use crate::provider::{
    ChatMessage, ChatRequest, ResponseFormat, Role, ToolChoice, ToolDefinition, await_first_token,
};
use crate::store::{NewConversation, NewTurn, PageRequest, ToolResult, TurnConversation};

/// What a client may set on a turn, on top of the bot's own settings.
#[derive(Debug, Clone, Default)]
pub struct TurnOptions {
    /// Sampling temperature (the bot's when unset).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Most tokens to generate: never more than the bot's own cap.
    pub max_tokens: Option<u32>,
    /// Sequences that end generation.
    pub stop: Vec<String>,
    /// Seed for repeatable sampling.
    pub seed: Option<i64>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool the model must call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools at once.
    pub parallel_tool_calls: Option<bool>,
    /// The shape of the answer.
    pub response_format: Option<ResponseFormat>,
}

/// One turn of a conversation the client holds.
#[derive(Debug, Clone, Default)]
pub struct CompletionInput {
    /// Bot id or slug (the OpenAI `model`).
    pub bot: String,
    /// The conversation as the client sends it, oldest first.
    pub messages: Vec<ChatMessage>,
    /// The client's settings.
    pub options: TurnOptions,
    /// The stored conversation to add the turn to; none starts one.
    pub conversation_id: Option<String>,
    /// End user id.
    pub user_id: Option<String>,
    /// Request id for the audit log.
    pub request_id: Option<String>,
}

/// What a client-held turn stores and answers to, read from its messages.
struct Sent<'a> {
    /// The last user message of the conversation (guardrails, retrieval).
    last_user: &'a str,
    /// The user message after the last assistant message, if any (stored).
    new_user: Option<&'a str>,
    /// The tool results after the last assistant message (stored).
    tool_results: Vec<ToolResult>,
}

/// Checks a client-held turn's input and finds what it sends.
fn read_input<'a>(
    settings: &super::ChatSettings,
    input: &'a CompletionInput,
) -> Result<(Sent<'a>, Option<ConversationId>), ChatError> {
    use crate::text::{check_opt, check_text};
    check_text("model", &input.bot)?;
    check_opt("user", input.user_id.as_deref())?;
    check_opt("conversation_id", input.conversation_id.as_deref())?;
    for (i, m) in input.messages.iter().enumerate() {
        check_text(&format!("messages[{i}].content"), &m.content)?;
    }
    if input.bot.trim().is_empty() {
        return Err(ChatError::InvalidRequest("model: must not be empty".into()));
    }
    if let Some(u) = &input.user_id
        && (u.is_empty() || u.len() > 256)
    {
        return Err(ChatError::InvalidRequest(
            "user: must be 1 to 256 characters".into(),
        ));
    }
    let conversation_id = match &input.conversation_id {
        Some(c) => Some(c.parse::<ConversationId>().map_err(|_| {
            ChatError::InvalidRequest(
                "X-Chatcore-Conversation-Id: not a valid conversation id".into(),
            )
        })?),
        None => None,
    };
    let last_assistant = input
        .messages
        .iter()
        .rposition(|m| m.role == Role::Assistant);
    let tail = &input.messages[last_assistant.map_or(0, |i| i + 1)..];
    let new_user = tail
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str());
    let tool_results: Vec<ToolResult> = tail
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| ToolResult {
            tool_call_id: m.tool_call_id.clone().unwrap_or_default(),
            content: m.content.clone(),
        })
        .collect();
    if new_user.is_none() && tool_results.is_empty() {
        return Err(ChatError::InvalidRequest(
            "messages: the conversation must end with a user message or tool results".into(),
        ));
    }
    let last_user = input
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
    if let Some(u) = new_user
        && u.chars().count() > settings.max_message_chars
    {
        return Err(ChatError::InvalidRequest(format!(
            "messages: the last user message is longer than {} characters",
            settings.max_message_chars
        )));
    }
    Ok((
        Sent {
            last_user,
            new_user,
            tool_results,
        },
        conversation_id,
    ))
}

impl ChatService {
    /// Everything before the provider is called, for a client-held turn.
    async fn prepare_completion(
        &self,
        caller: Caller,
        input: CompletionInput,
    ) -> Result<Turn, ChatError> {
        let started = Instant::now();
        let (sent, conversation_id) = read_input(&self.settings, &input)?;
        let entry = self.resolve(&caller, input.bot.trim()).await?;
        super::record_entry(&entry);
        let api_key_id = authorize(&entry, &caller, sent.last_user)?;
        let caps = entry.provider.capabilities();
        if !caps.images
            && let Some((i, _)) = input
                .messages
                .iter()
                .enumerate()
                .find(|(_, m)| !m.images.is_empty())
        {
            return Err(ChatError::InvalidRequest(format!(
                "messages[{i}].content: this bot's provider does not read images (image_url parts)"
            )));
        }
        if !caps.tools && !input.options.tools.is_empty() {
            return Err(ChatError::InvalidRequest(
                "tools: this bot's provider does not call tools".into(),
            ));
        }
        let who = Who {
            caller: &caller,
            tenant: entry.tenant.id,
            request_id: input.request_id.as_deref(),
        };
        self.check_limits(&who, &entry).await?;
        let channel = match caller {
            Caller::Public { .. } => Channel::Public,
            Caller::Key { .. } => Channel::Api,
        };
        let existing = match conversation_id {
            Some(id) => Some(
                self.owned_conversation(&entry, channel, id, input.user_id.as_deref())
                    .await?,
            ),
            None => None,
        };
        let sources = self.retrieve(&entry, sent.last_user).await?;
        let bot = &entry.bot;
        let new_user = sent.new_user.map(str::to_string);
        let tool_results = sent.tool_results;
        let title_from = new_user
            .clone()
            .unwrap_or_else(|| sent.last_user.to_string());
        let prompt = client_prompt(
            &entry.model_hint,
            &bot.system_prompt,
            sources,
            input.messages,
            &title_from,
            bot.context_tokens.max(1) as usize,
        );
        self.limit(
            &who,
            format!("t:{}:tpm", entry.tenant.id),
            Self::quota(entry.tenant.rate_limit_tpm),
            prompt.tokens as u32,
            "tenant_tokens",
        )
        .await?;

        let cap = bot.max_tokens.and_then(|m| u32::try_from(m).ok());
        let budget = self
            .reserve_budget(
                &entry,
                api_key_id,
                input.user_id.as_deref(),
                prompt.tokens as u32,
                match (input.options.max_tokens, cap) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            )
            .await?;
        let conversation = match existing {
            Some(c) => TurnConversation::Existing(c.id),
            None => TurnConversation::New(NewConversation {
                bot_id: bot.id,
                end_user_id: input.user_id.clone(),
                title: Some(title_from.chars().take(80).collect()),
                channel,
            }),
        };
        let (conversation, _sent, assistant) = self
            .store
            .begin_turn(
                entry.tenant.id,
                NewTurn {
                    conversation,
                    user_content: new_user.unwrap_or_default(),
                    tool_results,
                    api_key_id,
                    provider: Some(entry.provider.kind().to_string()),
                    model: bot.model.clone(),
                },
            )
            .await?;

        let o = input.options;
        let mut request = ChatRequest::new(prompt.messages);
        request.model = bot.model.clone();
        request.temperature = o.temperature.or(bot.temperature);
        let cap = bot.max_tokens.and_then(|m| u32::try_from(m).ok());
        request.max_tokens = match (o.max_tokens, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        request.end_user_id = input.user_id.clone();
        request.top_p = o.top_p;
        request.stop = o.stop;
        request.seed = o.seed;
        request.presence_penalty = o.presence_penalty;
        request.frequency_penalty = o.frequency_penalty;
        request.tools = o.tools;
        request.tool_choice = o.tool_choice;
        request.parallel_tool_calls = o.parallel_tool_calls;
        request.response_format = o.response_format;
        self.touch(&caller).await;
        Ok(Turn {
            request_id: input.request_id,
            entry,
            caller,
            conversation,
            assistant: assistant.id,
            request,
            sources: prompt.sources,
            prompt_estimate: prompt.tokens as u32,
            started,
            span: tracing::Span::current(),
            budget,
        })
    }

    /// One complete (not streamed) turn of a conversation the client holds
    /// (the OpenAI-compatible API). The reply carries the model's tool
    /// calls, if it made any.
    pub async fn complete(
        &self,
        caller: Caller,
        input: CompletionInput,
    ) -> Result<ChatReply, ChatError> {
        async {
            let turn = self.prepare_completion(caller, input).await?;
            self.run_complete(turn).await
        }
        .instrument(super::chat_span())
        .await
    }

    /// One streamed turn of a conversation the client holds: events as in
    /// [`ChatService::chat_stream`], with [`TurnEvent::ToolCall`] pieces
    /// when the model calls tools.
    pub async fn complete_stream(
        self: &Arc<Self>,
        caller: Caller,
        input: CompletionInput,
    ) -> Result<mpsc::Receiver<TurnEvent>, ChatError> {
        async {
            let turn = self.prepare_completion(caller, input).await?;
            self.run_stream(turn).await
        }
        .instrument(super::chat_span())
        .await
    }

    /// Calls the provider for a prepared turn and finishes it.
    pub(super) async fn run_complete(&self, turn: Turn) -> Result<ChatReply, ChatError> {
        let resp = match turn.entry.provider.complete(&turn.request).await {
            Ok(r) => r,
            Err(e) => {
                self.finish(
                    &turn,
                    Outcome::Failed {
                        partial: String::new(),
                        error: ChatError::Provider(e.clone()),
                        ttft: None,
                    },
                )
                .await?;
                return Err(ChatError::Provider(e));
            }
        };
        let finish_reason = resp.finish_reason.as_str().to_string();
        let done = self
            .finish(
                &turn,
                Outcome::Complete {
                    content: resp.content.clone(),
                    usage: resp.usage,
                    provider: resp.provider.clone(),
                    model: resp.model.clone(),
                    finish_reason: finish_reason.clone(),
                    ttft: None,
                    tool_calls: resp.tool_calls.clone(),
                },
            )
            .await?;
        Ok(ChatReply {
            conversation_id: turn.conversation.id,
            message_id: turn.assistant,
            bot_id: turn.entry.bot.id,
            content: resp.content,
            provider: resp.provider,
            model: resp.model,
            finish_reason,
            usage: done.usage.into(),
            response_time_ms: done.elapsed.as_millis() as u64,
            sources: turn.sources,
            tenant_id: turn.entry.tenant.id,
            tool_calls: resp.tool_calls,
            cost: done.cost.into(),
        })
    }

    /// Opens the provider's stream for a prepared turn (to its first token)
    /// and hands it to a task that drives it.
    pub(super) async fn run_stream(
        self: &Arc<Self>,
        turn: Turn,
    ) -> Result<mpsc::Receiver<TurnEvent>, ChatError> {
        let opened = match turn.entry.provider.stream(&turn.request).await {
            Ok(s) => await_first_token(s).await,
            Err(e) => Err(e),
        };
        let stream = match opened {
            Ok(s) => s,
            Err(e) => {
                let public = ChatError::Provider(e.clone());
                self.finish(
                    &turn,
                    Outcome::Failed {
                        partial: String::new(),
                        error: ChatError::Provider(e),
                        ttft: None,
                    },
                )
                .await?;
                return Err(public);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let _ = tx.try_send(TurnEvent::Start {
            conversation_id: turn.conversation.id,
            message_id: turn.assistant,
        });
        let this = self.clone();
        let span = turn.span.clone();
        self.tasks
            .spawn(async move { this.drive(turn, stream, tx).await }.instrument(span));
        Ok(rx)
    }

    /// The bots a key may chat with, as models (the OpenAI-compatible
    /// `/v1/models`): active bots of its tenant that the key's bot list and
    /// each bot's `api_key_access` guardrail let it use, oldest first. A
    /// key without the `chat` permission has none.
    pub async fn models(&self, principal: &Arc<Principal>) -> Result<Vec<Bot>, ChatError> {
        let key = &principal.key;
        if !key.allows(Permission::Chat) {
            return Err(ChatError::Forbidden(
                "this API key lacks the chat permission".into(),
            ));
        }
        let tenant = principal.tenant.id;
        let mut bots = Vec::new();
        let mut page = PageRequest {
            limit: PageRequest::MAX_LIMIT,
            cursor: None,
        };
        loop {
            let p = self.store.list_bots(tenant, page.clone()).await?;
            for bot in p.data {
                if bot.status != BotStatus::Active
                    || (!key.bot_ids.is_empty() && !key.bot_ids.contains(&bot.id))
                {
                    continue;
                }
                let scopes = self.store.list_scopes(tenant, bot.id).await?;
                let guard = super::Guardrails::from_scopes(&scopes).map_err(|e| {
                    tracing::error!(bot = %bot.id, error = %e, "a stored scope does not parse");
                    ChatError::internal("bot guardrails are misconfigured")
                })?;
                if guard.key_allowed(key.id) {
                    bots.push(bot);
                }
            }
            match p.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(bots),
            }
        }
    }

    /// One of [`ChatService::models`], by slug or id; not found when the
    /// key may not use it.
    pub async fn model(&self, principal: &Arc<Principal>, bot_ref: &str) -> Result<Bot, ChatError> {
        self.models(principal)
            .await?
            .into_iter()
            .find(|b| b.slug == bot_ref || b.id.to_string() == bot_ref)
            .ok_or(ChatError::NotFound("model"))
    }
}
