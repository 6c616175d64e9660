//! PostgreSQL: the writer's multi-row statements as one statement for any
//! number of rows.
//!
//! A multi-row `VALUES` list, or an `IN ($1, ..., $n)` filter, is a
//! different statement for every row count. sqlx prepares each one on each
//! connection it runs on (a Parse and Describe round trip, and a plan) and
//! keeps it in the connection's statement cache, SQL text and all: a batch
//! of 64 messages is a statement of some 10 KB, and the writer's tables
//! times every batch size up to 200 times its connections made thousands
//! of them. Here a column of the batch is one array parameter:
//! `INSERT ... SELECT ... FROM UNNEST($1, ..., $n)` and `WHERE id =
//! ANY($1)` are one statement whatever the batch size, prepared once per
//! connection. sqlx declares each parameter's type in the Parse message,
//! so no casts are needed.
//!
//! Writes of a few rows keep their `VALUES` lists, which PostgreSQL
//! executes faster than an `UNNEST` of every column (`writer::arrays_for`);
//! reads filter with `ANY` at any size, on connections that plan each
//! statement once (`plan_cache_mode=force_generic_plan`, see
//! `pg_session_options`).
//!
//! Values come from SeaORM models and sea-query [`Value`]s, as on the other
//! backends; the statements are built here because sea-query has no
//! `UNNEST` insert, and its array values cannot hold NULL elements.

use sea_orm::sea_query::Value;
use sea_orm::sqlx::Arguments;
use sea_orm::sqlx::{self, postgres::PgArguments};
use sea_orm::{ActiveModelTrait, EntityTrait, IdenStatic, Iterable, ModelTrait, Statement};
use uuid::Uuid;

/// One column of a batch: a PostgreSQL array, NULL elements and all.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PgArray {
    Bool(Vec<Option<bool>>),
    SmallInt(Vec<Option<i16>>),
    Int(Vec<Option<i32>>),
    BigInt(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Json(Vec<Option<serde_json::Value>>),
    Date(Vec<Option<chrono::NaiveDate>>),
    Time(Vec<Option<chrono::DateTime<chrono::Utc>>>),
    Uuid(Vec<Option<Uuid>>),
}

impl PgArray {
    /// The array of `values`, which must all be of one type (as a model
    /// column's are). The error names the type, never a value.
    pub(super) fn of(values: Vec<Value>) -> Result<Self, String> {
        macro_rules! gather {
            ($array:ident, $value:ident $(, $unbox:expr)?) => {{
                let mut out = Vec::with_capacity(values.len());
                for v in values {
                    match v {
                        Value::$value(x) => out.push(x $(.map($unbox))?),
                        _ => {
                            return Err(format!(
                                "a column of {} values holds another type",
                                stringify!($value)
                            ))
                        }
                    }
                }
                PgArray::$array(out)
            }};
        }
        let Some(first) = values.first() else {
            return Err("an array parameter of no rows".to_owned());
        };
        Ok(match first {
            Value::Bool(_) => gather!(Bool, Bool),
            Value::SmallInt(_) => gather!(SmallInt, SmallInt),
            Value::Int(_) => gather!(Int, Int),
            Value::BigInt(_) => gather!(BigInt, BigInt),
            Value::String(_) => gather!(Text, String),
            Value::Json(_) => gather!(Json, Json, |j: Box<serde_json::Value>| *j),
            Value::ChronoDate(_) => gather!(Date, ChronoDate),
            Value::ChronoDateTimeUtc(_) => gather!(Time, ChronoDateTimeUtc),
            Value::Uuid(_) => gather!(Uuid, Uuid),
            _ => return Err("a column of a type with no array parameter here".to_owned()),
        })
    }

    /// The ids of a `= ANY($n)` filter.
    pub(super) fn ids(ids: impl IntoIterator<Item = Uuid>) -> Self {
        PgArray::Uuid(ids.into_iter().map(Some).collect())
    }

    fn len(&self) -> usize {
        match self {
            PgArray::Bool(v) => v.len(),
            PgArray::SmallInt(v) => v.len(),
            PgArray::Int(v) => v.len(),
            PgArray::BigInt(v) => v.len(),
            PgArray::Text(v) => v.len(),
            PgArray::Json(v) => v.len(),
            PgArray::Date(v) => v.len(),
            PgArray::Time(v) => v.len(),
            PgArray::Uuid(v) => v.len(),
        }
    }

