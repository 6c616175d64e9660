//! The document against the router, the types it is generated from, and
//! the structure OpenAPI 3.1 asks for.

use std::collections::BTreeSet;

use chatcore::admin::{UsageEntry, UsageReport};
use chatcore::domain::*;
use chatcore::engine::{ChatReply, Source, StreamDone, UsageReply};
use chatcore::rag::DocumentView;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::http::{ApiError, ERROR_CODES};

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Follows a `#/components/schemas/` reference.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("not a schema reference: {r}"));
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// An object schema's property names and required names, through `$ref`
/// and `allOf` (what `#[serde(flatten)]` becomes).
fn shape(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let s = resolve(doc, schema);
    let mut props = BTreeSet::new();
    let mut required = BTreeSet::new();
    for part in s["allOf"].as_array().into_iter().flatten() {
        let (p, r) = shape(doc, part);
        props.extend(p);
        required.extend(r);
    }
    if let Some(p) = s["properties"].as_object() {
        props.extend(p.keys().cloned());
    }
    for r in s["required"].as_array().into_iter().flatten() {
        required.insert(r.as_str().unwrap().to_string());
    }
    (props, required)
}

/// The schema of a property, through `$ref`, `allOf` and a nullable `oneOf`.
fn property<'a>(doc: &'a Value, schema: &'a Value, name: &str) -> &'a Value {
    let s = resolve(doc, schema);
    if let Some(p) = s["properties"].get(name) {
        return p;
    }
    for part in s["allOf"].as_array().into_iter().flatten() {
        let p = property(doc, part, name);
        if !p.is_null() {
            return p;
        }
    }
    &Value::Null
}

/// The non-null alternative of a nullable schema.
fn non_null<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let s = resolve(doc, schema);
    match s["oneOf"].as_array() {
        Some(alts) => alts
            .iter()
            .map(|a| resolve(doc, a))
            .find(|a| a["type"] != "null")
            .unwrap_or(s),
        None => s,
    }
}

/// A serialized value has exactly the schema's properties, and every
/// required one.
fn assert_shape(doc: &Value, schema: &Value, value: &Value, what: &str) {
    let (props, required) = shape(doc, schema);
    let keys: BTreeSet<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    assert!(!props.is_empty(), "{what}: the schema has no properties");
    assert_eq!(keys, props, "{what}: serialized keys vs schema properties");
    assert!(
        required.is_subset(&keys),
        "{what}: required {required:?} not all serialized"
    );
}

fn op<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let o = &doc["paths"][path][method];
    assert!(o.is_object(), "{method} {path} missing");
    o
}

fn reply<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    let s = &op(doc, method, path)["responses"][status]["content"]["application/json"]["schema"];
    assert!(
        s.is_object(),
        "{method} {path} {status}: no JSON reply schema"
    );
    s
}

fn request<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let s = &op(doc, method, path)["requestBody"]["content"]["application/json"]["schema"];
    assert!(s.is_object(), "{method} {path}: no JSON request schema");
    s
}

fn v<T: serde::Serialize>(x: &T) -> Value {
    serde_json::to_value(x).unwrap()
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chatcore::domain::now()
}

fn bot() -> Bot {
    Bot {
        id: BotId::new(),
        tenant_id: TenantId::new(),
        name: "Helper".into(),
        slug: "helper".into(),
        system_prompt: "Be brief.".into(),
        provider_id: ProviderConfigId::new(),
        model: None,
        fallback_provider_id: Some(ProviderConfigId::new()),
        temperature: Some(0.2),
        max_tokens: None,
        context_tokens: 8000,
        is_public: true,
        dataset_ids: vec![DatasetId::new()],
        status: BotStatus::Active,
        created_at: now(),
        updated_at: now(),
    }
}

fn tenant() -> Tenant {
    Tenant {
        id: TenantId::new(),
        name: "Acme".into(),
        slug: "acme".into(),
        status: TenantStatus::Active,
        rate_limit_rpm: Some(60),
        rate_limit_tpm: None,
        public_rate_limit_rpm: Some(120),
        features: json!({}),
        created_at: now(),
        updated_at: now(),
    }
}

fn api_key() -> ApiKey {
    ApiKey {
        id: ApiKeyId::new(),
        tenant_id: TenantId::new(),
        name: "k".into(),
        prefix: "cc_0123456789abcdef".into(),
        secret_hash: [7; 32],
        permissions: vec![Permission::Read],
        bot_ids: vec![],
        rate_limit_rpm: None,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        created_at: now(),
    }
}

