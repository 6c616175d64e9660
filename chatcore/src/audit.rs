//! The audit writer: records are written off the request path, in batches,
//! by one background task.
//!
//! The queue is bounded: when it is full, [`AuditWriter::record`] waits
//! (backpressure) rather than drop a record. A batch that fails to write is
//! retried with capped exponential backoff until it succeeds, and every
//! failure is logged; nothing is dropped silently. [`AuditWriter::flush`]
//! waits until everything queued before it is stored (shutdown calls it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::domain::AuditRecord;
use crate::store::{AuditStore, StoreError};

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Queue capacity (records waiting to be written).
    pub capacity: usize,
    /// Most records in one write.
    pub max_batch: usize,
    /// Longest wait to fill a batch once a record arrived.
    pub linger: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_batch: 500,
            linger: Duration::from_millis(20),
        }
    }
}

enum Msg {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

/// Counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records stored.
    pub written: AtomicU64,
    /// Failed batch writes (each retried).
    pub failed_writes: AtomicU64,
}

/// The handle that request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    stats: Arc<AuditStats>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish()
    }
}

impl AuditWriter {
    /// Starts the background writer. The task ends once every
    /// `AuditWriter` clone is dropped and the queue is drained.
    pub fn spawn(store: Arc<dyn AuditStore>, config: AuditConfig) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let stats = Arc::new(AuditStats::default());
        let task = tokio::spawn(run(store, config, rx, stats.clone()));
        (Self { tx, stats }, task)
    }

    /// Queues a record, waiting while the queue is full.
    pub async fn record(&self, record: AuditRecord) {
        if self.tx.send(Msg::Record(Box::new(record))).await.is_err() {
            // Only after the writer task died (a bug or a runtime shutdown).
            tracing::error!("audit writer is gone: a record could not be queued");
        }
    }

    /// Waits until every record queued before this call is stored.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &AuditStats {
        &self.stats
    }
}

async fn run(
    store: Arc<dyn AuditStore>,
    config: AuditConfig,
    mut rx: mpsc::Receiver<Msg>,
    stats: Arc<AuditStats>,
) {
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(config.max_batch);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let push = |m: Msg,
                    batch: &mut Vec<AuditRecord>,
                    waiting: &mut Vec<oneshot::Sender<()>>| match m {
            Msg::Record(r) => batch.push(*r),
            Msg::Flush(ack) => waiting.push(ack),
        };
        push(first, &mut batch, &mut waiting);
        // Gather more for a short while: one write for many records.
        let deadline = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.max_batch && waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => push(m, &mut batch, &mut waiting),
                Ok(None) | Err(_) => break,
            }
        }
        write_with_retry(&*store, &mut batch, &stats).await;
        for ack in waiting.drain(..) {
            let _ = ack.send(());
        }
    }
    write_with_retry(&*store, &mut batch, &stats).await;
}

async fn write_with_retry(
    store: &dyn AuditStore,
    batch: &mut Vec<AuditRecord>,
    stats: &AuditStats,
) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    let mut rejected = 0;
    loop {
        match store.append_audit_batch(batch.clone()).await {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                return;
            }
            Err(e) => {
                stats.failed_writes.fetch_add(1, Ordering::Relaxed);
                let transient = matches!(e, StoreError::Unavailable { .. });
                if !transient {
                    rejected += 1;
                }
                if rejected >= 3 {
                    // The database keeps refusing this batch (e.g. a record
                    // naming a tenant deleted meanwhile): store the records one
                    // by one and put any that still fail into the error log in
                    // full, so that none is lost silently.
                    for r in batch.drain(..) {
                        match store.append_audit_batch(vec![r.clone()]).await {
                            Ok(()) => {
                                stats.written.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let json = serde_json::to_string(&r).unwrap_or_default();
                                tracing::error!(error = %crate::error::Report(&e), record = %json, "audit record rejected by the database");
                            }
                        }
                    }
                    return;
                }
                tracing::error!(error = %crate::error::Report(&e), records = batch.len(), retry_in_ms = delay.as_millis() as u64, "audit write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, ActorKind, TenantId};
    use crate::store::{AuditFilter, AuditStore, PageRequest, SeaOrmStore};
    use crate::testkit::fixtures::SystemWrites;

    /// The records of `rec` (not the tenant's creation).
    fn events() -> AuditFilter {
        AuditFilter {
            action: Some("test.event".into()),
            ..Default::default()
        }
    }

    fn rec(t: TenantId, i: usize) -> AuditRecord {
        AuditRecord::new(
            Some(t),
            Actor {
                kind: ActorKind::System,
                id: Some(i.to_string()),
            },
            "test.event",
        )
    }

    #[tokio::test]
    async fn batches_flushes_and_loses_nothing() {
        let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
        let t = store
            .create_tenant(crate::testkit::fixtures::new_tenant("a"))
            .await
            .unwrap();
        // A tiny queue forces backpressure.
        let (w, task) = AuditWriter::spawn(
            store.clone(),
            AuditConfig {
                capacity: 8,
                max_batch: 64,
                linger: Duration::from_millis(5),
            },
        );
        let mut handles = Vec::new();
        for p in 0..4 {
            let w = w.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..250 {
                    w.record(rec(t.id, p * 1000 + i)).await;
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        w.flush().await;
        assert_eq!(w.stats().written.load(Ordering::Relaxed), 1000);
        let mut n = 0;
        let mut cursor = None;
        loop {
            let p = store
                .list_audit(
                    t.id,
                    events(),
                    PageRequest {
                        limit: 200,
                        cursor: cursor.clone(),
                    },
                )
                .await
                .unwrap();
            n += p.data.len();
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(n, 1000);
        // Dropping the last writer drains and ends the task.
        w.record(rec(t.id, 9999)).await;
        drop(w);
        task.await.unwrap();
        let p = store
            .list_audit(t.id, events(), PageRequest::first(1))
            .await
            .unwrap();
        assert_eq!(p.data[0].actor.id.as_deref(), Some("9999"));
    }

    #[tokio::test]
    async fn a_rejected_record_does_not_block_the_others() {
        let store = Arc::new(SeaOrmStore::in_memory().await.unwrap());
        let t = store
            .create_tenant(crate::testkit::fixtures::new_tenant("a"))
            .await
            .unwrap();
        let (w, _task) = AuditWriter::spawn(store.clone(), AuditConfig::default());
        w.record(rec(t.id, 1)).await;
        // A tenant that does not exist: the foreign key refuses it.
        w.record(rec(TenantId::new(), 2)).await;
        w.record(rec(t.id, 3)).await;
        w.flush().await;
        let p = store
            .list_audit(t.id, events(), PageRequest::first(10))
            .await
            .unwrap();
        let ids: Vec<_> = p.data.iter().filter_map(|r| r.actor.id.clone()).collect();
        assert_eq!(ids, ["3", "1"]);
        assert!(w.stats().failed_writes.load(Ordering::Relaxed) >= 3);
    }
}