    fn bind(self, args: &mut PgArguments) -> Result<(), sqlx::error::BoxDynError> {
        match self {
            PgArray::Bool(v) => args.add(v),
            PgArray::SmallInt(v) => args.add(v),
            PgArray::Int(v) => args.add(v),
            PgArray::BigInt(v) => args.add(v),
            PgArray::Text(v) => args.add(v),
            PgArray::Json(v) => args.add(v),
            PgArray::Date(v) => args.add(v),
            PgArray::Time(v) => args.add(v),
            PgArray::Uuid(v) => args.add(v),
        }
    }
}

/// A statement whose array parameters follow its own values: with `k`
/// values, the arrays are `$k+1` onwards.
#[derive(Debug)]
pub(super) struct PgStatement {
    pub(super) st: Statement,
    pub(super) arrays: Vec<PgArray>,
}

impl PgStatement {
    /// `st` with `arrays` after its values. Refuses a statement that does
    /// not use exactly its `$1` to `$n`, so that a filter written for the
    /// wrong position fails here, not on another column.
    pub(super) fn new(st: Statement, arrays: Vec<PgArray>) -> Result<Self, String> {
        let values = st.values.as_ref().map_or(0, |v| v.0.len());
        let n = values + arrays.len();
        // One pass over the text: which of `$1` to `$n` it uses, and
        // whether it uses one beyond.
        let (mut used, mut beyond) = (vec![false; n + 1], false);
        let sql = st.sql.as_bytes();
        let mut i = 0;
        while i < sql.len() {
            i += 1;
            if sql[i - 1] != b'$' {
                continue;
            }
            let digits = sql[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 {
                let k = st.sql[i..i + digits].parse::<usize>().unwrap_or(usize::MAX);
                match used.get_mut(k) {
                    Some(u) => *u = true,
                    None => beyond = true,
                }
            }
            i += digits;
        }
        if beyond || (values + 1..=n).any(|k| !used[k]) {
            return Err(format!(
                "a statement with {values} values and {} arrays uses other parameters",
                arrays.len()
            ));
        }
        Ok(PgStatement { st, arrays })
    }

    /// Its arguments: the statement's values, then the arrays.
    pub(super) fn arguments(self) -> Result<(String, PgArguments), sqlx::error::BoxDynError> {
        use sqlx::IntoArguments;
        let values = self
            .st
            .values
            .unwrap_or(sea_orm::sea_query::Values(Vec::new()));
        let mut args: PgArguments =
            IntoArguments::<sqlx::Postgres>::into_arguments(sea_query_sqlx::SqlxValues(values));
        for a in self.arrays {
            a.bind(&mut args)?;
        }
        Ok((self.st.sql, args))
    }
}

/// `"name"`, quoted as a PostgreSQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An insert of `columns` (name and one value per row, every column as
/// long as the others) and of `computed` columns (name and an SQL
/// expression, the same for every row), in that order, then `tail`: an
/// `ON CONFLICT` clause, or nothing.
///
/// `INSERT INTO "t" ("a", "b", "c") SELECT "a", "b", <c> FROM
/// UNNEST($1, $2) AS "u"("a", "b") <tail>`: one statement for any number of
/// rows.
pub(super) fn insert(
    table: &str,
    columns: Vec<(String, Vec<Value>)>,
    computed: &[(&str, &str)],
    tail: &str,
) -> Result<PgStatement, String> {
    let rows = columns.first().map_or(0, |(_, v)| v.len());
    let names: Vec<String> = columns.iter().map(|(n, _)| ident(n)).collect();
    let mut arrays = Vec::with_capacity(columns.len());
    for (name, values) in columns {
        let a = PgArray::of(values).map_err(|e| format!("{table}.{name}: {e}"))?;
        if a.len() != rows {
            return Err(format!("{table}.{name}: a column of another length"));
        }
        arrays.push(a);
    }
    let targets: Vec<String> = names
        .iter()
        .cloned()
        .chain(computed.iter().map(|(n, _)| ident(n)))
        .collect();
    let selected: Vec<String> = names
        .iter()
        .cloned()
        .chain(computed.iter().map(|(_, sql)| (*sql).to_owned()))
        .collect();
    let params: Vec<String> = (1..=names.len()).map(|k| format!("${k}")).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM UNNEST({}) AS \"u\"({})",
        ident(table),
        targets.join(", "),
        selected.join(", "),
        params.join(", "),
        names.join(", "),
    );
    if !tail.is_empty() {
        sql.push(' ');
        sql.push_str(tail);
    }
    PgStatement::new(
        Statement::from_string(sea_orm::DbBackend::Postgres, sql),
        arrays,
    )
}