fn source() -> Source {
    Source {
        document_id: DocumentId::new(),
        title: "Billing".into(),
        chunk_id: ChunkId::new(),
        score: 0.5,
        text: "Refunds take five days.".into(),
        snippet: "Refunds take".into(),
    }
}

fn usage() -> UsageReply {
    UsageReply {
        prompt_tokens: 3,
        completion_tokens: 2,
        total_tokens: 5,
        estimated: false,
        cached_tokens: 1,
    }
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Every schema object under `v` (anything with `type`), to check its type
/// names.
fn types(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            // (An object under `type` is a property named `type`.)
            if let Some(t) = m.get("type").filter(|t| !t.is_object()) {
                out.push(t.clone());
            }
            m.values().for_each(|x| types(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| types(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_is_structurally_valid_openapi_3_1() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "chatcore");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // Every reference resolves to a component of the right kind.
    let mut all = vec![];
    refs(doc, &mut all);
    assert!(all.len() > 100, "references are used: {}", all.len());
    for r in &all {
        let (kind, name) = r
            .strip_prefix("#/components/")
            .and_then(|s| s.split_once('/'))
            .unwrap_or_else(|| panic!("{r} is not a local component reference"));
        assert!(
            doc["components"][kind][name].is_object(),
            "{r} does not resolve"
        );
    }

    // JSON Schema type names only.
    let mut ts = vec![];
    types(&doc["components"]["schemas"], &mut ts);
    for t in ts {
        let names: Vec<&Value> = match &t {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        for n in names {
            assert!(
                [
                    "object", "array", "string", "integer", "number", "boolean", "null"
                ]
                .contains(&n.as_str().unwrap_or("")),
                "bad type {t}"
            );
        }
    }

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "{path}");
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        for (method, op) in item.as_object().unwrap() {
            assert!(METHODS.contains(&method.as_str()), "{method} {path}");
            let id = op["operationId"].as_str().unwrap();
            assert!(operation_ids.insert(id.to_string()), "{id} twice");
            for t in op["tags"].as_array().unwrap() {
                assert!(
                    tags.contains(t.as_str().unwrap()),
                    "{method} {path}: tag {t}"
                );
            }
            // Path parameters are exactly the template's, and required.
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{method} {path}: {p}");
                    p["name"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(in_path, template, "{method} {path}: path parameters");
            for p in &params {
                assert!(
                    ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap()),
                    "{p}"
                );
                assert!(p["schema"].is_object(), "{method} {path}: {p}");
            }
            // Responses: one success at least, every one described; errors
            // are the shared error replies, all with the error body.
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no success reply"
            );
            for (status, r) in responses {
                let r = match r["$ref"].as_str() {
                    Some(name) => {
                        let name = name.strip_prefix("#/components/responses/").unwrap();
                        &doc["components"]["responses"][name]
                    }
                    None => r,
                };
                assert!(r["description"].is_string(), "{method} {path} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
            // Security names a scheme that exists (or is empty: open).
            for req in op["security"].as_array().unwrap() {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: {name}");
                }
            }
        }
    }
}

#[test]
fn each_operation_states_its_permission_and_the_errors_that_follow() {
    let doc = document();
    let mut n = 0;
    for (p, item) in doc["paths"].as_object().unwrap() {
        for (m, o) in item.as_object().unwrap() {
            n += 1;
            let p = p.as_str();
            let has = |s: &str| o["responses"].get(s).is_some();
            let permission = o["x-chatcore-permission"].as_str().unwrap();
            // Everything under /v1 but public chat and the widget's public
            // routes (a visitor token, or a key checked by the handler)
            // needs a key.
            let widget_public = p.starts_with("/v1/widget/") || p == "/v1/messages/{id}/feedback";
            assert_eq!(
                permission == "none",
                !p.starts_with("/v1/") || p == "/v1/chat/public" || widget_public,
                "{m} {p}"
            );
            // Routes that take a visitor token answer 401 to a bad one.
            let takes_token = (m == "post" && p == "/v1/chat/public")
                || (widget_public && p != "/v1/widget/{bot}/config");
            // OpenAI's `/v1/models` lists what a chat key may chat with.
            if p.starts_with("/v1/models") {
                assert_eq!(permission, "chat", "{m} {p}");
            } else if m == "get"
                && p.starts_with("/v1/")
                && !p.starts_with("/v1/admin/")
                && !widget_public
            {
                assert_eq!(
                    permission, "read",
                    "{m} {p}: every management GET is open to read keys"
                );
            }
            // `/metrics` is open to loopback, else needs the metrics key.
            assert_eq!(
                has("401"),
                permission != "none" || p == "/metrics" || takes_token,
                "{m} {p}"
            );
            if permission != "none" {
                assert!(has("429"), "{m} {p}: failed authentications are throttled");
            }
            if matches!(permission, "read" | "admin" | "chat") {
                assert!(has("403"), "{m} {p}");
                assert_eq!(o["security"], json!([{"apiKey": []}]), "{m} {p}");
            }
            if o.get("requestBody").is_some() {
                for s in ["400", "413", "415"] {
                    assert!(has(s), "{m} {p} {s}");
                }
            }
            if p.contains("{id}") {
                assert!(has("404"), "{m} {p}");
            }
        }
    }
    assert!(n >= 45, "{n} operations");
    // Spot checks of the route-to-permission mapping the server enforces.
    let perm = |m: &str, p: &str| op(doc, m, p)["x-chatcore-permission"].clone();
    assert_eq!(perm("get", "/v1/api-keys"), "read");
    assert_eq!(perm("delete", "/v1/api-keys/{id}"), "admin");
    assert_eq!(perm("post", "/v1/datasets/{id}/search"), "read");
    assert_eq!(perm("post", "/v1/datasets/{id}/documents"), "admin");
    assert_eq!(perm("post", "/v1/chat/public"), "none");
    assert_eq!(perm("patch", "/v1/admin/tenants/{id}"), "operator");
    assert!(op(doc, "post", "/v1/chat")["responses"]["429"].is_object());
    assert!(op(doc, "get", "/metrics")["responses"]["403"].is_object());
    assert_eq!(op(doc, "post", "/v1/chat/public")["security"], json!([]));
}

#[test]
fn replies_serialize_to_exactly_their_schemas() {
    let doc = document();
    let chat = ChatReply {
        conversation_id: ConversationId::new(),
        message_id: MessageId::new(),
        bot_id: BotId::new(),
        content: "hello".into(),
        provider: "mock".into(),
        model: "echo".into(),
        finish_reason: "stop".into(),
        usage: usage(),
        response_time_ms: 3,
        sources: vec![source()],
        tenant_id: TenantId::new(),
        tool_calls: Vec::new(),
        cost: chatcore::engine::CostReply {
            amount_micros: 42,
            currency: "USD",
            priced: true,
        },
    };
    let chat_v = v(&chat);
    let schema = reply(doc, "post", "/v1/chat", "200");
    assert_shape(doc, schema, &chat_v, "ChatReply");
    assert!(chat_v.get("tenant_id").is_none(), "not shown to callers");
    assert_shape(
        doc,
        property(doc, schema, "usage"),
        &chat_v["usage"],
        "UsageReply",
    );
    let sources = property(doc, schema, "sources");
    assert_shape(doc, &sources["items"], &chat_v["sources"][0], "Source");
    assert_eq!(
        op(doc, "post", "/v1/chat/public")["responses"]["200"]["content"]["application/json"],
        op(doc, "post", "/v1/chat")["responses"]["200"]["content"]["application/json"]
    );

    let done = StreamDone {
        usage: usage(),
        finish_reason: "stop".into(),
        response_time_ms: 4,
        time_to_first_token_ms: 1,
        provider: "mock".into(),
        model: "echo".into(),
        sources: vec![],
        tenant_id: TenantId::new(),
        cost: chatcore::engine::CostReply::default(),
    };
    let named = |n: &str| json!({"$ref": format!("#/components/schemas/{n}")});
    assert_shape(doc, &named("StreamDone"), &v(&done), "StreamDone");
    assert_shape(
        doc,
        &named("StreamStart"),
        &v(&crate::chat::StreamStart {
            conversation_id: ConversationId::new(),
            message_id: MessageId::new(),
        }),
        "StreamStart",
    );

    // Domain types straight from chatcore, and the list page around them.
    let b = bot();
    assert_shape(
        doc,
        reply(doc, "get", "/v1/bots/{id}", "200"),
        &v(&b),
        "Bot",
    );
    let page = chatcore::admin::List {
        data: vec![b],
        next_cursor: Some("c".into()),
    };
    let list_schema = reply(doc, "get", "/v1/bots", "200");
    let page_v = v(&page);
    assert_shape(doc, list_schema, &page_v, "List<Bot>");
    assert_shape(
        doc,
        &property(doc, list_schema, "data")["items"],
        &page_v["data"][0],
        "List<Bot> item",
    );
    let created = chatcore::admin::CreatedTenant {
        tenant: tenant(),
        admin_key: "cc_x".into(),
    };
    let schema = reply(doc, "post", "/v1/admin/tenants", "201");
    let created_v = v(&created);
    assert_shape(doc, schema, &created_v, "CreatedTenant");
    assert_shape(
        doc,
        property(doc, schema, "tenant"),
        &created_v["tenant"],
        "Tenant",
    );

    // Views built from stored rows.
    let provider = chatcore::admin::ProviderView::from(ProviderConfig {
        id: ProviderConfigId::new(),
        tenant_id: TenantId::new(),
        provider: "openai".into(),
        name: "OpenAI".into(),
        api_key: Some(SealedKey {
            key_id: "k1".into(),
            ciphertext: vec![1, 2, 3],
            last4: "abcd".into(),
        }),
        base_url: None,
        default_model: Some("gpt-4o-mini".into()),
        enabled: true,
        created_at: now(),
        updated_at: now(),
    });
    let provider_v = v(&provider);
    assert_shape(
        doc,
        reply(doc, "get", "/v1/providers/{id}", "200"),
        &provider_v,
        "ProviderView",
    );
    assert!(!provider_v.to_string().contains("ciphertext"));
    // A flattened view: the key's fields and `key`, through allOf.
    let created_key = chatcore::admin::CreatedApiKey {
        api_key: api_key().into(),
        key: "cc_0123456789abcdef_secret".into(),
    };
    assert_shape(
        doc,
        reply(doc, "post", "/v1/api-keys", "201"),
        &v(&created_key),
        "CreatedApiKey",
    );
    let key_view: chatcore::admin::ApiKeyView = api_key().into();
    assert_shape(
        doc,
        reply(doc, "get", "/v1/api-keys/{id}", "200"),
        &v(&key_view),
        "ApiKeyView",
    );
    let message = chatcore::admin::MessageView::from(Message {
        id: MessageId::new(),
        tenant_id: TenantId::new(),
        conversation_id: ConversationId::new(),
        role: Role::Assistant,
        content: "hi".into(),
        usage: Some(TokenUsage::default()),
        response_time_ms: Some(3),
        time_to_first_token_ms: Some(1),
        provider: Some("mock".into()),
        model: Some("echo".into()),
        finish_reason: Some("stop".into()),
        status: MessageStatus::Complete,
        error: None,
        source_chunk_ids: vec![],
        api_key_id: None,
        created_at: now(),
        tool_call_id: None,
        cost: None,
        tool_calls: Vec::new(),
    });
    let messages = reply(doc, "get", "/v1/conversations/{id}/messages", "200");
    assert_shape(
        doc,
        &property(doc, messages, "data")["items"],
        &v(&message),
        "MessageView",
    );
    let report = UsageReport {
        since: now(),
        until: now(),
        group_by: "day",
        data: vec![UsageEntry {
            group: Some("2026-01-01".into()),
            requests: 1,
            prompt_tokens: 2,
            completion_tokens: 3,
            total_tokens: 5,
            feedback_up: 3,
            feedback_down: 1,
            feedback_share_up: Some(0.75),
            cost_micros: 7,
        }],
    };
    let schema = reply(doc, "get", "/v1/usage", "200");
    let report_v = v(&report);
    assert_shape(doc, schema, &report_v, "UsageReport");
    assert_shape(
        doc,
        &property(doc, schema, "data")["items"],
        &report_v["data"][0],
        "UsageEntry",
    );
    let document_view = DocumentView {
        id: DocumentId::new(),
        dataset_id: DatasetId::new(),
        title: "Billing".into(),
        source: None,
        mime_type: "text/plain".into(),
        metadata: json!({}),
        status: DocumentStatus::Ready,
        error: None,
        content_hash: "00".into(),
        chunk_count: 2,
        created_at: now(),
        updated_at: now(),
    };
    assert_shape(
        doc,
        reply(doc, "get", "/v1/documents/{id}", "200"),
        &v(&document_view),
        "DocumentView",
    );
    assert_shape(
        doc,
        reply(doc, "get", "/healthz", "200"),
        &v(&crate::routes::Status { status: "ok" }),
        "Status",
    );

    // The error body, as the OpenAI-compatible routes send it (every
    // property), and as every other route sends it (all but OpenAI's two).
    let err = v(&ApiError::not_found("bot").openai_body("req-1"));
    let schema =
        &doc["components"]["responses"]["NotFound"]["content"]["application/json"]["schema"];
    assert_shape(doc, schema, &err, "ErrorBody");
    assert_shape(
        doc,
        property(doc, schema, "error"),
        &err["error"],
        "ErrorObject",
    );
    let plain = v(&ApiError::not_found("bot").body("req-1"));
    let keys: BTreeSet<&str> = plain["error"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["code", "message", "request_id"]));
}

/// A request schema against its Rust type: `full` (every field set)
/// deserializes and has exactly the schema's properties; without any
/// required field it is refused, without any other it is still accepted;
/// an unknown field is refused exactly when the schema says so.
fn check_request<T: DeserializeOwned>(doc: &Value, schema: &Value, full: Value, what: &str) {
    let (props, required) = shape(doc, schema);
    let keys: BTreeSet<String> = full.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, props, "{what}: test body vs schema properties");
    serde_json::from_value::<T>(full.clone())
        .unwrap_or_else(|e| panic!("{what}: the full body is refused: {e}"));
    for k in &keys {
        let mut body = full.clone();
        body.as_object_mut().unwrap().remove(k);
        let parsed = serde_json::from_value::<T>(body);
        assert_eq!(
            parsed.is_err(),
            required.contains(k),
            "{what}: without {k} (required: {required:?})"
        );
    }
    let mut extra = full.clone();
    extra["surely_unknown"] = json!(1);
    assert_eq!(
        serde_json::from_value::<T>(extra).is_err(),
        resolve(doc, schema)["additionalProperties"] == false,
        "{what}: unknown fields"
    );
}

