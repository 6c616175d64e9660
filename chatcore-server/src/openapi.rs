//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API.
//!
//! Written by hand from one table ([`OPERATIONS`]) keyed like
//! [`crate::routes::ROUTES`]; a test checks that both list the same routes.
//! (Generating it from the Rust types with utoipa is the better end state;
//! this keeps the contract visible and tested meanwhile.)

use http::Method;
use serde_json::{Map, Value, json};

/// How a route is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    None,
    /// A tenant API key (`chat` for chat, `admin` for management).
    ApiKey,
    /// The operator key.
    Operator,
}

/// One operation: route, summary, auth, request schema, success status and
/// reply schema (`$ref` names in `components.schemas`, or None).
pub type Operation = (
    Method,
    &'static str,
    &'static str,
    Auth,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

/// Every operation of the API.
pub const OPERATIONS: &[Operation] = &[
    (
        Method::POST,
        "/v1/chat/public",
        "Chat with a public bot (JSON, or SSE with stream: true)",
        Auth::None,
        Some("ChatRequest"),
        200,
        Some("ChatReply"),
    ),
    (
        Method::OPTIONS,
        "/v1/chat/public",
        "CORS preflight of public chat",
        Auth::None,
        None,
        204,
        None,
    ),
    (
        Method::POST,
        "/v1/chat",
        "Chat with a bot of the key's tenant (JSON, or SSE with stream: true)",
        Auth::ApiKey,
        Some("ChatRequest"),
        200,
        Some("ChatReply"),
    ),
    (
        Method::GET,
        "/healthz",
        "Liveness",
        Auth::None,
        None,
        200,
        Some("Status"),
    ),
    (
        Method::GET,
        "/readyz",
        "Readiness (database reachable)",
        Auth::None,
        None,
        200,
        Some("Status"),
    ),
    (
        Method::GET,
        "/metrics",
        "Prometheus metrics (text exposition format)",
        Auth::None,
        None,
        200,
        None,
    ),
    (
        Method::GET,
        "/openapi.json",
        "This document",
        Auth::None,
        None,
        200,
        None,
    ),
    (
        Method::POST,
        "/v1/admin/tenants",
        "Create a tenant and its first admin key (shown once)",
        Auth::Operator,
        Some("CreateTenant"),
        201,
        Some("CreatedTenant"),
    ),
    (
        Method::GET,
        "/v1/admin/tenants",
        "List tenants",
        Auth::Operator,
        None,
        200,
        Some("TenantList"),
    ),
    (
        Method::GET,
        "/v1/admin/tenants/{id}",
        "Get a tenant",
        Auth::Operator,
        None,
        200,
        Some("Tenant"),
    ),
    (
        Method::PATCH,
        "/v1/admin/tenants/{id}",
        "Change a tenant (suspension stops its keys at once)",
        Auth::Operator,
        Some("UpdateTenant"),
        200,
        Some("Tenant"),
    ),
    (
        Method::GET,
        "/v1/providers/catalog",
        "The provider catalog",
        Auth::ApiKey,
        None,
        200,
        Some("CatalogList"),
    ),
    (
        Method::POST,
        "/v1/providers",
        "Configure a catalog provider (the key is stored encrypted)",
        Auth::ApiKey,
        Some("CreateProvider"),
        201,
        Some("Provider"),
    ),
    (
        Method::GET,
        "/v1/providers",
        "List provider configurations",
        Auth::ApiKey,
        None,
        200,
        Some("ProviderList"),
    ),
    (
        Method::GET,
        "/v1/providers/{id}",
        "Get a provider configuration",
        Auth::ApiKey,
        None,
        200,
        Some("Provider"),
    ),
    (
        Method::PATCH,
        "/v1/providers/{id}",
        "Change a provider configuration (api_key rotates the key)",
        Auth::ApiKey,
        Some("UpdateProvider"),
        200,
        Some("Provider"),
    ),
    (
        Method::DELETE,
        "/v1/providers/{id}",
        "Delete a provider configuration (409 while in use)",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::POST,
        "/v1/bots",
        "Create a bot",
        Auth::ApiKey,
        Some("CreateBot"),
        201,
        Some("Bot"),
    ),
    (
        Method::GET,
        "/v1/bots",
        "List bots",
        Auth::ApiKey,
        None,
        200,
        Some("BotList"),
    ),
    (
        Method::GET,
        "/v1/bots/{id}",
        "Get a bot by id or slug",
        Auth::ApiKey,
        None,
        200,
        Some("Bot"),
    ),
    (
        Method::PATCH,
        "/v1/bots/{id}",
        "Change a bot (by id or slug)",
        Auth::ApiKey,
        Some("UpdateBot"),
        200,
        Some("Bot"),
    ),
    (
        Method::DELETE,
        "/v1/bots/{id}",
        "Delete a bot with its conversations and scopes",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::POST,
        "/v1/api-keys",
        "Create an API key (the secret is returned once, as key)",
        Auth::ApiKey,
        Some("CreateApiKey"),
        201,
        Some("CreatedApiKey"),
    ),
    (
        Method::GET,
        "/v1/api-keys",
        "List API keys",
        Auth::ApiKey,
        None,
        200,
        Some("ApiKeyList"),
    ),
    (
        Method::GET,
        "/v1/api-keys/{id}",
        "Get an API key",
        Auth::ApiKey,
        None,
        200,
        Some("ApiKey"),
    ),
    (
        Method::DELETE,
        "/v1/api-keys/{id}",
        "Revoke an API key",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::POST,
        "/v1/scopes",
        "Create a scope (access rule or guardrail)",
        Auth::ApiKey,
        Some("CreateScope"),
        201,
        Some("Scope"),
    ),
    (
        Method::GET,
        "/v1/scopes",
        "List a bot's scopes (?bot_id= required)",
        Auth::ApiKey,
        None,
        200,
        Some("ScopeList"),
    ),
    (
        Method::GET,
        "/v1/scopes/{id}",
        "Get a scope",
        Auth::ApiKey,
        None,
        200,
        Some("Scope"),
    ),
    (
        Method::DELETE,
        "/v1/scopes/{id}",
        "Delete a scope",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::POST,
        "/v1/datasets",
        "Create a dataset (embedding provider, model, dimension)",
        Auth::ApiKey,
        Some("CreateDataset"),
        201,
        Some("Dataset"),
    ),
    (
        Method::GET,
        "/v1/datasets",
        "List datasets",
        Auth::ApiKey,
        None,
        200,
        Some("DatasetList"),
    ),
    (
        Method::GET,
        "/v1/datasets/{id}",
        "Get a dataset",
        Auth::ApiKey,
        None,
        200,
        Some("Dataset"),
    ),
    (
        Method::DELETE,
        "/v1/datasets/{id}",
        "Delete a dataset with its documents",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::POST,
        "/v1/datasets/{id}/documents",
        "Upload a document (JSON, or a raw text/plain, text/markdown or text/html body with ?title=); indexed in the background",
        Auth::ApiKey,
        Some("UploadDocument"),
        201,
        Some("Document"),
    ),
    (
        Method::GET,
        "/v1/datasets/{id}/documents",
        "List a dataset's documents with status and chunk count",
        Auth::ApiKey,
        None,
        200,
        Some("DocumentList"),
    ),
    (
        Method::POST,
        "/v1/datasets/{id}/search",
        "Try retrieval: hybrid (vector + full text, fused by RRF)",
        Auth::ApiKey,
        Some("Search"),
        200,
        Some("SearchResult"),
    ),
    (
        Method::GET,
        "/v1/documents/{id}",
        "Get a document (status, failure reason, chunk count)",
        Auth::ApiKey,
        None,
        200,
        Some("Document"),
    ),
    (
        Method::DELETE,
        "/v1/documents/{id}",
        "Delete a document and its chunks",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::GET,
        "/v1/conversations",
        "List conversations (?bot_id, user_id, since, until)",
        Auth::ApiKey,
        None,
        200,
        Some("ConversationList"),
    ),
    (
        Method::GET,
        "/v1/conversations/{id}",
        "Get a conversation",
        Auth::ApiKey,
        None,
        200,
        Some("Conversation"),
    ),
    (
        Method::DELETE,
        "/v1/conversations/{id}",
        "Delete a conversation and its messages",
        Auth::ApiKey,
        None,
        204,
        None,
    ),
    (
        Method::GET,
        "/v1/conversations/{id}/messages",
        "A conversation's messages, oldest first",
        Auth::ApiKey,
        None,
        200,
        Some("MessageList"),
    ),
    (
        Method::GET,
        "/v1/audit-logs",
        "The audit log, newest first (?action, actor_kind, actor_id, since, until)",
        Auth::ApiKey,
        None,
        200,
        Some("AuditList"),
    ),
    (
        Method::GET,
        "/v1/usage",
        "Turns and tokens per bot, key or day (?since, until, group_by)",
        Auth::ApiKey,
        None,
        200,
        Some("Usage"),
    ),
];

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn obj(required: &[&str], props: Value) -> Value {
    json!({"type": "object", "additionalProperties": false, "required": required, "properties": props})
}

fn list_of(item: &str) -> Value {
    json!({"type": "object", "required": ["data", "next_cursor"], "properties": {
        "data": {"type": "array", "items": r(item)},
        "next_cursor": {"type": ["string", "null"]}
    }})
}

fn schemas() -> Value {
    let id = json!({"type": "string", "format": "uuid"});
    let time = json!({"type": "string", "format": "date-time"});
    let ntime = json!({"type": ["string", "null"], "format": "date-time"});
    let nstr = json!({"type": ["string", "null"]});
    let nint = json!({"type": ["integer", "null"]});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "request_id"], "properties": {
                "code": {"type": "string", "enum": ["invalid_request", "unauthorized", "forbidden", "feature_disabled", "guardrail_blocked", "not_found", "method_not_allowed", "conflict", "payload_too_large", "unsupported_media_type", "rate_limited", "provider_error", "unavailable", "provider_timeout", "internal"]},
                "message": {"type": "string"}, "request_id": {"type": "string"}}}}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
        "ChatRequest": obj(&["bot_id", "message"], json!({
            "bot_id": {"type": "string", "description": "bot id or slug"}, "message": {"type": "string"},
            "conversation_id": id, "user_id": {"type": "string"}, "stream": {"type": "boolean", "default": false}})),
        "ChatReply": {"type": "object", "properties": {
            "conversation_id": id, "message_id": id, "bot_id": id, "content": {"type": "string"},
            "provider": {"type": "string"}, "model": {"type": "string"}, "finish_reason": {"type": "string"},
            "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}, "estimated": {"type": "boolean"}}},
            "response_time_ms": {"type": "integer"}, "sources": {"type": "array", "items": {"type": "object"}}}},
        "Tenant": {"type": "object", "properties": {
            "id": id, "name": {"type": "string"}, "slug": {"type": "string"}, "status": {"enum": ["active", "suspended"]},
            "rate_limit_rpm": nint, "rate_limit_tpm": nint, "features": {"type": "object"}, "created_at": time, "updated_at": time}},
        "CreateTenant": obj(&["name"], json!({"name": {"type": "string", "minLength": 1, "maxLength": 200}, "slug": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"}, "rate_limit_rpm": {"type": "integer", "minimum": 1}, "rate_limit_tpm": {"type": "integer", "minimum": 1}, "features": {"type": "object"}})),
        "UpdateTenant": obj(&[], json!({"name": {"type": "string"}, "slug": {"type": "string"}, "status": {"enum": ["active", "suspended"]}, "rate_limit_rpm": nint, "rate_limit_tpm": nint, "features": {"type": "object"}})),
        "CreatedTenant": {"type": "object", "required": ["tenant", "admin_key"], "properties": {"tenant": r("Tenant"), "admin_key": {"type": "string"}}},
        "TenantList": list_of("Tenant"),
        "CatalogEntry": {"type": "object", "properties": {"key": {"type": "string"}, "display_name": {"type": "string"}, "default_base_url": nstr, "auth_style": {"type": "string"}, "supports_chat": {"type": "boolean"}, "supports_stream": {"type": "boolean"}, "supports_embeddings": {"type": "boolean"}, "default_chat_model": nstr, "default_embedding_model": nstr}},
        "CatalogList": list_of("CatalogEntry"),
        "Provider": {"type": "object", "properties": {"id": id, "provider": {"type": "string"}, "name": {"type": "string"}, "api_key_last4": nstr, "base_url": nstr, "default_model": nstr, "enabled": {"type": "boolean"}, "created_at": time, "updated_at": time}},
        "CreateProvider": obj(&["provider", "name"], json!({"provider": {"enum": ["openai", "anthropic", "google", "openai_compatible", "mock"]}, "name": {"type": "string"}, "api_key": {"type": "string", "writeOnly": true}, "base_url": {"type": "string", "format": "uri"}, "default_model": {"type": "string"}, "enabled": {"type": "boolean"}})),
        "UpdateProvider": obj(&[], json!({"name": {"type": "string"}, "api_key": {"type": ["string", "null"], "writeOnly": true}, "base_url": nstr, "default_model": nstr, "enabled": {"type": "boolean"}})),
        "ProviderList": list_of("Provider"),
        "Bot": {"type": "object", "properties": {"id": id, "tenant_id": id, "name": {"type": "string"}, "slug": {"type": "string"}, "system_prompt": {"type": "string"}, "provider_id": id, "model": nstr, "fallback_provider_id": {"type": ["string", "null"], "format": "uuid"}, "temperature": {"type": ["number", "null"]}, "max_tokens": nint, "context_tokens": {"type": "integer"}, "is_public": {"type": "boolean"}, "dataset_ids": {"type": "array", "items": id}, "status": {"enum": ["active", "disabled"]}, "created_at": time, "updated_at": time}},
        "CreateBot": obj(&["name", "provider_id"], json!({"name": {"type": "string"}, "slug": {"type": "string"}, "system_prompt": {"type": "string"}, "provider_id": id, "model": {"type": "string"}, "fallback_provider_id": id, "temperature": {"type": "number", "minimum": 0, "maximum": 2}, "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "context_tokens": {"type": "integer", "minimum": 256, "maximum": 2_000_000}, "is_public": {"type": "boolean"}, "dataset_ids": {"type": "array", "items": id}})),
        "UpdateBot": obj(&[], json!({"name": {"type": "string"}, "slug": {"type": "string"}, "system_prompt": {"type": "string"}, "provider_id": id, "model": nstr, "fallback_provider_id": {"type": ["string", "null"], "format": "uuid"}, "temperature": {"type": ["number", "null"]}, "max_tokens": nint, "context_tokens": {"type": "integer"}, "is_public": {"type": "boolean"}, "dataset_ids": {"type": "array", "items": id}, "status": {"enum": ["active", "disabled"]}})),
        "BotList": list_of("Bot"),
        "ApiKey": {"type": "object", "properties": {"id": id, "name": {"type": "string"}, "prefix": {"type": "string"}, "permissions": {"type": "array", "items": {"enum": ["chat", "read", "admin"]}}, "bot_ids": {"type": "array", "items": id}, "rate_limit_rpm": nint, "expires_at": ntime, "last_used_at": ntime, "revoked_at": ntime, "created_at": time}},
        "CreatedApiKey": {"allOf": [r("ApiKey"), {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}]},
        "CreateApiKey": obj(&["name", "permissions"], json!({"name": {"type": "string"}, "permissions": {"type": "array", "minItems": 1, "items": {"enum": ["chat", "read", "admin"]}}, "bot_ids": {"type": "array", "items": id}, "rate_limit_rpm": {"type": "integer", "minimum": 1}, "expires_at": time})),
        "ApiKeyList": list_of("ApiKey"),
        "Scope": {"type": "object", "properties": {"id": id, "tenant_id": id, "bot_id": id, "kind": {"type": "string"}, "config": {}, "created_at": time}},
        "CreateScope": obj(&["bot_id", "kind", "config"], json!({"bot_id": {"type": "string", "description": "bot id or slug"}, "kind": {"enum": ["allowed_origins", "api_keys", "blocked_terms", "blocked_patterns", "max_input_length", "visitor_rate_limit"]}, "config": {}})),
        "ScopeList": list_of("Scope"),
        "Dataset": {"type": "object", "properties": {"id": id, "tenant_id": id, "name": {"type": "string"}, "provider_id": id, "embedding_model": {"type": "string"}, "embedding_dim": {"type": "integer"}, "created_at": time}},
        "DatasetList": list_of("Dataset"),
        "CreateDataset": obj(&["name", "provider_id"], json!({"name": {"type": "string"}, "provider_id": id, "embedding_model": {"type": "string"}, "embedding_dim": {"type": "integer", "minimum": 1}})),
        "Document": {"type": "object", "properties": {"id": id, "dataset_id": id, "title": {"type": "string"}, "source": nstr, "mime_type": {"type": "string"}, "metadata": {"type": "object"}, "status": {"enum": ["pending", "indexing", "ready", "failed"]}, "error": nstr, "content_hash": {"type": "string"}, "chunk_count": {"type": "integer"}, "created_at": time, "updated_at": time}},
        "DocumentList": list_of("Document"),
        "UploadDocument": obj(&["title", "content"], json!({"title": {"type": "string"}, "content": {"type": "string"}, "mime_type": {"enum": ["text/plain", "text/markdown", "text/html"]}, "source": {"type": "string"}, "metadata": {"type": "object"}})),
        "Search": obj(&["query"], json!({"query": {"type": "string"}, "top_k": {"type": "integer", "minimum": 1, "maximum": 100}, "filter": {"type": "object"}})),
        "SearchResult": {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object", "properties": {"chunk_id": id, "document_id": id, "title": {"type": "string"}, "score": {"type": "number"}, "text": {"type": "string"}}}}}},
        "Conversation": {"type": "object", "properties": {"id": id, "tenant_id": id, "bot_id": id, "end_user_id": nstr, "title": nstr, "channel": {"enum": ["public", "api"]}, "created_at": time, "updated_at": time}},
        "ConversationList": list_of("Conversation"),
        "Message": {"type": "object", "properties": {"id": id, "conversation_id": id, "role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}, "status": {"enum": ["pending", "complete", "incomplete", "error", "cancelled"]}, "prompt_tokens": nint, "completion_tokens": nint, "total_tokens": nint, "tokens_estimated": {"type": ["boolean", "null"]}, "response_time_ms": nint, "time_to_first_token_ms": nint, "provider": nstr, "model": nstr, "finish_reason": nstr, "error": nstr, "api_key_id": {"type": ["string", "null"], "format": "uuid"}, "created_at": time}},
        "MessageList": list_of("Message"),
        "AuditRecord": {"type": "object", "properties": {"id": id, "tenant_id": {"type": ["string", "null"], "format": "uuid"}, "actor": {"type": "object", "properties": {"kind": {"enum": ["api_key", "operator", "public_visitor", "system"]}, "id": nstr}}, "action": {"type": "string"}, "resource_type": nstr, "resource_id": nstr, "request_id": nstr, "ip": nstr, "metadata": {"type": "object"}, "created_at": time}},
        "AuditList": list_of("AuditRecord"),
        "Usage": {"type": "object", "properties": {"since": time, "until": time, "group_by": {"enum": ["bot", "key", "day"]}, "data": {"type": "array", "items": {"type": "object", "properties": {"group": nstr, "requests": {"type": "integer"}, "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}}}}}}
    })
}

fn error_responses(auth: Auth, has_body: bool, has_id: bool) -> Map<String, Value> {
    let e = |d: &str| json!({"description": d, "content": {"application/json": {"schema": r("Error")}}});
    let mut m = Map::new();
    m.insert(
        "400".into(),
        e("invalid request; the message names the field"),
    );
    if auth != Auth::None {
        m.insert("401".into(), e("missing or invalid key"));
    }
    if auth == Auth::ApiKey {
        m.insert(
            "403".into(),
            e("the key lacks the permission, or the tenant is suspended"),
        );
    }
    if has_id || has_body || auth == Auth::Operator {
        m.insert(
            "404".into(),
            e("not found (including another tenant's rows)"),
        );
    }
    if has_body {
        m.insert("409".into(), e("conflict (a taken slug, a row in use)"));
        m.insert("413".into(), e("body too large"));
        m.insert("415".into(), e("body is not application/json"));
    }
    m.insert("429".into(), e("rate limited (see Retry-After)"));
    m.insert("500".into(), e("internal error"));
    m
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, auth, req, status, reply) in OPERATIONS {
        let mut op = Map::new();
        op.insert("summary".into(), json!(summary));
        match auth {
            Auth::None => op.insert("security".into(), json!([])),
            Auth::ApiKey => op.insert("security".into(), json!([{"apiKey": []}])),
            Auth::Operator => op.insert("security".into(), json!([{"operatorKey": []}])),
        };
        if path.contains("{id}") {
            op.insert("parameters".into(), json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]));
        }
        if let Some(q) = req {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": r(q)}}}),
            );
        }
        let mut responses = error_responses(*auth, req.is_some(), path.contains("{id}"));
        let ok = match (reply, *path) {
            (Some(s), _) => {
                json!({"description": "success", "content": {"application/json": {"schema": r(s)}}})
            }
            (None, "/metrics") => {
                json!({"description": "success", "content": {"text/plain": {"schema": {"type": "string"}}}})
            }
            (None, "/openapi.json") => {
                json!({"description": "success", "content": {"application/json": {"schema": {"type": "object"}}}})
            }
            (None, _) => json!({"description": "success, no content"}),
        };
        responses.insert(status.to_string(), ok);
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.as_str().to_ascii_lowercase()] = Value::Object(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "chatcore", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Multi-tenant, multi-provider chatbot engine. Errors: {\"error\": {\"code\", \"message\", \"request_id\"}}. Lists: {\"data\": [...], \"next_cursor\"} with ?limit=&cursor=."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a tenant API key (cc_...)"},
                "operatorKey": {"type": "http", "scheme": "bearer", "description": "CHATCORE_OPERATOR_KEY"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    #[test]
    fn the_document_covers_every_route_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for (m, p) in ROUTES {
            let op = &paths.get(*p).unwrap_or_else(|| panic!("{p} missing"))
                [m.as_str().to_ascii_lowercase()];
            assert!(op.is_object(), "{m} {p} missing from the document");
        }
        let mut n = 0;
        for (p, ops) in paths {
            for (m, _) in ops.as_object().unwrap() {
                n += 1;
                assert!(
                    ROUTES
                        .iter()
                        .any(|(rm, rp)| rp == p && rm.as_str().eq_ignore_ascii_case(m)),
                    "{m} {p} documented but not routed"
                );
            }
        }
        assert_eq!(n, ROUTES.len());
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                schemas.contains_key(&name),
                "{name} is referenced but not defined"
            );
        }
    }
}
