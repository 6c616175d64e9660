//! A driver error reaches callers only as the `source()` of a store error,
//! and from there of the services' error.

use std::error::Error as _;

use sea_orm::{DbErr, RuntimeErr};

use super::db_err;
use crate::engine::ChatError;
use crate::error::Report;
use crate::store::StoreError;

#[test]
fn a_failed_statement_is_internal_with_the_db_err_as_source() {
    let e = db_err(DbErr::Custom("no such column: nope".into()));
    assert!(matches!(e, StoreError::Internal { .. }), "{e:?}");
    let source = e.source().expect("a source");
    assert!(
        matches!(source.downcast_ref::<DbErr>(), Some(DbErr::Custom(m)) if m == "no such column: nope"),
        "{source:?}"
    );
    // The message does not repeat the cause; the report shows both.
    assert!(!e.to_string().contains("nope"), "{e}");
    assert!(Report(&e).to_string().contains("no such column: nope"));
}

#[test]
fn a_lost_connection_is_unavailable_with_the_db_err_as_source() {
    let e = db_err(DbErr::Conn(RuntimeErr::Internal("connection reset".into())));
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.source().and_then(|s| s.downcast_ref::<DbErr>()).is_some());
}

#[test]
fn the_services_error_keeps_the_chain_down_to_the_db_err() {
    let store = db_err(DbErr::Custom("disk I/O error".into()));
    let cloned = store.clone();
    let chat = ChatError::from(store);
    assert!(matches!(chat, ChatError::Internal { .. }), "{chat:?}");
    assert_eq!(chat.code(), "internal");
    assert_eq!(chat.public_message(), "internal error");
    let chain: Vec<_> = crate::error::chain(&chat).collect();
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert!(chain[1].downcast_ref::<StoreError>().is_some());
    assert!(chain[2].downcast_ref::<DbErr>().is_some());
    // A clone (the writer answers every job of a batch with one) shares it.
    assert!(
        cloned
            .source()
            .and_then(|s| s.downcast_ref::<DbErr>())
            .is_some()
    );
}

#[test]
fn an_io_error_is_the_source_of_an_unavailable_database_file() {
    let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
    let store = StoreError::unavailable_from("database file /x/y.db", io);
    let chat = ChatError::from(store);
    assert_eq!(chat.code(), "unavailable");
    assert_eq!(chat.public_message(), "service temporarily unavailable");
    let io = crate::error::chain(&chat)
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .expect("the io::Error in the chain");
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
}
