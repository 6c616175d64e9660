//! The failed-authentication throttle: a burst per IP, then refusals with a
//! wait; one counted audit record per IP, credential kind and minute.

use std::sync::Arc;
use std::time::Duration;

use chatcore::audit::{AuditConfig, AuditWriter};
use chatcore::auth::throttle::{AuthThrottle, Credential};
use chatcore::ratelimit::LocalRateLimiter;
use chatcore::store::{SeaOrmStore, StoreOptions};
use sea_orm::{ConnectionTrait, Database, Statement};

#[tokio::test]
async fn a_burst_then_429s_then_one_counted_record_per_ip_and_minute() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
    let store = Arc::new(
        SeaOrmStore::open(&url, StoreOptions::default())
            .await
            .unwrap(),
    );
    let (audit, _task) = AuditWriter::spawn(store.clone(), AuditConfig::default());
    let throttle = AuthThrottle::new(Arc::new(LocalRateLimiter::new()), audit.clone(), 5);

    let ip = Some("203.0.113.7");
    let mut refused = 0;
    let mut verified = 0;
    for i in 0..12 {
        match throttle
            .admit(ip, Credential::ApiKey, Some(&format!("r{i}")))
            .await
        {
            Ok(()) => {
                verified += 1;
                throttle
                    .failed(
                        ip,
                        Credential::ApiKey,
                        "unauthorized",
                        Some(&format!("r{i}")),
                    )
                    .await;
            }
            Err(wait) => {
                refused += 1;
                assert!(
                    wait >= Duration::from_secs(1) && wait <= Duration::from_secs(12),
                    "{wait:?}"
                );
            }
        }
    }
    assert_eq!(verified, 6, "a burst of 5, and the one that ran over it");
    assert_eq!(refused, 6);
    // Another IP and the operator key of a third are counted apart.
    throttle
        .admit(Some("198.51.100.1"), Credential::ApiKey, None)
        .await
        .unwrap();
    throttle
        .failed(
            Some("198.51.100.1"),
            Credential::ApiKey,
            "unauthorized",
            None,
        )
        .await;
    throttle
        .failed(Some("192.0.2.9"), Credential::Operator, "wrong_key", None)
        .await;
    // In-process callers (no IP) are never throttled.
    for _ in 0..20 {
        throttle
            .admit(None, Credential::ApiKey, None)
            .await
            .unwrap();
        throttle
            .failed(None, Credential::ApiKey, "unauthorized", None)
            .await;
    }

    throttle.flush().await;
    audit.flush().await;
    let raw = Database::connect(&url).await.unwrap();
    let rows = raw
        .query_all_raw(Statement::from_string(
            raw.get_database_backend(),
            "SELECT ip, actor_kind, action, metadata, tenant_id FROM audit_logs ORDER BY ip",
        ))
        .await
        .unwrap();
    let mut by_ip: std::collections::BTreeMap<String, (u64, u64, String)> = Default::default();
    for r in &rows {
        let ip: String = r.try_get("", "ip").unwrap();
        let action: String = r.try_get("", "action").unwrap();
        let kind: String = r.try_get("", "actor_kind").unwrap();
        let tenant: Option<String> = r.try_get("", "tenant_id").ok().flatten();
        let meta: serde_json::Value = match r.try_get::<serde_json::Value>("", "metadata") {
            Ok(v) => v,
            Err(_) => serde_json::from_str(&r.try_get::<String>("", "metadata").unwrap()).unwrap(),
        };
        assert_eq!(action, "auth.failed");
        assert!(tenant.is_none());
        let e = by_ip.entry(ip).or_insert((0, 0, kind));
        e.0 += meta["count"].as_u64().unwrap();
        e.1 += meta["throttled"].as_u64().unwrap();
    }
    // One record per window: 4 windows (two if a minute turned mid-test,
    // at most one more each).
    assert!(rows.len() >= 4 && rows.len() <= 8, "{} rows", rows.len());
    assert_eq!(by_ip["203.0.113.7"].0, 6);
    assert_eq!(
        by_ip["203.0.113.7"].1, 6,
        "throttled attempts are counted too"
    );
    assert_eq!(by_ip["198.51.100.1"].0, 1);
    assert_eq!(by_ip["192.0.2.9"], (1, 0, "operator".into()));
    assert_eq!(by_ip["unknown"].0, 20);
    raw.close().await.unwrap();
}
