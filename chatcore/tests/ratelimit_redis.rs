//! The Redis limiter on the running Redis (`CHATCORE_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`): several limiter instances (as several
//! server instances would have) share one limit, exactly.

use std::sync::Arc;
use std::time::Duration;

use chatcore::ratelimit::{Decision, Quota, RateLimiter, RedisRateLimiter};

fn url() -> String {
    std::env::var("CHATCORE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn limiter() -> RedisRateLimiter {
    RedisRateLimiter::connect(&url())
        .await
        .expect("Redis must be running for this test")
}

fn fresh_key() -> String {
    format!("test:{}", uuid::Uuid::now_v7())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_one_limit_under_concurrency() {
    // Two "instances", each with its own connection, 8 tasks each.
    let a = Arc::new(limiter().await);
    let b = Arc::new(limiter().await);
    let key = fresh_key();
    let q = Quota::per_minute(50);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..20 {
                if l.check(&key, q, 1).await.unwrap().is_allowed() {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    // 320 attempts within far less than the 1.2 s one unit takes to refill:
    // exactly the burst is admitted, never more.
    assert!(total <= 51, "admitted {total} of a limit of 50");
    assert!(total >= 50, "admitted only {total}");
}

#[tokio::test]
async fn refused_checks_consume_nothing_and_say_when_to_retry() {
    let l = limiter().await;
    let key = fresh_key();
    let q = Quota {
        limit: 2,
        period: Duration::from_secs(3600),
    };
    assert!(matches!(
        l.check(&key, q, 1).await.unwrap(),
        Decision::Allowed { remaining: 1 }
    ));
    assert!(matches!(
        l.check(&key, q, 1).await.unwrap(),
        Decision::Allowed { remaining: 0 }
    ));
    match l.check(&key, q, 1).await.unwrap() {
        Decision::Limited { retry_after } => {
            assert!(
                retry_after > Duration::from_secs(1700) && retry_after <= Duration::from_secs(1800),
                "{retry_after:?}"
            )
        }
        d => panic!("{d:?}"),
    }
    // charge records beyond the limit.
    let k2 = fresh_key();
    let tokens = Quota {
        limit: 1000,
        period: Duration::from_secs(60),
    };
    l.charge(&k2, tokens, 1500).await.unwrap();
    assert!(!l.check(&k2, tokens, 1).await.unwrap().is_allowed());
}

#[tokio::test]
async fn a_bad_url_is_an_error_without_the_password() {
    let e = RedisRateLimiter::connect("redis://:hunter2-secret@127.0.0.1:1/0")
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // It still says what went wrong: the error's kind.
    let kind = e.to_string();
    let kind = kind
        .split("cannot connect to Redis: ")
        .nth(1)
        .unwrap_or_default();
    assert_eq!(kind, "Io", "a refused connection is an I/O error: {e}");
    // Nor does the limiter's Debug show its connection.
    let l = limiter().await;
    assert_eq!(format!("{l:?}"), "RedisRateLimiter { .. }");
    let e = RedisRateLimiter::connect("not a url with hunter2")
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// The failed-authentication throttle on Redis: failures counted by one
/// instance throttle the IP on another.
#[tokio::test]
async fn auth_failures_throttle_an_ip_across_instances() {
    use chatcore::audit::{AuditConfig, AuditWriter};
    use chatcore::auth::throttle::{AuthThrottle, Credential};
    let store = Arc::new(chatcore::store::SeaOrmStore::in_memory().await.unwrap());
    let (audit, _task) = AuditWriter::spawn(store, AuditConfig::default());
    let a = AuthThrottle::new(Arc::new(limiter().await), audit.clone(), 3);
    let b = AuthThrottle::new(Arc::new(limiter().await), audit, 3);
    let ip = fresh_key();
    for _ in 0..4 {
        a.admit(Some(&ip), Credential::ApiKey, None).await.unwrap();
        a.failed(Some(&ip), Credential::ApiKey, "unauthorized", None)
            .await;
    }
    let wait = b
        .admit(Some(&ip), Credential::Operator, None)
        .await
        .expect_err("the other instance sees the failures");
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
    assert!(
        b.admit(Some(&fresh_key()), Credential::ApiKey, None)
            .await
            .is_ok()
    );
}

/// A TCP relay to the real Redis that the test can cut: every connection
/// through it is dropped when `cut` is set, and new ones are refused.
async fn cuttable_relay() -> (String, Arc<tokio::sync::Notify>) {
    use tokio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(tokio::sync::Notify::new());
    let upstream = url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let c = cut.clone();
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = c.notified() => break,
                accepted = listener.accept() => {
                    let (mut down, _) = accepted.unwrap();
                    let upstream = upstream.clone();
                    conns.spawn(async move {
                        let mut up = TcpStream::connect(upstream).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    });
                }
            }
        }
        // Dropping the listener and the relays closes every connection.
        conns.abort_all();
    });
    (format!("redis://127.0.0.1:{port}"), cut)
}

/// By default a Redis failure refuses: no check passes, no charge is
/// lost into a per-instance count, and each failure is counted.
#[tokio::test]
async fn when_redis_goes_away_limits_refuse_rather_than_count_per_instance() {
    use chatcore::ratelimit::{FailoverRateLimiter, RateLimiter as _};
    let (relay, cut) = cuttable_relay().await;
    let l = FailoverRateLimiter::new(RedisRateLimiter::connect(&relay).await.unwrap());
    let q = Quota {
        limit: 5,
        period: Duration::from_secs(3600),
    };
    let key = fresh_key();
    assert!(l.check(&key, q, 1).await.unwrap().is_allowed());
    assert_eq!(l.failures(), 0);
    cut.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        let r = l.check(&key, q, 1).await;
        assert!(r.is_err(), "refused while Redis is gone: {r:?}");
    }
    assert!(l.charge(&key, q, 10).await.is_err());
    assert_eq!(l.failures(), 4);
    assert_eq!(l.backend_failures(), 4);
    // The error names no URL (the relay's address stands for a password).
    let e = l.check(&key, q, 1).await.unwrap_err().to_string();
    assert!(!e.contains("127.0.0.1"), "{e}");
}