/// The insert of whole models, every column of the entity (see [`insert`]).
pub(super) fn insert_models<M: ModelTrait>(rows: &[M], tail: &str) -> Result<PgStatement, String> {
    insert_entity::<M::Entity, M>(rows, |r, c| Some(r.get(c)), tail)
}

/// The insert of active models whose every column is set.
pub(super) fn insert_active<A: ActiveModelTrait>(
    rows: &[A],
    tail: &str,
) -> Result<PgStatement, String> {
    insert_entity::<A::Entity, A>(rows, |r, c| r.get(c).into_value(), tail)
}

/// Every column of `E`, each row's value read by `get` (`None`: not set).
fn insert_entity<E: EntityTrait, R>(
    rows: &[R],
    get: impl Fn(&R, E::Column) -> Option<Value>,
    tail: &str,
) -> Result<PgStatement, String> {
    let table = E::default().table_name();
    let mut columns = Vec::new();
    for c in E::Column::iter() {
        let values: Option<Vec<Value>> = rows.iter().map(|r| get(r, c)).collect();
        let values = values.ok_or_else(|| format!("{table}.{}: a row without it", c.as_str()))?;
        columns.push((c.as_str().to_owned(), values));
    }
    insert(table, columns, &[], tail)
}

/// `ON CONFLICT ("k", ...) DO UPDATE SET "c" = <set(c)>, ...`
pub(super) fn on_conflict(keys: &[&str], set: &[(&str, String)]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| ident(k)).collect();
    let set: Vec<String> = set
        .iter()
        .map(|(c, sql)| format!("{} = {sql}", ident(c)))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        keys.join(", "),
        set.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sea::entities as e;

    fn message(n: u8) -> e::message::Model {
        e::message::Model {
            id: Uuid::from_u128(u128::from(n)),
            tenant_id: Uuid::from_u128(7),
            conversation_id: Uuid::from_u128(8),
            bot_id: Uuid::from_u128(9),
            role: "assistant".into(),
            content: format!("text {n}"),
            prompt_tokens: n.is_multiple_of(2).then_some(i32::from(n)),
            completion_tokens: None,
            total_tokens: None,
            tokens_estimated: n.is_multiple_of(3),
            response_time_ms: None,
            time_to_first_token_ms: None,
            provider: None,
            model: Some("m".into()),
            finish_reason: None,
            status: "pending".into(),
            error: None,
            source_chunk_ids: serde_json::json!([]),
            api_key_id: None,
            created_at: chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0).unwrap(),
            instance_id: None,
            tool_calls: (n == 1).then(|| serde_json::json!([{"id": "c"}])),
            tool_call_id: None,
            cost_micros: Some(i64::from(n) * 10),
            cached_tokens: None,
            priced: None,
            end_user_id: None,
        }
    }

    #[test]
    fn one_statement_for_any_number_of_rows() {
        let one = insert_models(&[message(1)], "").unwrap();
        let many = insert_models(&(1..=100).map(message).collect::<Vec<_>>(), "").unwrap();
        assert_eq!(one.st.sql, many.st.sql);
        assert!(
            one.st.sql.starts_with(
                "INSERT INTO \"messages\" (\"id\", \"tenant_id\", \"conversation_id\""
            ),
            "{}",
            one.st.sql
        );
        assert!(one.st.sql.contains("FROM UNNEST($1, $2, $3,"));
        assert_eq!(many.arrays.len(), e::message::Column::iter().count());
        assert!(many.arrays.iter().all(|a| a.len() == 100));
    }

    #[test]
    fn columns_keep_their_rows_nulls_and_types() {
        let s = insert_models(&[message(1), message(2), message(3)], "").unwrap();
        let col = |name: &str| {
            let i = e::message::Column::iter()
                .position(|c| c.as_str() == name)
                .unwrap();
            s.arrays[i].clone()
        };
        assert_eq!(
            col("id"),
            PgArray::Uuid((1..=3).map(|n| Some(Uuid::from_u128(n))).collect())
        );
        assert_eq!(
            col("prompt_tokens"),
            PgArray::Int(vec![None, Some(2), None])
        );
        assert_eq!(
            col("tokens_estimated"),
            PgArray::Bool(vec![Some(false), Some(false), Some(true)])
        );
        assert_eq!(
            col("tool_calls"),
            PgArray::Json(vec![Some(serde_json::json!([{"id": "c"}])), None, None])
        );
        assert_eq!(
            col("cost_micros"),
            PgArray::BigInt(vec![Some(10), Some(20), Some(30)])
        );
        assert_eq!(
            col("content"),
            PgArray::Text(vec![
                Some("text 1".into()),
                Some("text 2".into()),
                Some("text 3".into())
            ])
        );
    }

    #[test]
    fn computed_columns_and_the_conflict_clause_follow_the_arrays() {
        let s = insert(
            "usage_daily",
            vec![
                ("tenant_id".into(), vec![Value::Uuid(Some(Uuid::nil()))]),
                ("requests".into(), vec![Value::BigInt(Some(1))]),
            ],
            &[("slot", "(pg_backend_pid() % 8)::smallint")],
            &on_conflict(
                &["tenant_id", "slot"],
                &[(
                    "requests",
                    "\"usage_daily\".\"requests\" + \"excluded\".\"requests\"".into(),
                )],
            ),
        )
        .unwrap();
        assert_eq!(
            s.st.sql,
            "INSERT INTO \"usage_daily\" (\"tenant_id\", \"requests\", \"slot\") \
             SELECT \"tenant_id\", \"requests\", (pg_backend_pid() % 8)::smallint \
             FROM UNNEST($1, $2) AS \"u\"(\"tenant_id\", \"requests\") \
             ON CONFLICT (\"tenant_id\", \"slot\") DO UPDATE SET \
             \"requests\" = \"usage_daily\".\"requests\" + \"excluded\".\"requests\""
        );
    }

    #[test]
    fn mixed_or_ragged_or_empty_columns_are_refused() {
        assert!(PgArray::of(vec![Value::Int(Some(1)), Value::BigInt(Some(2))]).is_err());
        assert!(PgArray::of(vec![]).is_err());
        let ragged = insert(
            "t",
            vec![
                ("a".into(), vec![Value::Int(Some(1)), Value::Int(None)]),
                ("b".into(), vec![Value::Int(Some(1))]),
            ],
            &[],
            "",
        );
        assert!(ragged.unwrap_err().contains("t.b"));
        // A value's text is never in the error.
        let e =
            PgArray::of(vec![Value::String(Some("secret".into())), Value::Int(None)]).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn parameters_must_be_exactly_the_values_then_the_arrays() {
        let st = |sql: &str, values: Vec<Value>| {
            Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values)
        };
        let ids = || vec![PgArray::ids([Uuid::nil()])];
        assert!(PgStatement::new(st("SELECT 1 WHERE id = ANY($1)", vec![]), ids()).is_ok());
        assert!(
            PgStatement::new(
                st(
                    "UPDATE t SET a = $1 WHERE id = ANY($2)",
                    vec![Value::Int(Some(1))]
                ),
                ids()
            )
            .is_ok()
        );
        // An array one past the end, or a parameter nobody binds.
        assert!(PgStatement::new(st("SELECT 1 WHERE id = ANY($2)", vec![]), ids()).is_err());
        assert!(PgStatement::new(st("SELECT 1 WHERE id = ANY($10)", vec![]), ids()).is_err());
        assert!(PgStatement::new(st("SELECT $1, $2", vec![]), ids()).is_err());
    }
}
