//! What the store keeps for the chat widget (issue 14): a bot's widget
//! settings and secret, and feedback on answers. The rules (what a setting
//! may hold, who may rate) are [`crate::widget`]'s; the store only keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Actor, BotId, ConversationId, MessageId, SealedKey, TenantId};

/// A bot's widget row.
#[derive(Debug, Clone, PartialEq)]
pub struct WidgetRecord {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The bot.
    pub bot_id: BotId,
    /// The settings as validated by [`crate::widget::WidgetSettings`] (JSON).
    pub settings: serde_json::Value,
    /// The widget secret (identity verification), sealed; None: not set.
    pub secret: Option<SealedKey>,
    /// When the secret was set.
    pub secret_created_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A change of a bot's widget row (created when missing). `None` leaves a
/// part as it is.
#[derive(Debug, Clone, Default)]
pub struct WidgetUpdate {
    /// New settings.
    pub settings: Option<serde_json::Value>,
    /// A new secret (`Some(None)` removes it).
    pub secret: Option<Option<SealedKey>>,
}

/// Thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    /// A good answer.
    Up,
    /// A bad answer.
    Down,
}

impl Rating {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }
}

/// Feedback on one assistant message (at most one: a later one replaces it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feedback {
    /// The rated message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// Its bot.
    pub bot_id: BotId,
    /// Up or down.
    pub rating: Rating,
    /// What the rater wrote, if anything.
    pub comment: Option<String>,
    /// Who rated (a public visitor, or an API key).
    pub actor: Actor,
    /// First rated.
    pub created_at: DateTime<Utc>,
    /// Last rated.
    pub updated_at: DateTime<Utc>,
    /// The tenant (not shown).
    #[serde(skip)]
    pub tenant_id: TenantId,
}

/// Feedback to store (replacing any earlier feedback on the message).
#[derive(Debug, Clone)]
pub struct NewFeedback {
    /// The rated message (an assistant message of the tenant).
    pub message_id: MessageId,
    /// Up or down.
    pub rating: Rating,
    /// An optional comment.
    pub comment: Option<String>,
    /// Who rated.
    pub actor: Actor,
}

/// Ratings of one usage group (bot or day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRow {
    /// The bot id or day, as in [`super::UsageRow`].
    pub group: Option<String>,
    /// Thumbs up.
    pub up: u64,
    /// Thumbs down.
    pub down: u64,
}