/// With `OnRedisFailure::Local` (CHATCORE_REDIS_FAILURE=local), the
/// instance's own limiter takes over: checks are still refused over the
/// quota and charges still count.
#[tokio::test]
async fn failover_keeps_checking_and_charging_when_redis_goes_away() {
    use chatcore::ratelimit::{FailoverRateLimiter, OnRedisFailure};
    let (relay, cut) = cuttable_relay().await;
    let l = FailoverRateLimiter::with_policy(
        RedisRateLimiter::connect(&relay).await.unwrap(),
        OnRedisFailure::Local,
    );
    let q = Quota {
        limit: 2,
        period: Duration::from_secs(3600),
    };
    // Through Redis while it answers.
    let key = fresh_key();
    assert!(l.check(&key, q, 1).await.unwrap().is_allowed());
    assert_eq!(
        limiter().await.check(&key, q, 1).await.unwrap(),
        Decision::Allowed { remaining: 0 },
        "the first check was recorded in Redis"
    );
    // A charge goes to Redis too: another instance sees it.
    let tokens = Quota {
        limit: 1000,
        period: Duration::from_secs(60),
    };
    let charged = fresh_key();
    l.charge(&charged, tokens, 1500).await.unwrap();
    assert!(
        !limiter()
            .await
            .check(&charged, tokens, 1)
            .await
            .unwrap()
            .is_allowed(),
        "the charge was recorded in Redis"
    );
    assert_eq!(l.failures(), 0);
    cut.notify_one();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Redis is gone: the instance's own limiter decides.
    let key = fresh_key();
    assert!(l.check(&key, q, 1).await.unwrap().is_allowed());
    assert!(l.check(&key, q, 1).await.unwrap().is_allowed());
    assert!(
        !l.check(&key, q, 1).await.unwrap().is_allowed(),
        "the fallback enforces the quota"
    );
    let k2 = fresh_key();
    l.charge(&k2, tokens, 1500).await.unwrap();
    assert!(
        !l.check(&k2, tokens, 1).await.unwrap().is_allowed(),
        "a charge made while Redis was down counts"
    );
}