#[test]
fn request_schemas_match_what_the_types_accept() {
    let doc = document();
    let id = || json!(uuid::Uuid::now_v7());
    let d = &doc;
    check_request::<crate::chat::ChatBody>(
        d,
        request(d, "post", "/v1/chat"),
        json!({"bot_id": "demo", "message": "hi", "conversation_id": id(), "user_id": "u1", "stream": true}),
        "ChatBody",
    );
    check_request::<chatcore::admin::CreateTenant>(
        d,
        request(d, "post", "/v1/admin/tenants"),
        json!({"name": "Acme", "slug": "acme", "rate_limit_rpm": 60, "rate_limit_tpm": 1000, "public_rate_limit_rpm": 120, "features": {}}),
        "CreateTenant",
    );
    check_request::<chatcore::admin::UpdateTenant>(
        d,
        request(d, "patch", "/v1/admin/tenants/{id}"),
        json!({"name": "Acme", "slug": "acme", "status": "suspended", "rate_limit_rpm": null, "rate_limit_tpm": 5, "public_rate_limit_rpm": null, "features": {}}),
        "UpdateTenant",
    );
    check_request::<chatcore::admin::CreateProvider>(
        d,
        request(d, "post", "/v1/providers"),
        json!({"provider": "mock", "name": "Mock", "api_key": "sk-1", "base_url": "http://x", "default_model": "echo", "enabled": true}),
        "CreateProvider",
    );
    check_request::<chatcore::admin::UpdateProvider>(
        d,
        request(d, "patch", "/v1/providers/{id}"),
        json!({"name": "Mock", "api_key": null, "base_url": null, "default_model": "echo", "enabled": false}),
        "UpdateProvider",
    );
    check_request::<chatcore::admin::CreateBot>(
        d,
        request(d, "post", "/v1/bots"),
        json!({"name": "B", "slug": "b", "system_prompt": "x", "provider_id": id(), "model": "m",
               "fallback_provider_id": id(), "temperature": 0.5, "max_tokens": 10,
               "context_tokens": 1000, "is_public": true, "dataset_ids": [id()]}),
        "CreateBot",
    );
    check_request::<chatcore::admin::UpdateBot>(
        d,
        request(d, "patch", "/v1/bots/{id}"),
        json!({"name": "B", "slug": "b", "system_prompt": "x", "provider_id": id(), "model": null,
               "fallback_provider_id": null, "temperature": null, "max_tokens": null,
               "context_tokens": 1000, "is_public": false, "dataset_ids": [], "status": "disabled"}),
        "UpdateBot",
    );
    check_request::<chatcore::admin::CreateApiKey>(
        d,
        request(d, "post", "/v1/api-keys"),
        json!({"name": "k", "permissions": ["read"], "bot_ids": [id()], "rate_limit_rpm": 5,
               "expires_at": "2030-01-01T00:00:00Z"}),
        "CreateApiKey",
    );
    check_request::<chatcore::admin::CreateScope>(
        d,
        request(d, "post", "/v1/scopes"),
        json!({"bot_id": "b", "kind": "blocked_terms", "config": ["x"]}),
        "CreateScope",
    );
    check_request::<crate::datasets::CreateDataset>(
        d,
        request(d, "post", "/v1/datasets"),
        json!({"name": "docs", "provider_id": id(), "embedding_model": "e", "embedding_dim": 3}),
        "CreateDataset",
    );
    check_request::<crate::datasets::UploadDocument>(
        d,
        request(d, "post", "/v1/datasets/{id}/documents"),
        json!({"title": "T", "content": "C", "mime_type": "text/plain", "source": "s", "metadata": {}}),
        "UploadDocument",
    );
    check_request::<crate::datasets::Search>(
        d,
        request(d, "post", "/v1/datasets/{id}/search"),
        json!({"query": "q", "top_k": 3, "filter": {"lang": "en"}, "mode": "text"}),
        "Search",
    );
    // Secrets are write-only.
    let create = request(d, "post", "/v1/providers");
    assert_eq!(
        property(d, create, "api_key")["writeOnly"],
        true,
        "{}",
        resolve(d, create)
    );
}

