//! SeaORM entities: private to the store; converted to domain types at the
//! boundary (see `convert.rs`).

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod tenant {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub slug: String,
        pub status: String,
        pub rate_limit_rpm: Option<i32>,
        pub rate_limit_tpm: Option<i32>,
        #[sea_orm(column_type = "JsonBinary")]
        pub features: Json,
        pub public_rate_limit_rpm: Option<i32>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod catalog {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "ai_providers_master")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
        pub key: String,
        pub display_name: String,
        pub default_base_url: Option<String>,
        pub auth_style: String,
        pub supports_chat: bool,
        pub supports_stream: bool,
        pub supports_embeddings: bool,
        pub default_chat_model: Option<String>,
        pub default_embedding_model: Option<String>,
    }
    no_relations!();
}

pub mod provider_config {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenant_ai_providers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub provider: String,
        pub name: String,
        #[sea_orm(column_type = "Blob")]
        pub api_key_ciphertext: Option<Vec<u8>>,
        pub api_key_key_id: Option<String>,
        pub api_key_last4: Option<String>,
        pub base_url: Option<String>,
        pub default_model: Option<String>,
        pub enabled: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod bot {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "bots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub name: String,
        pub slug: String,
        pub system_prompt: String,
        pub provider_id: Uuid,
        pub model: Option<String>,
        pub fallback_provider_id: Option<Uuid>,
        #[sea_orm(column_type = "Float")]
        pub temperature: Option<f32>,
        pub max_tokens: Option<i32>,
        pub context_tokens: i32,
        pub is_public: bool,
        #[sea_orm(column_type = "JsonBinary")]
        pub dataset_ids: Json,
        pub status: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod api_key {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub name: String,
        pub prefix: String,
        #[sea_orm(column_type = "Blob")]
        pub secret_hash: Vec<u8>,
        #[sea_orm(column_type = "JsonBinary")]
        pub permissions: Json,
        #[sea_orm(column_type = "JsonBinary")]
        pub bot_ids: Json,
        pub rate_limit_rpm: Option<i32>,
        pub expires_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod conversation {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "conversations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub bot_id: Uuid,
        pub end_user_id: Option<String>,
        pub title: Option<String>,
        pub channel: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod message {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub conversation_id: Uuid,
        pub bot_id: Uuid,
        pub role: String,
        #[sea_orm(column_type = "Text")]
        pub content: String,
        pub prompt_tokens: Option<i32>,
        pub completion_tokens: Option<i32>,
        pub total_tokens: Option<i32>,
        pub tokens_estimated: bool,
        pub response_time_ms: Option<i32>,
        pub time_to_first_token_ms: Option<i32>,
        pub provider: Option<String>,
        pub model: Option<String>,
        pub finish_reason: Option<String>,
        pub status: String,
        pub error: Option<String>,
        #[sea_orm(column_type = "JsonBinary")]
        pub source_chunk_ids: Json,
        pub api_key_id: Option<Uuid>,
        pub created_at: DateTimeUtc,
        /// The store instance that created it (migration `turn_owner`).
        pub instance_id: Option<Uuid>,
        /// Tool calls of an assistant message (migration `message_tools`).
        #[sea_orm(column_type = "JsonBinary", nullable)]
        pub tool_calls: Option<Json>,
        /// The call a `tool` message answers (migration `message_tools`).
        #[sea_orm(column_type = "Text", nullable)]
        pub tool_call_id: Option<String>,
        /// Cost in micro-units (migration `cost_and_budgets`).
        pub cost_micros: Option<i64>,
        /// Prompt tokens read from the vendor's cache (`cost_and_budgets`).
        pub cached_tokens: Option<i32>,
        /// Whether a price was known (`cost_and_budgets`).
        pub priced: Option<bool>,
        /// The conversation's end user, on assistant messages
        /// (`cost_and_budgets`).
        #[sea_orm(column_type = "Text", nullable)]
        pub end_user_id: Option<String>,
    }
    no_relations!();
}

/// Running store instances and their heartbeats (migration `turn_owner`).
pub mod instance {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "instances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub started_at: DateTimeUtc,
        pub heartbeat_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod dataset {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "datasets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub name: String,
        pub provider_id: Uuid,
        pub embedding_model: String,
        pub embedding_dim: i32,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod document {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "documents")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub dataset_id: Uuid,
        pub title: String,
        pub source: Option<String>,
        pub mime_type: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub metadata: Json,
        pub status: String,
        pub error: Option<String>,
        pub content_hash: String,
        #[sea_orm(column_type = "Text")]
        pub content: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod chunk {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "chunks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub dataset_id: Uuid,
        pub document_id: Uuid,
        pub ordinal: i32,
        #[sea_orm(column_type = "Text")]
        pub text: String,
        pub token_count: i32,
        #[sea_orm(column_type = "Blob")]
        pub embedding: Option<Vec<u8>>,
    }
    no_relations!();
}

pub mod scope {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "scopes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub bot_id: Uuid,
        pub kind: String,
        #[sea_orm(column_type = "JsonBinary")]
        pub config: Json,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod audit_log {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_logs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Option<Uuid>,
        pub actor_kind: String,
        pub actor_id: Option<String>,
        pub action: String,
        pub resource_type: Option<String>,
        pub resource_id: Option<String>,
        pub request_id: Option<String>,
        pub ip: Option<String>,
        #[sea_orm(column_type = "JsonBinary")]
        pub metadata: Json,
        pub created_at: DateTimeUtc,
    }
    no_relations!();
}

/// The daily usage rollup (migration `usage_daily`): one row per tenant,
/// UTC day, bot, API key (nil UUID for none) and write slot.
pub mod usage_daily {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "usage_daily")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        #[sea_orm(primary_key, auto_increment = false)]
        pub bot_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub api_key_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub slot: i16,
        pub requests: i64,
        pub prompt_tokens: i64,
        pub completion_tokens: i64,
        pub total_tokens: i64,
        /// Cost in micro-units (migration `cost_and_budgets`).
        pub cost_micros: i64,
    }
    no_relations!();
}

/// Usage per tenant, UTC day, bot, end user and write slot (migration
/// `cost_and_budgets`).
pub mod usage_daily_end_user {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "usage_daily_end_users")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub day: Date,
        #[sea_orm(primary_key, auto_increment = false)]
        pub bot_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
        pub end_user_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub slot: i16,
        pub requests: i64,
        pub prompt_tokens: i64,
        pub completion_tokens: i64,
        pub total_tokens: i64,
        pub cost_micros: i64,
    }
    no_relations!();
}

/// A tenant's price per provider configuration and model (migration
/// `cost_and_budgets`).
pub mod model_price {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "model_prices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        pub provider_config_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub model: String,
        pub input_per_mtok: i64,
        pub cached_input_per_mtok: i64,
        pub output_per_mtok: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}

/// A spending budget (migration `cost_and_budgets`).
pub mod budget {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "budgets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub tenant_id: Uuid,
        #[sea_orm(column_type = "Text")]
        pub scope: String,
        pub api_key_id: Option<Uuid>,
        pub bot_id: Option<Uuid>,
        #[sea_orm(column_type = "Text", nullable)]
        pub end_user_id: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub period: String,
        pub amount_micros: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    no_relations!();
}
