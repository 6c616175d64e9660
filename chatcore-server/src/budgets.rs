//! Budgets and price overrides: `/v1/budgets` (with each budget's spent,
//! reserved and remaining amount in its current window) and `/v1/prices`.
//! The rules live in [`chatcore::admin::AdminService`] and
//! [`chatcore::budget`].

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use chatcore::admin::{CreateBudget, SetPrice, TenantCap, UpdateBudget};
use chatcore::budget::BudgetState;
use chatcore::domain::{BudgetId, PriceId, PriceOverride, TenantId};
use serde::Serialize;

use crate::App;
use crate::admin::NoQuery;
use crate::auth::{OperatorCaller, TenantCaller};
use crate::http::{ApiError, Id, Json, Query, created, no_content, ok};

type Reply = Result<Response, ApiError>;

/// Every budget of the tenant (few: one page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetList {
    /// The budgets with their state.
    pub data: Vec<BudgetState>,
    /// Always null: budgets fit one page.
    pub next_cursor: Option<String>,
}

/// The tenant's price overrides (one page).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceList {
    /// The overrides.
    pub data: Vec<PriceOverride>,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// Create a budget (a spending cap per day, month or rolling 24 h)
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets", request_body = CreateBudget,
    security(("apiKey" = ["admin"])),
    responses((status = 201, description = "The budget and its state", body = BudgetState)))]
pub async fn create_budget(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(body): Json<CreateBudget>,
) -> Reply {
    Ok(created(&app.admin.create_budget(c.writer()?, body).await?))
}

/// List budgets with what each has spent and reserved in its window
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The budgets", body = BudgetList)))]
pub async fn list_budgets(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
) -> Reply {
    Ok(ok(&BudgetList {
        data: app.admin.list_budgets(&c).await?,
        next_cursor: None,
    }))
}

/// Get a budget and its state
#[utoipa::path(get, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = BudgetId, Path, description = "Budget id")),
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The budget", body = BudgetState)))]
pub async fn get_budget(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<BudgetId>,
) -> Reply {
    Ok(ok(&app.admin.get_budget(&c, id).await?))
}

/// Change a budget's amount or period
#[utoipa::path(patch, path = "/v1/budgets/{id}", tag = "budgets", request_body = UpdateBudget,
    params(("id" = BudgetId, Path, description = "Budget id")),
    security(("apiKey" = ["admin"])),
    responses((status = 200, description = "The budget", body = BudgetState)))]
pub async fn update_budget(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<BudgetId>,
    Json(body): Json<UpdateBudget>,
) -> Reply {
    Ok(ok(&app.admin.update_budget(c.writer()?, id, body).await?))
}

/// Delete a budget
#[utoipa::path(delete, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = BudgetId, Path, description = "Budget id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_budget(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<BudgetId>,
) -> Reply {
    app.admin.delete_budget(c.writer()?, id).await?;
    Ok(no_content())
}

/// Set the price of a model of a provider configuration (overrides the catalog)
#[utoipa::path(put, path = "/v1/prices", tag = "budgets", request_body = SetPrice,
    security(("apiKey" = ["admin"])),
    responses((status = 200, description = "The price", body = PriceOverride)))]
pub async fn set_price(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Json(body): Json<SetPrice>,
) -> Reply {
    Ok(ok(&app.admin.set_price(c.writer()?, body).await?))
}

/// List the tenant's price overrides
#[utoipa::path(get, path = "/v1/prices", tag = "budgets",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The overrides", body = PriceList)))]
pub async fn list_prices(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
) -> Reply {
    Ok(ok(&PriceList {
        data: app.admin.list_prices(&c).await?,
        next_cursor: None,
    }))
}

/// Delete a price override (the catalog's price applies again)
#[utoipa::path(delete, path = "/v1/prices/{id}", tag = "budgets",
    params(("id" = PriceId, Path, description = "Price id")),
    security(("apiKey" = ["admin"])),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_price(
    State(app): State<Arc<App>>,
    TenantCaller(c): TenantCaller,
    _: Query<NoQuery>,
    Id(id): Id<PriceId>,
) -> Reply {
    app.admin.delete_price(c.writer()?, id).await?;
    Ok(no_content())
}

crate::http::path_ids!(
    BudgetId => "budget",
    PriceId => "price",
);

/// Cap a tenant's whole spending (operator)
///
/// A tenant-scope budget set by the operator: every turn of the tenant's
/// keys and public bots reserves its worst case against it. The tenant's
/// admins see it in `GET /v1/budgets`. Audited under the operator.
#[utoipa::path(post, path = "/v1/admin/tenants/{id}/budgets", tag = "operator",
    params(("id" = TenantId, Path, description = "Tenant id")), request_body = TenantCap,
    security(("operatorKey" = [])),
    responses((status = 201, description = "The budget and its state", body = BudgetState)))]
pub async fn cap_tenant(
    State(app): State<Arc<App>>,
    OperatorCaller(op): OperatorCaller,
    _: Query<NoQuery>,
    Id(id): Id<TenantId>,
    Json(body): Json<TenantCap>,
) -> Reply {
    Ok(created(&app.admin.cap_tenant(&op, id, body).await?))
}
