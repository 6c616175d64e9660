//! Tenant-scoped reads: the one way this store reads a tenant's rows.
//!
//! [`SeaOrmStore::tenant_rows`] starts a read of one tenant-owned entity
//! with the `tenant_id = t` filter already in the query, and runs it in
//! that tenant's [`Tenancy`] (on PostgreSQL with row-level security, a
//! short transaction that names the tenant first; see [`super::scope`]).
//! A read written this way cannot leave out either wall. Inside a write
//! transaction, whose tenancy is set when it begins, [`of_tenant`] gives the
//! same filtered query.
//!
//! Reads that are cross-tenant by nature (key lookup by prefix, public
//! bots, the indexing queue, orphaned turns) do not go through here: each
//! names [`Tenancy::All`] where it is used. Raw SQL (chunk search) filters
//! by tenant in its text and runs in the tenant's scope by hand.

use sea_orm::sea_query::IntoCondition;
use sea_orm::{
    ColumnTrait, EntityTrait, FromQueryResult, Iterable, Order, PaginatorTrait, PrimaryKeyToColumn,
    PrimaryKeyTrait, QueryFilter, Select, sea_query::IntoValueTuple,
};
use uuid::Uuid;

use super::scope::{self, Tenancy};
use super::{SeaOrmStore, db_err, entities as e, found, paginate};
use crate::domain::TenantId;
use crate::store::{Page, PageRequest, StoreResult};

/// An entity whose rows belong to one tenant each.
pub(super) trait TenantOwned: EntityTrait {
    /// The column naming the owner (`tenant_id`; a tenant's own row is its
    /// `id`).
    const TENANT_ID: Self::Column;
}

macro_rules! tenant_owned {
    ($($entity:path => $col:expr),* $(,)?) => {
        $(impl TenantOwned for $entity {
            const TENANT_ID: <$entity as EntityTrait>::Column = $col;
        })*
    };
}

tenant_owned! {
    e::tenant::Entity => e::tenant::Column::Id,
    e::provider_config::Entity => e::provider_config::Column::TenantId,
    e::bot::Entity => e::bot::Column::TenantId,
    e::api_key::Entity => e::api_key::Column::TenantId,
    e::conversation::Entity => e::conversation::Column::TenantId,
    e::message::Entity => e::message::Column::TenantId,
    e::dataset::Entity => e::dataset::Column::TenantId,
    e::document::Entity => e::document::Column::TenantId,
    e::chunk::Entity => e::chunk::Column::TenantId,
    e::scope::Entity => e::scope::Column::TenantId,
    e::audit_log::Entity => e::audit_log::Column::TenantId,
    e::usage_daily::Entity => e::usage_daily::Column::TenantId,
    e::usage_daily_end_user::Entity => e::usage_daily_end_user::Column::TenantId,
    e::model_price::Entity => e::model_price::Column::TenantId,
    e::budget::Entity => e::budget::Column::TenantId,
    super::widget::widget_settings::Entity => super::widget::widget_settings::Column::TenantId,
    super::widget::message_feedback::Entity => super::widget::message_feedback::Column::TenantId,
}

/// A tenant-owned entity whose lists are pages by its UUIDv7 `id`
/// (creation order).
pub(super) trait ById: TenantOwned {
    /// The `id` column.
    const ID: Self::Column;
    /// A row's id.
    fn id_of(m: &Self::Model) -> Uuid;
}

macro_rules! by_id {
    ($($m:ident),* $(,)?) => {
        $(impl ById for e::$m::Entity {
            const ID: e::$m::Column = e::$m::Column::Id;
            fn id_of(m: &e::$m::Model) -> Uuid {
                m.id
            }
        })*
    };
}

by_id!(
    provider_config,
    bot,
    api_key,
    conversation,
    message,
    dataset,
    document,
    audit_log
);

/// `tenant`'s rows of `E`: `E::find()` with the tenant filter.
pub(super) fn of_tenant<E: TenantOwned>(tenant: TenantId) -> Select<E> {
    E::find().filter(E::TENANT_ID.eq(tenant.0))
}

