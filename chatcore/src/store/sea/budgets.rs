//! Budgets, price overrides, the per-end-user usage rollup and the spent
//! amount a budget is rebuilt from (migration `cost_and_budgets`).

use sea_orm::prelude::Expr;
use sea_orm::sea_query::{Alias, ExprTrait, Func, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Order,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::{SeaOrmStore, USAGE_SLOTS, UsageDelta, db_err, e, found, write_err};
use crate::domain::*;
use crate::pricing::Price;
use crate::store::*;

fn budget(m: e::budget::Model) -> StoreResult<Budget> {
    let bad =
        |what: &str, v: &str| StoreError::internal(format!("stored {what} {v:?} is not valid"));
    Ok(Budget {
        id: BudgetId(m.id),
        tenant_id: TenantId(m.tenant_id),
        scope: m.scope.parse().map_err(|_| bad("budget scope", &m.scope))?,
        api_key_id: m.api_key_id.map(ApiKeyId),
        bot_id: m.bot_id.map(BotId),
        end_user_id: m.end_user_id,
        period: m
            .period
            .parse()
            .map_err(|_| bad("budget period", &m.period))?,
        amount_micros: m.amount_micros,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn price(m: e::model_price::Model) -> PriceOverride {
    PriceOverride {
        id: PriceId(m.id),
        tenant_id: TenantId(m.tenant_id),
        provider_id: ProviderConfigId(m.provider_config_id),
        model: m.model,
        price: Price {
            input_per_mtok: m.input_per_mtok,
            cached_input_per_mtok: m.cached_input_per_mtok,
            output_per_mtok: m.output_per_mtok,
        },
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

#[derive(Debug, FromQueryResult)]
struct Sum {
    spent: Option<i64>,
}

#[derive(Debug, FromQueryResult)]
struct ByEndUser {
    grp: String,
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    cost_micros: i64,
}

impl SeaOrmStore {
    pub(super) async fn create_budget_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        new: NewBudget,
    ) -> StoreResult<Budget> {
        if let Some(b) = new.bot_id {
            Self::find_bot(db, tenant, b).await?;
        }
        if let Some(k) = new.api_key_id {
            found(
                e::api_key::Entity::find_by_id(k.0)
                    .filter(e::api_key::Column::TenantId.eq(tenant.0))
                    .one(db)
                    .await
                    .map_err(db_err)?,
                "api key",
            )?;
        }
        let t = now();
        let m = e::budget::ActiveModel {
            id: Set(BudgetId::new().0),
            tenant_id: Set(tenant.0),
            scope: Set(new.scope.as_str().into()),
            api_key_id: Set(new.api_key_id.map(|k| k.0)),
            bot_id: Set(new.bot_id.map(|b| b.0)),
            end_user_id: Set(new.end_user_id),
            period: Set(new.period.as_str().into()),
            amount_micros: Set(new.amount_micros),
            created_at: Set(t),
            updated_at: Set(t),
        }
        .insert(db)
        .await
        .map_err(|e| write_err(e, "budget"))?;
        budget(m)
    }

    pub(super) async fn update_budget_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: BudgetId,
        patch: BudgetPatch,
    ) -> StoreResult<Budget> {
        let m = found(
            e::budget::Entity::find_by_id(id.0)
                .filter(e::budget::Column::TenantId.eq(tenant.0))
                .one(db)
                .await
                .map_err(db_err)?,
            "budget",
        )?;
        let mut a: e::budget::ActiveModel = m.into();
        if let Some(n) = patch.amount_micros {
            a.amount_micros = Set(n);
        }
        if let Some(p) = patch.period {
            a.period = Set(p.as_str().into());
        }
        a.updated_at = Set(now());
        budget(a.update(db).await.map_err(db_err)?)
    }

    pub(super) async fn delete_budget_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: BudgetId,
    ) -> StoreResult<()> {
        let r = e::budget::Entity::delete_many()
            .filter(e::budget::Column::Id.eq(id.0))
            .filter(e::budget::Column::TenantId.eq(tenant.0))
            .exec(db)
            .await
            .map_err(db_err)?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("budget"));
        }
        Ok(())
    }

    pub(super) async fn put_price_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        new: NewPrice,
    ) -> StoreResult<PriceOverride> {
        use e::model_price::Column as P;
        found(
            e::provider_config::Entity::find_by_id(new.provider_id.0)
                .filter(e::provider_config::Column::TenantId.eq(tenant.0))
                .one(db)
                .await
                .map_err(db_err)?,
            "provider",
        )?;
        let existing = e::model_price::Entity::find()
            .filter(P::TenantId.eq(tenant.0))
            .filter(P::ProviderConfigId.eq(new.provider_id.0))
            .filter(P::Model.eq(new.model.clone()))
            .one(db)
            .await
            .map_err(db_err)?;
        let t = now();
        let m = match existing {
            Some(m) => {
                let mut a: e::model_price::ActiveModel = m.into();
                a.input_per_mtok = Set(new.price.input_per_mtok);
                a.cached_input_per_mtok = Set(new.price.cached_input_per_mtok);
                a.output_per_mtok = Set(new.price.output_per_mtok);
                a.updated_at = Set(t);
                a.update(db).await.map_err(db_err)?
            }
            None => e::model_price::ActiveModel {
                id: Set(PriceId::new().0),
                tenant_id: Set(tenant.0),
                provider_config_id: Set(new.provider_id.0),
                model: Set(new.model),
                input_per_mtok: Set(new.price.input_per_mtok),
                cached_input_per_mtok: Set(new.price.cached_input_per_mtok),
                output_per_mtok: Set(new.price.output_per_mtok),
                created_at: Set(t),
                updated_at: Set(t),
            }
            .insert(db)
            .await
            .map_err(|e| write_err(e, "price"))?,
        };
        Ok(price(m))
    }

    pub(super) async fn delete_price_in<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        id: PriceId,
    ) -> StoreResult<()> {
        let r = e::model_price::Entity::delete_many()
            .filter(e::model_price::Column::Id.eq(id.0))
            .filter(e::model_price::Column::TenantId.eq(tenant.0))
            .exec(db)
            .await
            .map_err(db_err)?;
        if r.rows_affected == 0 {
            return Err(StoreError::NotFound("price"));
        }
        Ok(())
    }

    pub(super) async fn list_budgets_of(&self, tenant: TenantId) -> StoreResult<Vec<Budget>> {
        self.tenant_rows::<e::budget::Entity>(tenant)
            .query(|q| q.order_by_asc(e::budget::Column::Id).limit(10_000))
            .all()
            .await?
            .into_iter()
            .map(budget)
            .collect()
    }

    pub(super) async fn get_budget_of(
        &self,
        tenant: TenantId,
        id: BudgetId,
    ) -> StoreResult<Budget> {
        budget(
            self.tenant_rows::<e::budget::Entity>(tenant)
                .by_id(id.0)
                .get("budget")
                .await?,
        )
    }

    pub(super) async fn list_prices_of(&self, tenant: TenantId) -> StoreResult<Vec<PriceOverride>> {
        Ok(self
            .tenant_rows::<e::model_price::Entity>(tenant)
            .query(|q| q.order_by_asc(e::model_price::Column::Id).limit(10_000))
            .all()
            .await?
            .into_iter()
            .map(price)
            .collect())
    }

    pub(super) async fn budget_spent_of(
        &self,
        tenant: TenantId,
        b: &Budget,
        since: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<i64> {
        use e::message::Column as M;
        let mut q = self
            .tenant_rows::<e::message::Entity>(tenant)
            .query(|q| {
                q.select_only().expr_as(
                    Func::cast_as(Func::sum(Expr::col(M::CostMicros)), Alias::new("BIGINT")),
                    "spent",
                )
            })
            .filter(M::CreatedAt.gte(since))
            .filter(M::Role.eq(crate::domain::Role::Assistant.as_str()))
            .filter(M::CostMicros.is_not_null());
        match b.scope {
            BudgetScope::Tenant => {}
            BudgetScope::ApiKey => {
                q = q.filter(M::ApiKeyId.eq(b.api_key_id.map(|k| k.0)));
            }
            BudgetScope::Bot => {
                q = q.filter(M::BotId.eq(b.bot_id.map(|k| k.0)));
            }
            BudgetScope::EndUser => {
                q = q
                    .filter(M::BotId.eq(b.bot_id.map(|k| k.0)))
                    .filter(M::EndUserId.eq(b.end_user_id.clone()));
            }
        }
        let s = q.one_as::<Sum>().await?;
        Ok(s.and_then(|s| s.spent).unwrap_or(0))
    }

    /// Adds the end-user share of outcomes to `usage_daily_end_users`.
    pub(super) async fn add_end_user_usage<C: ConnectionTrait>(
        &self,
        db: &C,
        changes: Vec<(e::message::Model, UsageDelta)>,
    ) -> StoreResult<()> {
        add_end_user_usage(db, self.backend, changes).await
    }
}

