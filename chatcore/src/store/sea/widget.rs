//! The widget's rows (migration `widget`): settings and secret per bot,
//! feedback on answers. Every statement is tenant-scoped (row-level
//! security on PostgreSQL, see [`super::scope`]).

use sea_orm::prelude::Expr;
use sea_orm::sea_query::{Alias, Func, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, FromQueryResult, Order, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::scope::Tenancy;
use super::{SeaOrmStore, audit_row, db_err, entities as e, write_err};
use crate::domain::*;
use crate::store::widget::*;
use crate::store::{StoreError, StoreResult, UsageDays, UsageGroup};

pub(super) mod widget_settings {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "widget_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub bot_id: Uuid,
        pub tenant_id: Uuid,
        #[sea_orm(column_type = "JsonBinary")]
        pub settings: Json,
        pub secret_ciphertext: Option<Vec<u8>>,
        pub secret_key_id: Option<String>,
        pub secret_last4: Option<String>,
        pub secret_created_at: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub(super) mod message_feedback {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "message_feedback")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: Uuid,
        pub tenant_id: Uuid,
        pub bot_id: Uuid,
        pub conversation_id: Uuid,
        pub rating: String,
        pub comment: Option<String>,
        pub actor_kind: String,
        pub actor_id: Option<String>,
        pub day: String,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

use message_feedback as fb;
use widget_settings as ws;

fn widget(m: ws::Model) -> WidgetRecord {
    let secret = match (m.secret_ciphertext, m.secret_key_id, m.secret_last4) {
        (Some(ciphertext), Some(key_id), Some(last4)) => Some(SealedKey {
            key_id,
            ciphertext,
            last4,
        }),
        _ => None,
    };
    WidgetRecord {
        tenant_id: TenantId(m.tenant_id),
        bot_id: BotId(m.bot_id),
        settings: m.settings,
        secret,
        secret_created_at: m.secret_created_at,
        updated_at: m.updated_at,
    }
}

fn feedback(m: fb::Model) -> StoreResult<Feedback> {
    let rating = match m.rating.as_str() {
        "up" => Rating::Up,
        "down" => Rating::Down,
        other => {
            return Err(StoreError::internal(format!(
                "stored feedback has rating {other:?}"
            )));
        }
    };
    let kind = m
        .actor_kind
        .parse::<ActorKind>()
        .map_err(|e| StoreError::internal_from("stored feedback has an unknown actor kind", e))?;
    Ok(Feedback {
        message_id: MessageId(m.message_id),
        conversation_id: ConversationId(m.conversation_id),
        bot_id: BotId(m.bot_id),
        rating,
        comment: m.comment,
        actor: Actor {
            kind,
            id: m.actor_id,
        },
        created_at: m.created_at,
        updated_at: m.updated_at,
        tenant_id: TenantId(m.tenant_id),
    })
}

#[derive(Debug, FromQueryResult)]
struct CountByDay {
    grp: String,
    rating: String,
    n: i64,
}

#[derive(Debug, FromQueryResult)]
struct CountByBot {
    grp: uuid::Uuid,
    rating: String,
    n: i64,
}

impl SeaOrmStore {
    pub(super) async fn widget_get(
        &self,
        tenant: TenantId,
        bot: BotId,
    ) -> StoreResult<Option<WidgetRecord>> {
        Ok(self
            .tenant_rows::<ws::Entity>(tenant)
            .by_id(bot.0)
            .one()
            .await?
            .map(widget))
    }

    pub(super) async fn widget_put(
        &self,
        tenant: TenantId,
        bot: BotId,
        update: WidgetUpdate,
        mut audit: AuditRecord,
    ) -> StoreResult<WidgetRecord> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        Self::find_bot(&txn, tenant, bot).await?;
        let existing = ws::Entity::find_by_id(bot.0)
            .filter(ws::Column::TenantId.eq(tenant.0))
            .one(&txn)
            .await
            .map_err(db_err)?;
        let t = now();
        let mut am: ws::ActiveModel = match &existing {
            Some(m) => m.clone().into(),
            None => ws::ActiveModel {
                bot_id: Set(bot.0),
                tenant_id: Set(tenant.0),
                settings: Set(serde_json::json!({})),
                secret_ciphertext: Set(None),
                secret_key_id: Set(None),
                secret_last4: Set(None),
                secret_created_at: Set(None),
                updated_at: Set(t),
            },
        };
        if let Some(s) = update.settings {
            am.settings = Set(s);
        }
        if let Some(secret) = update.secret {
            am.secret_created_at = Set(secret.as_ref().map(|_| t));
            am.secret_key_id = Set(secret.as_ref().map(|s| s.key_id.clone()));
            am.secret_last4 = Set(secret.as_ref().map(|s| s.last4.clone()));
            am.secret_ciphertext = Set(secret.map(|s| s.ciphertext));
        }
        am.updated_at = Set(t);
        let m = if existing.is_some() {
            am.update(&txn).await
        } else {
            am.insert(&txn).await
        }
        .map_err(|e| write_err(e, "widget"))?;
        audit.tenant_id = Some(tenant);
        audit.resource_type = Some("bot".into());
        audit.resource_id = Some(bot.to_string());
        audit_row(audit).insert(&txn).await.map_err(db_err)?;
        txn.commit().await.map_err(db_err)?;
        Ok(widget(m))
    }

    pub(super) async fn feedback_put(
        &self,
        tenant: TenantId,
        new: NewFeedback,
    ) -> StoreResult<Feedback> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        // Only the columns needed: the message row grows with other work.
        let msg: Option<(uuid::Uuid, uuid::Uuid, String)> = e::message::Entity::find()
            .select_only()
            .column(e::message::Column::ConversationId)
            .column(e::message::Column::BotId)
            .column(e::message::Column::Role)
            .filter(e::message::Column::Id.eq(new.message_id.0))
            .filter(e::message::Column::TenantId.eq(tenant.0))
            .into_tuple()
            .one(&txn)
            .await
            .map_err(db_err)?;
        let (conversation, bot) = match msg {
            Some((c, b, role)) if role == Role::Assistant.as_str() => (c, b),
            _ => return Err(StoreError::NotFound("message")),
        };
        let t = now();
        let row = fb::ActiveModel {
            message_id: Set(new.message_id.0),
            tenant_id: Set(tenant.0),
            bot_id: Set(bot),
            conversation_id: Set(conversation),
            rating: Set(new.rating.as_str().into()),
            comment: Set(new.comment),
            actor_kind: Set(new.actor.kind.as_str().into()),
            actor_id: Set(new.actor.id),
            day: Set(t.format("%Y-%m-%d").to_string()),
            created_at: Set(t),
            updated_at: Set(t),
        };
        fb::Entity::insert(row)
            .on_conflict(
                OnConflict::column(fb::Column::MessageId)
                    .update_columns([
                        fb::Column::Rating,
                        fb::Column::Comment,
                        fb::Column::ActorKind,
                        fb::Column::ActorId,
                        fb::Column::Day,
                        fb::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(|e| write_err(e, "feedback"))?;
        let m = fb::Entity::find_by_id(new.message_id.0)
            .filter(fb::Column::TenantId.eq(tenant.0))
            .one(&txn)
            .await
            .map_err(db_err)?
            .ok_or(StoreError::NotFound("message"))?;
        txn.commit().await.map_err(db_err)?;
        feedback(m)
    }

    pub(super) async fn feedback_get(
        &self,
        tenant: TenantId,
        messages: &[MessageId],
    ) -> StoreResult<Vec<Feedback>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        self.tenant_rows::<fb::Entity>(tenant)
            .filter(fb::Column::MessageId.is_in(messages.iter().map(|m| m.0)))
            .query(|q| q.order_by_asc(fb::Column::MessageId))
            .all()
            .await?
            .into_iter()
            .map(feedback)
            .collect()
    }

    pub(super) async fn feedback_count(
        &self,
        tenant: TenantId,
        days: UsageDays,
        group_by: UsageGroup,
    ) -> StoreResult<Vec<FeedbackRow>> {
        let grp = match group_by {
            UsageGroup::Bot => fb::Column::BotId,
            _ => fb::Column::Day,
        };
        let q = self
            .tenant_rows::<fb::Entity>(tenant)
            .filter(fb::Column::Day.gte(days.start.format("%Y-%m-%d").to_string()))
            .filter(fb::Column::Day.lt(days.end.format("%Y-%m-%d").to_string()))
            .query(|q| {
                q.select_only()
                    .column_as(grp, "grp")
                    .column(fb::Column::Rating)
                    .expr_as(
                        Func::cast_as(
                            Func::count(Expr::col(fb::Column::MessageId)),
                            Alias::new("BIGINT"),
                        ),
                        "n",
                    )
                    .group_by(grp)
                    .group_by(fb::Column::Rating)
                    .order_by(grp, Order::Asc)
            });
        let counts: Vec<(String, String, i64)> = match group_by {
            UsageGroup::Bot => q
                .all_as::<CountByBot>()
                .await?
                .into_iter()
                .map(|c| (c.grp.to_string(), c.rating, c.n))
                .collect(),
            _ => q
                .all_as::<CountByDay>()
                .await?
                .into_iter()
                .map(|c| (c.grp, c.rating, c.n))
                .collect(),
        };
        let mut rows: Vec<FeedbackRow> = Vec::new();
        for (grp, rating, n) in counts {
            let group = Some(grp);
            if rows.last().is_none_or(|r| r.group != group) {
                rows.push(FeedbackRow {
                    group: group.clone(),
                    up: 0,
                    down: 0,
                });
            }
            let r = rows.last_mut().expect("just pushed");
            let n = n.max(0) as u64;
            match rating.as_str() {
                "up" => r.up += n,
                _ => r.down += n,
            }
        }
        if group_by == UsageGroup::ApiKey {
            // Ratings are not by key: one group, as usage has for public chat.
            let (up, down) = rows.iter().fold((0, 0), |(u, d), r| (u + r.up, d + r.down));
            return Ok(if up + down > 0 {
                vec![FeedbackRow {
                    group: None,
                    up,
                    down,
                }]
            } else {
                vec![]
            });
        }
        Ok(rows)
    }
}
