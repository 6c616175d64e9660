//! Entity <-> domain conversions. A row that does not parse (a status no
//! variant names, a malformed JSON list) is an internal error: the schema
//! and this code are out of step.

use std::str::FromStr;

use sea_orm::prelude::Uuid;

use super::entities as e;
use crate::domain::*;
use crate::store::{StoreError, StoreResult};

fn parse<T: FromStr>(s: &str, what: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| StoreError::internal(format!("stored {what} {s:?} is not valid")))
}

fn ids<T: From<Uuid>>(v: &serde_json::Value, what: &str) -> StoreResult<Vec<T>> {
    serde_json::from_value::<Vec<Uuid>>(v.clone())
        .map(|v| v.into_iter().map(T::from).collect())
        .map_err(|_| StoreError::internal(format!("stored {what} list is not valid")))
}

pub(super) fn ids_json<T: Copy + Into<Uuid>>(v: &[T]) -> serde_json::Value {
    serde_json::Value::Array(
        v.iter()
            .map(|i| serde_json::Value::String((*i).into().to_string()))
            .collect(),
    )
}

macro_rules! into_uuid {
    ($($t:ty),*) => {$(
        impl From<$t> for Uuid {
            fn from(i: $t) -> Uuid { i.0 }
        }
    )*};
}
into_uuid!(BotId, DatasetId, ChunkId);

pub(super) fn tenant(m: e::tenant::Model) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: TenantId(m.id),
        name: m.name,
        slug: m.slug,
        status: parse(&m.status, "tenant status")?,
        rate_limit_rpm: m.rate_limit_rpm,
        rate_limit_tpm: m.rate_limit_tpm,
        public_rate_limit_rpm: m.public_rate_limit_rpm,
        features: m.features,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub(super) fn catalog(m: e::catalog::Model) -> StoreResult<CatalogEntry> {
    let key = m.key.clone();
    Ok(CatalogEntry {
        auth_style: parse(&m.auth_style, "auth style")?,
        key: m.key,
        display_name: m.display_name,
        default_base_url: m.default_base_url,
        supports_chat: m.supports_chat,
        supports_stream: m.supports_stream,
        supports_embeddings: m.supports_embeddings,
        default_chat_model: m.default_chat_model,
        default_embedding_model: m.default_embedding_model,
        prices: crate::pricing::catalog_prices(&key)
            .into_iter()
            .map(|c| ListPrice {
                model: c.model.into(),
                input_per_mtok: c.price.input_per_mtok,
                cached_input_per_mtok: c.price.cached_input_per_mtok,
                output_per_mtok: c.price.output_per_mtok,
                currency: crate::pricing::CURRENCY.into(),
                as_of: c.as_of.into(),
            })
            .collect(),
    })
}