/// Adds the end-user share of a batch's outcomes to `usage_daily_end_users`
/// (messages without an end user add nothing): one multi-row upsert.
pub(super) async fn add_end_user_usage<C: ConnectionTrait>(
    db: &C,
    backend: DbBackend,
    changes: Vec<(e::message::Model, UsageDelta)>,
) -> StoreResult<()> {
    for stmt in end_user_usage_statements(backend, changes) {
        db.execute(&stmt).await.map_err(db_err)?;
    }
    Ok(())
}

/// The end-user sums of a batch's outcomes, sorted, as the writer's rollup
/// sorts its own: one lock order for every transaction.
pub(super) fn end_user_sums(
    changes: Vec<(e::message::Model, UsageDelta)>,
) -> Vec<((Uuid, chrono::NaiveDate, Uuid, String), UsageDelta)> {
    let mut sums: std::collections::BTreeMap<(Uuid, chrono::NaiveDate, Uuid, String), UsageDelta> =
        Default::default();
    for (m, d) in changes {
        let Some(u) = m.end_user_id.clone() else {
            continue;
        };
        if d == UsageDelta::default() {
            continue;
        }
        let s = sums
            .entry((m.tenant_id, m.created_at.date_naive(), m.bot_id, u))
            .or_default();
        s.requests += d.requests;
        s.prompt_tokens += d.prompt_tokens;
        s.completion_tokens += d.completion_tokens;
        s.total_tokens += d.total_tokens;
        s.cost_micros += d.cost_micros;
    }
    sums.into_iter().collect()
}

