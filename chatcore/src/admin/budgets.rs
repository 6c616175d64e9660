//! Management of budgets and price overrides (`/v1/budgets`,
//! `/v1/prices`): checked here, stored with their audit record in one
//! transaction, and the running engine's caches invalidated.

use serde::Deserialize;

use super::{AdminCaller, AdminResult, AdminService, Writer, referenced, unexpected};
use crate::budget::BudgetState;
use crate::domain::*;
use crate::engine::ChatError;
use crate::pricing::Price;
use crate::store::{BudgetPatch, Change, Changed, NewBudget, NewPrice};

/// `POST /v1/budgets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateBudget {
    /// Whose spending it caps.
    pub scope: BudgetScope,
    /// The API key (scope `api_key`).
    #[serde(default)]
    pub api_key_id: Option<ApiKeyId>,
    /// The bot, id or slug (scopes `bot` and `end_user`).
    #[serde(default)]
    pub bot_id: Option<String>,
    /// The end user, as sent in `user_id` (scope `end_user`).
    #[serde(default)]
    pub end_user_id: Option<String>,
    /// The period.
    pub period: BudgetPeriod,
    /// The amount, micro-units of USD (1 000 000 = $1), at least 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub amount_micros: i64,
}

/// `POST /v1/admin/tenants/{id}/budgets`: the operator's cap on a tenant's
/// whole spending.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantCap {
    /// The period.
    pub period: BudgetPeriod,
    /// The amount, micro-units of USD (1 000 000 = $1), at least 1.
    pub amount_micros: i64,
}

/// `PATCH /v1/budgets/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateBudget {
    /// A new amount, micro-units, at least 1.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub amount_micros: Option<i64>,
    /// A new period.
    #[serde(default)]
    pub period: Option<BudgetPeriod>,
}

/// `PUT /v1/prices`: a tenant's price of a model of a provider
/// configuration (replaces any it had).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetPrice {
    /// The provider configuration.
    pub provider_id: ProviderConfigId,
    /// The model (matched exactly, or with a dated suffix).
    pub model: String,
    /// Micro-units per million uncached input tokens.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub input_per_mtok: i64,
    /// Micro-units per million cached input tokens (default: the input
    /// price).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub cached_input_per_mtok: Option<i64>,
    /// Micro-units per million output tokens.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub output_per_mtok: i64,
}

fn positive(field: &str, n: i64) -> AdminResult<()> {
    if n < 1 {
        return Err(ChatError::InvalidRequest(format!(
            "{field}: must be at least 1 (micro-units)"
        )));
    }
    Ok(())
}

impl AdminService {
    /// The operator caps a tenant's whole spending: a tenant-scope budget,
    /// audited under the operator (404 for a tenant that does not exist).
    /// The tenant's admins see it in `GET /v1/budgets`.
    pub async fn cap_tenant(
        &self,
        op: &super::Operator,
        tenant: TenantId,
        cap: TenantCap,
    ) -> AdminResult<BudgetState> {
        self.get_tenant(tenant).await?;
        let c = AdminCaller::operator_in(tenant, op);
        self.create_budget(
            c.writer()?,
            CreateBudget {
                scope: BudgetScope::Tenant,
                api_key_id: None,
                bot_id: None,
                end_user_id: None,
                period: cap.period,
                amount_micros: cap.amount_micros,
            },
        )
        .await
    }

    fn invalidate_budgets(&self, t: TenantId) {
        if let Some(b) = &self.budgets {
            b.get().invalidate(t);
        }
    }

    fn budget_state_service(&self) -> AdminResult<&std::sync::Arc<crate::budget::BudgetService>> {
        self.budgets
            .as_ref()
            .map(|b| b.get())
            .ok_or_else(|| ChatError::unavailable("no chat service"))
    }

