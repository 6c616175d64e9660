//! chatcore's schema: one consolidated migration, `consolidated_init`, that
//! creates the twelve tables of the data model and seeds the provider catalog.
//! The same code migrates SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20260101_000001_consolidated_init;
mod m20260126_000002_usage_daily;

/// The migrator: apply with `Migrator::up(&db, None)`.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_consolidated_init::Migration),
            Box::new(m20260126_000002_usage_daily::Migration),
        ]
    }
}