/// PostgreSQL's writer: [`end_user_sums`] added in one statement for any
/// number of rows (`store::sea::unnest`).
pub(super) fn end_user_usage_pg(
    sums: Vec<((Uuid, chrono::NaiveDate, Uuid, String), UsageDelta)>,
) -> StoreResult<super::writer::Stmt> {
    super::writer::rollup_pg(
        "usage_daily_end_users",
        ["tenant_id", "day", "bot_id", "end_user_id"],
        sums,
    )
}

/// The statements of [`add_end_user_usage`] (none when no message has an
/// end user).
pub(super) fn end_user_usage_statements(
    backend: DbBackend,
    changes: Vec<(e::message::Model, UsageDelta)>,
) -> Vec<sea_orm::sea_query::InsertStatement> {
    end_user_rollup_statements(backend, end_user_sums(changes))
}

/// The multi-row upserts that add [`end_user_sums`] to the rollup.
pub(super) fn end_user_rollup_statements(
    backend: DbBackend,
    rows: Vec<((Uuid, chrono::NaiveDate, Uuid, String), UsageDelta)>,
) -> Vec<sea_orm::sea_query::InsertStatement> {
    let mut out = Vec::new();
    {
        use e::usage_daily_end_user::{Column as U, Entity as T};
        if rows.is_empty() {
            return out;
        }
        let slot = || match backend {
            DbBackend::Postgres => {
                Expr::cust(format!("(pg_backend_pid() % {USAGE_SLOTS})::smallint"))
            }
            _ => Expr::val(0i16),
        };
        let add = |c: U| {
            (
                c,
                Expr::col((T, c)).add(Expr::col((Alias::new("excluded"), c))),
            )
        };
        for chunk in super::writer::statement_chunks(backend, &rows) {
            let mut stmt = Query::insert();
            stmt.into_table(T).columns([
                U::TenantId,
                U::Day,
                U::BotId,
                U::EndUserId,
                U::Slot,
                U::Requests,
                U::PromptTokens,
                U::CompletionTokens,
                U::TotalTokens,
                U::CostMicros,
            ]);
            for ((tenant, day, bot, user), d) in chunk {
                stmt.values_panic([
                    Expr::val(*tenant),
                    Expr::val(*day),
                    Expr::val(*bot),
                    Expr::val(user.clone()),
                    slot(),
                    Expr::val(d.requests),
                    Expr::val(d.prompt_tokens),
                    Expr::val(d.completion_tokens),
                    Expr::val(d.total_tokens),
                    Expr::val(d.cost_micros),
                ]);
            }
            stmt.on_conflict(
                OnConflict::columns([U::TenantId, U::Day, U::BotId, U::EndUserId, U::Slot])
                    .values([
                        add(U::Requests),
                        add(U::PromptTokens),
                        add(U::CompletionTokens),
                        add(U::TotalTokens),
                        add(U::CostMicros),
                    ])
                    .to_owned(),
            );
            out.push(stmt);
        }
        out
    }
}

impl SeaOrmStore {
    /// Usage grouped by end user: a range scan of the tenant's days in
    /// `usage_daily_end_users`.
    pub(super) async fn usage_by_end_user(
        &self,
        tenant: TenantId,
        days: UsageDays,
    ) -> StoreResult<Vec<UsageRow>> {
        use e::usage_daily_end_user::Column as U;
        let sum =
            |c: U| -> Expr { Func::cast_as(Func::sum(Expr::col(c)), Alias::new("BIGINT")).into() };
        let rows = self
            .tenant_rows::<e::usage_daily_end_user::Entity>(tenant)
            .filter(U::Day.gte(days.start))
            .filter(U::Day.lt(days.end))
            .query(|q| {
                q.select_only()
                    .column_as(U::EndUserId, "grp")
                    .expr_as(sum(U::Requests), "requests")
                    .expr_as(sum(U::PromptTokens), "prompt_tokens")
                    .expr_as(sum(U::CompletionTokens), "completion_tokens")
                    .expr_as(sum(U::TotalTokens), "total_tokens")
                    .expr_as(sum(U::CostMicros), "cost_micros")
                    .group_by(U::EndUserId)
                    .order_by(U::EndUserId, Order::Asc)
            })
            .all_as::<ByEndUser>()
            .await?;
        let n = |v: i64| std::cmp::max(v, 0) as u64;
        Ok(rows
            .into_iter()
            .filter(|r| r.requests > 0)
            .map(|r| UsageRow {
                group: Some(r.grp),
                requests: n(r.requests),
                prompt_tokens: n(r.prompt_tokens),
                completion_tokens: n(r.completion_tokens),
                total_tokens: n(r.total_tokens),
                cost_micros: r.cost_micros,
            })
            .collect())
    }
}