/// A read of one tenant's rows of `E`, built up like a [`Select`] and run
/// by one of its ends: [`Self::one`], [`Self::get`], [`Self::all`],
/// [`Self::count`], [`Self::page`], [`Self::all_as`], [`Self::one_as`].
#[must_use = "a read does nothing until one of its ends runs it"]
pub(super) struct TenantRows<'s, E: EntityTrait> {
    store: &'s SeaOrmStore,
    tenant: TenantId,
    select: Select<E>,
}

impl SeaOrmStore {
    /// Starts a read of `tenant`'s rows of `E` (see the module docs).
    pub(super) fn tenant_rows<E: TenantOwned>(&self, tenant: TenantId) -> TenantRows<'_, E> {
        TenantRows {
            store: self,
            tenant,
            select: of_tenant::<E>(tenant),
        }
    }
}

impl<E: TenantOwned> TenantRows<'_, E> {
    /// Only the row with this primary key.
    pub(super) fn by_id(mut self, id: <E::PrimaryKey as PrimaryKeyTrait>::ValueType) -> Self {
        let mut keys = E::PrimaryKey::iter();
        for v in id.into_value_tuple() {
            if let Some(k) = keys.next() {
                self.select = self.select.filter(k.into_column().eq(v));
            }
        }
        self
    }

    /// Only rows matching `condition` too.
    pub(super) fn filter(mut self, condition: impl IntoCondition) -> Self {
        self.select = self.select.filter(condition);
        self
    }

    /// Anything else a [`Select`] takes (order, limit, columns); the tenant
    /// filter stays.
    pub(super) fn query(mut self, f: impl FnOnce(Select<E>) -> Select<E>) -> Self {
        self.select = f(self.select);
        self
    }

    /// The first row, if any.
    pub(super) async fn one(self) -> StoreResult<Option<E::Model>> {
        let db = self.store.scoped(Tenancy::One(self.tenant)).await?;
        let out = self.select.one(&db).await.map_err(db_err);
        scope::finish(db, out).await
    }

    /// The first row; `NotFound(what)` when there is none.
    pub(super) async fn get(self, what: &'static str) -> StoreResult<E::Model> {
        found(self.one().await?, what)
    }

    /// Every row.
    pub(super) async fn all(self) -> StoreResult<Vec<E::Model>> {
        let db = self.store.scoped(Tenancy::One(self.tenant)).await?;
        let out = self.select.all(&db).await.map_err(db_err);
        scope::finish(db, out).await
    }

    /// How many rows.
    pub(super) async fn count(self) -> StoreResult<u64>
    where
        E::Model: Sync,
    {
        let db = self.store.scoped(Tenancy::One(self.tenant)).await?;
        let out = self.select.count(&db).await.map_err(db_err);
        scope::finish(db, out).await
    }

    /// One page of the rows ordered by `id_col` (see `paginate`), each
    /// converted by `conv`.
    pub(super) async fn page<T>(
        self,
        page: &PageRequest,
        id_col: E::Column,
        order: Order,
        id_of: fn(&E::Model) -> Uuid,
        conv: fn(E::Model) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        let db = self.store.scoped(Tenancy::One(self.tenant)).await?;
        let out = paginate(&db, self.select, id_col, page, order, id_of, conv).await;
        scope::finish(db, out).await
    }

    /// One page of the rows by id, in `order`, each converted by `conv`.
    pub(super) async fn page_by_id<T>(
        self,
        page: &PageRequest,
        order: Order,
        conv: fn(E::Model) -> StoreResult<T>,
    ) -> StoreResult<Page<T>>
    where
        E: ById,
    {
        self.page(page, E::ID, order, E::id_of, conv).await
    }

    /// Every row of a query that selects its own columns (aggregates), as `M`.
    pub(super) async fn all_as<M: FromQueryResult + Send + Sync>(self) -> StoreResult<Vec<M>> {
        let db = self.store.scoped(Tenancy::One(self.tenant)).await?;
        let out = self.select.into_model::<M>().all(&db).await.map_err(db_err);
        scope::finish(db, out).await
    }

    /// The first row of such a query, as `M`.
    pub(super) async fn one_as<M: FromQueryResult + Send + Sync>(self) -> StoreResult<Option<M>> {
        let db = self.store.scoped(Tenancy::One(self.tenant)).await?;
        let out = self.select.into_model::<M>().one(&db).await.map_err(db_err);
        scope::finish(db, out).await
    }
}
