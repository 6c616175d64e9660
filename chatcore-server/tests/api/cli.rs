//! The binary's management commands, run as a deployer would, on a SQLite
//! file; the server then accepts the keys they printed.

use std::process::Command;

use chatcore_server::config::Config;
use serde_json::json;

use crate::helpers::*;

fn run(db: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chatcore-server"))
        .args(args)
        .env("CHATCORE_DATABASE_URL", db)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn printed_key(out: &str) -> String {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("cc_"))
        .unwrap_or_else(|| panic!("no key in {out}"))
        .to_string()
}

#[tokio::test]
async fn tenant_and_key_commands_work_on_the_database_and_the_server_accepts_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    assert!(run(&db, &["migrate"]).contains("migrated"));
    let out = run(
        &db,
        &["tenant", "create", "--name", "Acme Inc", "--rpm", "600"],
    );
    let admin_key = printed_key(&out);
    assert!(out.contains("acme-inc"));
    let list = run(&db, &["tenant", "list"]);
    assert!(
        list.contains("acme-inc") && list.contains("active"),
        "{list}"
    );
    let out = run(
        &db,
        &[
            "key",
            "create",
            "--tenant",
            "acme-inc",
            "--name",
            "ops",
            "--permission",
            "admin",
        ],
    );
    let ops_key = printed_key(&out);
    let help = run(&db, &["key", "create", "--help"]);
    assert!(help.contains("--permission"));

    // A server on the same database (and key file) accepts both keys.
    let url = db.clone();
    let app = spawn_app_with(move |c: &mut Config| c.database_url = url).await;
    for k in [&admin_key, &ops_key] {
        let (s, v) = app
            .call(reqwest::Method::GET, "/v1/api-keys", Some(k), None)
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, v) = app
        .call(
            reqwest::Method::GET,
            "/v1/audit-logs",
            Some(&admin_key),
            None,
        )
        .await;
    let actors: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].clone(), r["actor"].clone()))
        .collect();
    assert_eq!(
        actors,
        [
            (
                json!("api_key.created"),
                json!({"kind": "operator", "id": "cli"})
            ),
            (
                json!("tenant.created"),
                json!({"kind": "operator", "id": "cli"})
            )
        ]
    );
    let (_, keys) = app
        .call(reqwest::Method::GET, "/v1/api-keys", Some(&admin_key), None)
        .await;
    let ops_id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ops")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run(&db, &["key", "revoke", "--tenant", "acme-inc", &ops_id]);
    assert!(out.contains("revoked"));
    let (_, one) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/api-keys/{ops_id}"),
            Some(&admin_key),
            None,
        )
        .await;
    assert!(one["revoked_at"].is_string(), "{one}");
    app.stop().await;
}

#[test]
fn the_openapi_command_prints_the_document_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("o.db").display());
    let printed: serde_json::Value = serde_json::from_str(&run(&db, &["openapi"])).unwrap();
    assert_eq!(printed["openapi"], "3.1.0");
    assert_eq!(&printed, chatcore_server::openapi::document());
}

#[tokio::test]
async fn check_exits_non_zero_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_chatcore-server"))
            .arg("check")
            .env("CHATCORE_DATABASE_URL", &db)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    // A database the migrations never ran on.
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("migration(s) not applied"), "{stdout}");
    run(&db, &["migrate"]);
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("ok:"), "{stdout}");
}
