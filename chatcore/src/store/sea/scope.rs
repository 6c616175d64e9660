//! Row-level security on PostgreSQL: which tenants' rows a statement may
//! see and write.
//!
//! The `row_level_security` migration puts every tenant-owned table under
//! policies on two transaction-local settings, `chatcore.tenant_ids` and
//! `chatcore.all_tenants`, and creates the role `chatcore_app` that the
//! store runs as ([`StoreOptions::database_role`](super::StoreOptions)). A
//! role that owns no table is bound by the policies, so a query that forgot
//! its `tenant_id` filter still returns, changes and deletes nothing of
//! another tenant: a second wall behind the filter that every query has.
//!
//! Every statement on a tenant-owned table therefore runs in a transaction
//! whose first statement names its [`Tenancy`]. A session-level setting on
//! a pooled connection would outlive the request and leak to the next user
//! of the connection; `set_config(..., true)` ends with the transaction, so
//! reads that were single statements on the pool become a short
//! transaction (`BEGIN`, the setting, the read, `COMMIT`) when the role is
//! in use, and stay single statements otherwise (SQLite, or PostgreSQL run
//! as the tables' owner, where the policies bind nothing).
//!
//! The settings guard against code that forgets a filter, not against SQL
//! injection: any statement the role can run could also set them. The
//! cross-tenant scope ([`Tenancy::All`]) is used by the operations that are
//! cross-tenant by nature, each named where it is used.

use sea_orm::{
    ConnectionTrait, DatabaseExecutor, DatabaseTransaction, DbBackend, Statement, TransactionTrait,
};
use uuid::Uuid;

use super::{SeaOrmStore, db_err};
use crate::domain::TenantId;
use crate::store::StoreResult;

/// Which tenants' rows a transaction may touch.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tenancy<'a> {
    /// One tenant's: every request of a tenant.
    One(TenantId),
    /// The rows of any of these tenants: a group-commit batch of jobs from
    /// several tenants (each job's own tenant is still checked in code).
    Many(&'a [Uuid]),
    /// Every tenant's, for operations that are cross-tenant by nature: API
    /// key lookup by prefix (before the tenant is known), public bot lookup,
    /// operator endpoints, orphaned turns, the document queue, `check`.
    All,
}

impl Tenancy<'_> {
    fn settings(&self) -> (String, &'static str) {
        match self {
            Tenancy::One(t) => (t.0.to_string(), "off"),
            Tenancy::Many(ids) => (
                ids.iter()
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                "off",
            ),
            Tenancy::All => (String::new(), "on"),
        }
    }
}

/// The simple query that begins a transaction with `tenancy` set: two
/// statements in one round trip, where a `BEGIN` and then
/// [`set_tenancy`] take two. The settings are written into the SQL, which
/// is safe because they hold only UUIDs (hex digits and dashes), commas
/// and `on`/`off`; anything else is refused. PostgreSQL only.
pub(super) fn begin_with_tenancy(tenancy: Tenancy<'_>) -> Option<String> {
    let (ids, all) = tenancy.settings();
    ids.bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b',')
        .then(|| {
            format!(
                "BEGIN; SELECT set_config('chatcore.tenant_ids', '{ids}', true), \
                 set_config('chatcore.all_tenants', '{all}', true)"
            )
        })
}

/// Sets `tenancy` for the rest of the transaction `db` is in (one
/// statement, prepared once per connection). PostgreSQL only.
pub(super) async fn set_tenancy<C: ConnectionTrait>(
    db: &C,
    tenancy: Tenancy<'_>,
) -> StoreResult<()> {
    let (ids, all) = tenancy.settings();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config('chatcore.tenant_ids', $1, true), \
         set_config('chatcore.all_tenants', $2, true)",
        [ids.into(), all.into()],
    ))
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Ends what [`SeaOrmStore::scoped`] or [`SeaOrmStore::scoped_write`]
/// began: commits its transaction, if it took one.
pub(super) async fn done(db: DatabaseExecutor<'_>) -> StoreResult<()> {
    if let DatabaseExecutor::OwnedTransaction(t) = db {
        t.commit().await.map_err(db_err)?;
    }
    Ok(())
}

impl SeaOrmStore {
    /// Whether the policies bind this store's connections.
    pub(super) fn rls(&self) -> bool {
        self.rls
    }

    /// Where to run reads of `tenancy`: the pool itself when row-level
    /// security does not bind this store, else a transaction on it with
    /// the tenancy set. Hand it to [`done`] when finished (dropping it rolls
    /// the transaction back, which is harmless for reads).
    pub(super) async fn scoped(&self, tenancy: Tenancy<'_>) -> StoreResult<DatabaseExecutor<'_>> {
        self.scoped_on(&self.db, tenancy).await
    }

    /// [`Self::scoped`] for writes that are one statement (on the write
    /// pool).
    pub(super) async fn scoped_write(
        &self,
        tenancy: Tenancy<'_>,
    ) -> StoreResult<DatabaseExecutor<'_>> {
        self.scoped_on(&self.wdb, tenancy).await
    }

    async fn scoped_on<'a>(
        &self,
        pool: &'a sea_orm::DatabaseConnection,
        tenancy: Tenancy<'_>,
    ) -> StoreResult<DatabaseExecutor<'a>> {
        if !self.rls {
            return Ok(DatabaseExecutor::Connection(pool));
        }
        let txn: DatabaseTransaction = pool.begin().await.map_err(db_err)?;
        set_tenancy(&txn, tenancy).await?;
        Ok(DatabaseExecutor::OwnedTransaction(txn))
    }

    /// Sets `tenancy` inside a transaction of this store (nothing when the
    /// policies do not bind it).
    pub(super) async fn set_tenancy_in<C: ConnectionTrait>(
        &self,
        db: &C,
        tenancy: Tenancy<'_>,
    ) -> StoreResult<()> {
        if self.rls {
            set_tenancy(db, tenancy).await?;
        }
        Ok(())
    }
}

/// Ends `db` after the work done on it gave `out`: commits when `out` is
/// `Ok`; an error drops the transaction, which rolls it back.
pub(super) async fn finish<T>(db: DatabaseExecutor<'_>, out: StoreResult<T>) -> StoreResult<T> {
    if out.is_ok() {
        done(db).await?;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_begins_with_the_batch_tenants_in_one_query() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sql = begin_with_tenancy(Tenancy::Many(&[a, b])).unwrap();
        assert!(sql.starts_with("BEGIN; SELECT set_config("), "{sql}");
        assert!(
            sql.contains(&format!(
                "set_config('chatcore.tenant_ids', '{a},{b}', true)"
            )),
            "{sql}"
        );
        assert!(
            sql.contains("set_config('chatcore.all_tenants', 'off', true)"),
            "{sql}"
        );
        let all = begin_with_tenancy(Tenancy::All).unwrap();
        assert!(all.contains("'chatcore.tenant_ids', '', true"), "{all}");
        assert!(all.contains("'chatcore.all_tenants', 'on', true"), "{all}");
    }
}
