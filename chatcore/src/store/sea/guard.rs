//! What the store itself guarantees against hostile input, whatever the
//! adapter checked before: one owner per public slug, no text PostgreSQL
//! cannot hold turning into a 500, document replacement all or nothing,
//! and SQLite files readable by their owner only.

use super::*;

impl SeaOrmStore {
    /// Whether a public bot other than `except` has `slug` (in any tenant).
    /// `db` is a transaction of `tenant`'s: on PostgreSQL the check looks
    /// across tenants (public slugs are one namespace) and then sets the
    /// tenancy back.
    pub(super) async fn public_slug_taken<C: ConnectionTrait>(
        db: &C,
        tenant: TenantId,
        slug: &str,
        except: Option<Uuid>,
    ) -> StoreResult<bool> {
        let pg = db.get_database_backend() == DbBackend::Postgres;
        if pg {
            scope::set_tenancy(db, Tenancy::All).await?;
        }
        let mut q = e::bot::Entity::find()
            .filter(e::bot::Column::IsPublic.eq(true))
            .filter(e::bot::Column::Slug.eq(slug));
        if let Some(id) = except {
            q = q.filter(e::bot::Column::Id.ne(id));
        }
        let taken = q.count(db).await.map_err(db_err)? > 0;
        if pg {
            scope::set_tenancy(db, Tenancy::One(tenant)).await?;
        }
        Ok(taken)
    }

    /// A public bot by id, by slug (public slugs are unique across
    /// tenants), or by `tenant-slug/bot-slug`.
    pub(super) async fn find_public_bot_in(&self, id_or_slug: &str) -> StoreResult<Bot> {
        // Cross-tenant by nature: an anonymous visitor names the bot.
        let db = self.scoped(Tenancy::All).await?;
        let out: StoreResult<Bot> = async {
            let q = e::bot::Entity::find().filter(e::bot::Column::IsPublic.eq(true));
            let q = if let Ok(id) = Uuid::parse_str(id_or_slug) {
                q.filter(e::bot::Column::Id.eq(id))
            } else if let Some((tenant, bot)) = id_or_slug.split_once('/') {
                let t = e::tenant::Entity::find()
                    .filter(e::tenant::Column::Slug.eq(tenant))
                    .one(&db)
                    .await
                    .map_err(db_err)?;
                let t = found(t, "bot")?;
                q.filter(e::bot::Column::TenantId.eq(t.id))
                    .filter(e::bot::Column::Slug.eq(bot))
            } else {
                q.filter(e::bot::Column::Slug.eq(id_or_slug))
            };
            convert::bot(found(q.one(&db).await.map_err(db_err)?, "bot")?)
        }
        .await;
        scope::finish(db, out).await
    }

    /// [`RagStore::replace_document`] in one transaction: the replaced
    /// documents are deleted, the dataset checked and the new document
    /// inserted, then it commits; any failure rolls all of it back.
    pub(super) async fn replace_document_in(
        &self,
        tenant: TenantId,
        new: NewDocument,
        replaced: &[DocumentId],
    ) -> StoreResult<Document> {
        let txn = self.write_txn(Tenancy::One(tenant)).await?;
        if !replaced.is_empty() {
            e::document::Entity::delete_many()
                .filter(e::document::Column::TenantId.eq(tenant.0))
                .filter(e::document::Column::Id.is_in(replaced.iter().map(|d| d.0)))
                .exec(&txn)
                .await
                .map_err(db_err)?;
        }
        let ds = e::dataset::Entity::find_by_id(new.dataset_id.0)
            .filter(e::dataset::Column::TenantId.eq(tenant.0))
            .count(&txn)
            .await
            .map_err(db_err)?;
        if ds == 0 {
            // Dropping the transaction rolls the deletion back.
            return Err(StoreError::NotFound("dataset"));
        }
        let t = now();
        let m = e::document::ActiveModel {
            id: Set(DocumentId::new().0),
            tenant_id: Set(tenant.0),
            dataset_id: Set(new.dataset_id.0),
            title: Set(new.title),
            source: Set(new.source),
            mime_type: Set(new.mime_type),
            metadata: Set(new.metadata),
            status: Set(DocumentStatus::Pending.as_str().into()),
            error: Set(None),
            content_hash: Set(new.content_hash),
            content: Set(new.content),
            created_at: Set(t),
            updated_at: Set(t),
        }
        .insert(&txn)
        .await
        .map_err(|e| write_err(e, "dataset"))?;
        txn.commit().await.map_err(db_err)?;
        convert::document(m)
    }
}

/// Whether PostgreSQL refused a statement because a value held text it
/// cannot store: NUL in `text` (SQLSTATE 22021) or in `jsonb` (22P05).
/// The edge refuses such text with the field named ([`crate::text`]); this
/// keeps what slips through a 400, not a 500.
pub(super) fn unstorable_text(e: &DbErr) -> bool {
    let s = e.to_string();
    s.contains("invalid byte sequence for encoding \"UTF8\": 0x00")
        || s.contains("unsupported Unicode escape sequence")
        || s.contains("22021")
        || s.contains("22P05")
}

/// The file of a SQLite URL (none in memory).
pub(super) fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Makes a SQLite database readable and writable by its owner only (0600):
/// creates the file so before SQLite does (SQLite gives the `-wal` and
/// `-shm` files it creates the database file's mode), and takes group and
/// other permissions away from an existing one and its `-wal`/`-shm`.
pub(super) fn restrict_sqlite_files(url: &str) -> StoreResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let Some(db) = sqlite_file(url) else {
            return Ok(());
        };
        let io = |e: std::io::Error| {
            StoreError::unavailable_from(format!("database file {}", db.display()), e)
        };
        let creates = url.contains("mode=rwc");
        if creates && !db.exists() {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&db)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            let p = std::path::PathBuf::from(p);
            let Ok(meta) = std::fs::metadata(&p) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o700 | 0o600))
                    .map_err(io)?;
                tracing::info!(file = %p.display(), "database file restricted to its owner (0600)");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = url;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_of_urls() {
        assert_eq!(
            sqlite_file("sqlite://chatcore.db?mode=rwc"),
            Some("chatcore.db".into())
        );
        assert_eq!(
            sqlite_file("sqlite:///tmp/x.db?mode=rwc"),
            Some("/tmp/x.db".into())
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