pub(super) fn provider_config(m: e::provider_config::Model) -> StoreResult<ProviderConfig> {
    let api_key = match (m.api_key_ciphertext, m.api_key_key_id, m.api_key_last4) {
        (Some(ciphertext), Some(key_id), Some(last4)) => Some(SealedKey {
            key_id,
            ciphertext,
            last4,
        }),
        (None, None, None) => None,
        _ => {
            return Err(StoreError::internal("stored provider key is incomplete"));
        }
    };
    Ok(ProviderConfig {
        id: ProviderConfigId(m.id),
        tenant_id: TenantId(m.tenant_id),
        provider: m.provider,
        name: m.name,
        api_key,
        base_url: m.base_url,
        default_model: m.default_model,
        enabled: m.enabled,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub(super) fn bot(m: e::bot::Model) -> StoreResult<Bot> {
    Ok(Bot {
        id: BotId(m.id),
        tenant_id: TenantId(m.tenant_id),
        name: m.name,
        slug: m.slug,
        system_prompt: m.system_prompt,
        provider_id: ProviderConfigId(m.provider_id),
        model: m.model,
        fallback_provider_id: m.fallback_provider_id.map(ProviderConfigId),
        temperature: m.temperature,
        max_tokens: m.max_tokens,
        context_tokens: m.context_tokens,
        is_public: m.is_public,
        dataset_ids: ids(&m.dataset_ids, "dataset id")?,
        status: parse(&m.status, "bot status")?,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub(super) fn permissions_json(p: &[Permission]) -> serde_json::Value {
    serde_json::Value::Array(
        p.iter()
            .map(|p| serde_json::Value::String(p.as_str().into()))
            .collect(),
    )
}

pub(super) fn api_key(m: e::api_key::Model) -> StoreResult<ApiKey> {
    let perms: Vec<String> = serde_json::from_value(m.permissions)
        .map_err(|_| StoreError::internal("stored permissions are not valid"))?;
    Ok(ApiKey {
        id: ApiKeyId(m.id),
        tenant_id: TenantId(m.tenant_id),
        name: m.name,
        prefix: m.prefix,
        secret_hash: m
            .secret_hash
            .try_into()
            .map_err(|_| StoreError::internal("stored key hash is not 32 bytes"))?,
        permissions: perms
            .iter()
            .map(|p| parse(p, "permission"))
            .collect::<StoreResult<_>>()?,
        bot_ids: ids(&m.bot_ids, "bot id")?,
        rate_limit_rpm: m.rate_limit_rpm,
        expires_at: m.expires_at,
        last_used_at: m.last_used_at,
        revoked_at: m.revoked_at,
        created_at: m.created_at,
    })
}

pub(super) fn conversation(m: e::conversation::Model) -> StoreResult<Conversation> {
    Ok(Conversation {
        id: ConversationId(m.id),
        tenant_id: TenantId(m.tenant_id),
        bot_id: BotId(m.bot_id),
        end_user_id: m.end_user_id,
        title: m.title,
        channel: parse(&m.channel, "channel")?,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub(super) fn message(m: e::message::Model) -> StoreResult<Message> {
    let usage = match (m.prompt_tokens, m.completion_tokens, m.total_tokens) {
        (None, None, None) => None,
        (p, c, t) => Some(TokenUsage {
            prompt_tokens: p.unwrap_or(0),
            completion_tokens: c.unwrap_or(0),
            total_tokens: t.unwrap_or(0),
            estimated: m.tokens_estimated,
        }),
    };
    Ok(Message {
        id: MessageId(m.id),
        tenant_id: TenantId(m.tenant_id),
        conversation_id: ConversationId(m.conversation_id),
        role: parse(&m.role, "role")?,
        content: m.content,
        usage,
        response_time_ms: m.response_time_ms,
        time_to_first_token_ms: m.time_to_first_token_ms,
        provider: m.provider,
        model: m.model,
        finish_reason: m.finish_reason,
        status: parse(&m.status, "message status")?,
        error: m.error,
        source_chunk_ids: ids(&m.source_chunk_ids, "chunk id")?,
        api_key_id: m.api_key_id.map(ApiKeyId),
        created_at: m.created_at,
        tool_calls: match m.tool_calls {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| StoreError::internal_from("stored tool calls do not parse", e))?,
            None => Vec::new(),
        },
        tool_call_id: m.tool_call_id,
        cost: m.cost_micros.map(|micros| crate::pricing::Cost {
            micros,
            cached_tokens: m.cached_tokens.unwrap_or(0).max(0) as u32,
            priced: m.priced.unwrap_or(false),
        }),
    })
}

/// Tool calls as stored: NULL for none.
pub(super) fn tool_calls(calls: &[crate::provider::ToolCall]) -> Option<serde_json::Value> {
    (!calls.is_empty()).then(|| serde_json::to_value(calls).unwrap_or_default())
}

pub(super) fn dataset(m: e::dataset::Model) -> StoreResult<Dataset> {
    Ok(Dataset {
        id: DatasetId(m.id),
        tenant_id: TenantId(m.tenant_id),
        name: m.name,
        provider_id: ProviderConfigId(m.provider_id),
        embedding_model: m.embedding_model,
        embedding_dim: m.embedding_dim,
        created_at: m.created_at,
    })
}

pub(super) fn document(m: e::document::Model) -> StoreResult<Document> {
    Ok(Document {
        id: DocumentId(m.id),
        tenant_id: TenantId(m.tenant_id),
        dataset_id: DatasetId(m.dataset_id),
        title: m.title,
        source: m.source,
        mime_type: m.mime_type,
        metadata: m.metadata,
        status: parse(&m.status, "document status")?,
        error: m.error,
        content_hash: m.content_hash,
        content: m.content,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// Embeddings are stored as little-endian f32 bytes.
pub(super) fn embedding_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

pub(super) fn embedding_from_bytes(b: &[u8]) -> StoreResult<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(StoreError::internal(
            "stored embedding is not a whole number of f32",
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(super) fn chunk(m: e::chunk::Model) -> StoreResult<Chunk> {
    Ok(Chunk {
        id: ChunkId(m.id),
        tenant_id: TenantId(m.tenant_id),
        dataset_id: DatasetId(m.dataset_id),
        document_id: DocumentId(m.document_id),
        ordinal: m.ordinal,
        text: m.text,
        token_count: m.token_count,
        embedding: m
            .embedding
            .as_deref()
            .map(embedding_from_bytes)
            .transpose()?,
    })
}

pub(super) fn scope(m: e::scope::Model) -> StoreResult<Scope> {
    Ok(Scope {
        id: ScopeId(m.id),
        tenant_id: TenantId(m.tenant_id),
        bot_id: BotId(m.bot_id),
        kind: m.kind,
        config: m.config,
        created_at: m.created_at,
    })
}

pub(super) fn audit(m: e::audit_log::Model) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: AuditId(m.id),
        tenant_id: m.tenant_id.map(TenantId),
        actor: Actor {
            kind: parse(&m.actor_kind, "actor kind")?,
            id: m.actor_id,
        },
        action: m.action,
        resource_type: m.resource_type,
        resource_id: m.resource_id,
        request_id: m.request_id,
        ip: m.ip,
        metadata: m.metadata,
        created_at: m.created_at,
    })
}