    /// Creates a budget (audited).
    pub async fn create_budget(
        &self,
        c: Writer<'_>,
        input: CreateBudget,
    ) -> AdminResult<BudgetState> {
        positive("amount_micros", input.amount_micros)?;
        let need = |ok: bool, m: &str| {
            if ok {
                Ok(())
            } else {
                Err(ChatError::InvalidRequest(m.to_string()))
            }
        };
        match input.scope {
            BudgetScope::Tenant => need(
                input.api_key_id.is_none() && input.bot_id.is_none() && input.end_user_id.is_none(),
                "scope tenant: takes no api_key_id, bot_id or end_user_id",
            )?,
            BudgetScope::ApiKey => need(
                input.api_key_id.is_some() && input.bot_id.is_none() && input.end_user_id.is_none(),
                "scope api_key: needs api_key_id (and nothing else)",
            )?,
            BudgetScope::Bot => need(
                input.bot_id.is_some() && input.api_key_id.is_none() && input.end_user_id.is_none(),
                "scope bot: needs bot_id (and nothing else)",
            )?,
            BudgetScope::EndUser => need(
                input.bot_id.is_some() && input.end_user_id.is_some() && input.api_key_id.is_none(),
                "scope end_user: needs bot_id and end_user_id",
            )?,
        }
        if let Some(u) = &input.end_user_id {
            crate::text::check_text("end_user_id", u)?;
            if u.is_empty() || u.len() > 256 {
                return Err(ChatError::InvalidRequest(
                    "end_user_id: must be 1 to 256 characters".into(),
                ));
            }
        }
        let bot_id = match &input.bot_id {
            Some(b) => Some(self.find_bot(c.tenant, b).await.map_err(referenced)?.id),
            None => None,
        };
        let mut audit = c.audit("budget.created");
        audit.metadata = serde_json::json!({
            "scope": input.scope, "period": input.period, "amount_micros": input.amount_micros,
        });
        let new = NewBudget {
            scope: input.scope,
            api_key_id: input.api_key_id,
            bot_id,
            end_user_id: input.end_user_id,
            period: input.period,
            amount_micros: input.amount_micros,
        };
        let r = self
            .store
            .apply(Change::CreateBudget(c.tenant, new), audit)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound("api key") => {
                    ChatError::NotFound("api_key_id: api key")
                }
                e => referenced(e),
            })?;
        self.invalidate_budgets(c.tenant);
        match r {
            Changed::Budget(b) => self.budget_state(&b).await,
            other => Err(unexpected(other)),
        }
    }

    async fn budget_state(&self, b: &Budget) -> AdminResult<BudgetState> {
        Ok(self.budget_state_service()?.state(b).await?)
    }

    /// The tenant's budgets with what each has spent and holds in its
    /// current window.
    pub async fn list_budgets(&self, c: &AdminCaller) -> AdminResult<Vec<BudgetState>> {
        Ok(self.budget_state_service()?.states(c.tenant).await?)
    }

    /// One budget with its state.
    pub async fn get_budget(&self, c: &AdminCaller, id: BudgetId) -> AdminResult<BudgetState> {
        let b = self.store.get_budget(c.tenant, id).await?;
        self.budget_state(&b).await
    }

    /// Changes a budget's amount or period (audited).
    pub async fn update_budget(
        &self,
        c: Writer<'_>,
        id: BudgetId,
        input: UpdateBudget,
    ) -> AdminResult<BudgetState> {
        if let Some(n) = input.amount_micros {
            positive("amount_micros", n)?;
        }
        let mut audit = c.audit("budget.updated");
        audit.metadata = serde_json::json!({
            "period": input.period, "amount_micros": input.amount_micros,
        });
        let patch = BudgetPatch {
            amount_micros: input.amount_micros,
            period: input.period,
        };
        let r = self
            .store
            .apply(Change::UpdateBudget(c.tenant, id, patch), audit)
            .await?;
        self.invalidate_budgets(c.tenant);
        match r {
            Changed::Budget(b) => self.budget_state(&b).await,
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a budget (audited).
    pub async fn delete_budget(&self, c: Writer<'_>, id: BudgetId) -> AdminResult<()> {
        self.store
            .apply(
                Change::DeleteBudget(c.tenant, id),
                c.audit("budget.deleted"),
            )
            .await?;
        self.invalidate_budgets(c.tenant);
        Ok(())
    }

    /// Sets a price override (audited).
    pub async fn set_price(&self, c: Writer<'_>, input: SetPrice) -> AdminResult<PriceOverride> {
        crate::text::check_text("model", &input.model)?;
        if input.model.trim().is_empty() || input.model.len() > 200 {
            return Err(ChatError::InvalidRequest(
                "model: must be 1 to 200 characters".into(),
            ));
        }
        let cached = input.cached_input_per_mtok.unwrap_or(input.input_per_mtok);
        for (f, n) in [
            ("input_per_mtok", input.input_per_mtok),
            ("cached_input_per_mtok", cached),
            ("output_per_mtok", input.output_per_mtok),
        ] {
            if n < 0 {
                return Err(ChatError::InvalidRequest(format!(
                    "{f}: must not be negative"
                )));
            }
        }
        let mut audit = c.audit("price.set");
        audit.metadata = serde_json::json!({
            "provider_id": input.provider_id, "model": input.model,
            "input_per_mtok": input.input_per_mtok, "cached_input_per_mtok": cached,
            "output_per_mtok": input.output_per_mtok,
        });
        let new = NewPrice {
            provider_id: input.provider_id,
            model: input.model,
            price: Price {
                input_per_mtok: input.input_per_mtok,
                cached_input_per_mtok: cached,
                output_per_mtok: input.output_per_mtok,
            },
        };
        let r = self
            .store
            .apply(Change::PutPrice(c.tenant, new), audit)
            .await
            .map_err(referenced)?;
        // Bots cache their prices.
        self.invalidate_tenant(c.tenant);
        match r {
            Changed::Price(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// The tenant's price overrides.
    pub async fn list_prices(&self, c: &AdminCaller) -> AdminResult<Vec<PriceOverride>> {
        Ok(self.store.list_prices(c.tenant).await?)
    }

    /// Deletes a price override (audited): the catalog's applies again.
    pub async fn delete_price(&self, c: Writer<'_>, id: PriceId) -> AdminResult<()> {
        self.store
            .apply(Change::DeletePrice(c.tenant, id), c.audit("price.deleted"))
            .await?;
        self.invalidate_tenant(c.tenant);
        Ok(())
    }
}