#[test]
fn ids_are_uuid_strings_and_enums_list_their_values() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "BotId",
        "TenantId",
        "ProviderConfigId",
        "ApiKeyId",
        "DocumentId",
    ] {
        let s = &schemas[name];
        assert_eq!(
            (&s["type"], &s["format"]),
            (&json!("string"), &json!("uuid")),
            "{name}: {s}"
        );
    }
    fn values<T: std::fmt::Display>(all: &[T]) -> Value {
        all.iter().map(|v| json!(v.to_string())).collect()
    }
    for (name, all) in [
        ("Permission", values(Permission::ALL)),
        ("MessageStatus", values(MessageStatus::ALL)),
        ("DocumentStatus", values(DocumentStatus::ALL)),
        ("TenantStatus", values(TenantStatus::ALL)),
        ("BotStatus", values(BotStatus::ALL)),
        ("ActorKind", values(ActorKind::ALL)),
        ("AuthStyle", values(AuthStyle::ALL)),
        ("Role", values(Role::ALL)),
        ("Channel", values(Channel::ALL)),
    ] {
        assert_eq!(schemas[name]["enum"], all, "{name}: {}", schemas[name]);
        assert_eq!(schemas[name]["type"], "string", "{name}");
    }
    // A bot's fields point at the id schemas.
    let bot = &schemas["Bot"]["properties"];
    assert_eq!(bot["id"]["$ref"], "#/components/schemas/BotId");
    let fallback = non_null(doc, &bot["fallback_provider_id"]);
    assert_eq!(
        fallback["format"], "uuid",
        "{}",
        bot["fallback_provider_id"]
    );
    // The error codes: the documented list, and every code chatcore has.
    let codes = &schemas["ErrorObject"]["properties"]["code"]["enum"];
    assert_eq!(codes, &json!(ERROR_CODES));
    use chatcore::engine::ChatError as E;
    let errors = [
        E::InvalidRequest(String::new()),
        E::Unauthorized(String::new()),
        E::Forbidden(String::new()),
        E::FeatureDisabled(String::new()),
        E::GuardrailBlocked(String::new()),
        E::NotFound("x"),
        E::Conflict(String::new()),
        E::RateLimited {
            scope: "tenant",
            retry_after: std::time::Duration::from_secs(1),
        },
        E::unavailable(String::new()),
        E::internal(String::new()),
    ];
    for e in errors {
        assert!(ERROR_CODES.contains(&e.code()), "{}", e.code());
    }
    for c in [
        "provider_error",
        "provider_timeout",
        "payload_too_large",
        "unsupported_media_type",
    ] {
        assert!(ERROR_CODES.contains(&c));
    }
}
