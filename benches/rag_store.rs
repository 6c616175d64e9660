//! Retrieval through the store at 10,000 and 100,000 chunks of 384
//! dimensions, on SQLite (a WAL file: FTS5 and the in-memory exact scan) and
//! on PostgreSQL (tsvector and pgvector's HNSW index, or the scan where the
//! extension is missing).
//!
//! Reports, per backend and size: ingestion in chunks/s (documents of 500
//! chunks through `Store::replace_chunks`, one transaction each, with the
//! full-text and vector indexes kept up to date), the first vector search
//! (which, on the scan path, loads the dataset's vectors), then p50/p99 of
//! top-10 vector search, full-text search and a hybrid retrieval (both
//! searches and the chunk texts, as `RagService` does, minus the query
//! embedding), and the recall@10 of the vector search against an exact
//! in-process answer.
//!
//! Run: `cargo bench -p chatcore-benches --bench rag_store`
//! Sizes: `RAG_BENCH_SIZES=10000,100000` (default). On PostgreSQL the chunks
//! table is analysed after ingestion (`psql` must be on the path), as
//! autovacuum would do within a minute of a bulk load. PostgreSQL:
//! `CHATCORE_TEST_POSTGRES_URL` (default the local `test` database; a fresh
//! schema is made and dropped); `RAG_BENCH_SKIP_POSTGRES=1` skips it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatcore::domain::*;
use chatcore::rag::{reciprocal_rank_fusion, top_k_unit_rows, unit_vector};
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore::testkit::pg;

const DIM: usize = 384;
const PER_DOCUMENT: usize = 500;
const QUERIES: usize = 200;
const RECALL_QUERIES: usize = 50;
const VOCABULARY: usize = 5_000;

/// SplitMix64: deterministic data, the same every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// A word index with a Zipf-like skew: a few words are everywhere.
    fn word(&mut self) -> usize {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((VOCABULARY as f64).powf(u) as usize).min(VOCABULARY) - 1
    }
}

fn word_text(i: usize) -> String {
    // Pronounceable pseudo-words, distinct per index.
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "de", "po", "gu", "fa", "zi", "be", "ho",
        "xu",
    ];
    let mut s = String::new();
    let mut n = i + 16;
    while n > 0 {
        s.push_str(SYL[n % 16]);
        n /= 16;
    }
    s
}

/// Cluster centres make nearest neighbours meaningful (uniform random
/// vectors in 384 dimensions are all about equally far apart).
fn corpus(n: usize, rng: &mut Rng) -> (Vec<String>, Vec<Vec<f32>>) {
    let centres: Vec<Vec<f32>> = (0..256)
        .map(|_| (0..DIM).map(|_| rng.next_f32()).collect())
        .collect();
    let mut texts = Vec::with_capacity(n);
    let mut vectors = Vec::with_capacity(n);
    for _ in 0..n {
        let c = &centres[(rng.next_u64() % centres.len() as u64) as usize];
        let v: Vec<f32> = c.iter().map(|x| x + 0.6 * rng.next_f32()).collect();
        vectors.push(v);
        let words: Vec<String> = (0..40).map(|_| word_text(rng.word())).collect();
        texts.push(words.join(" "));
    }
    (texts, vectors)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    format!("p50 {:7.2} ms  p99 {:7.2} ms", pct(&d, 0.5), pct(&d, 0.99))
}

async fn run(store: Arc<dyn Store>, label: &str, n: usize, pg_schema: Option<&str>) {
    let mut rng = Rng(n as u64);
    let mut nt = fixtures::new_tenant("bench");
    nt.slug = format!("bench-{}", uuid_suffix());
    let t = store.create_tenant(nt).await.unwrap();
    let p = store
        .create_provider_config(
            t.id,
            NewProviderConfig {
                provider: "mock".into(),
                name: "m".into(),
                api_key: None,
                base_url: None,
                default_model: None,
                enabled: true,
            },
        )
        .await
        .unwrap();
    let ds = store
        .create_dataset(
            t.id,
            NewDataset {
                name: "bench".into(),
                provider_id: p.id,
                embedding_model: "m".into(),
                embedding_dim: DIM as i32,
            },
        )
        .await
        .unwrap();
    let (texts, vectors) = corpus(n, &mut rng);

    // Ingestion.
    let started = Instant::now();
    for (d, start) in (0..n).step_by(PER_DOCUMENT).enumerate() {
        let doc = store
            .create_document(
                t.id,
                NewDocument {
                    dataset_id: ds.id,
                    title: format!("doc {d}"),
                    source: None,
                    mime_type: "text/plain".into(),
                    metadata: serde_json::json!({}),
                    content: String::new(),
                    content_hash: format!("h{d}"),
                },
            )
            .await
            .unwrap();
        let end = (start + PER_DOCUMENT).min(n);
        let chunks = (start..end)
            .map(|i| NewChunk {
                ordinal: (i - start) as i32,
                text: texts[i].clone(),
                token_count: 40,
                embedding: Some(vectors[i].clone()),
            })
            .collect();
        store.replace_chunks(t.id, doc.id, chunks).await.unwrap();
    }
    let ingest = started.elapsed();
    if let Some(schema) = pg_schema {
        // What autovacuum does within a minute of a bulk load: without
        // statistics the planner takes the dataset's b-tree and an exact sort.
        let out = std::process::Command::new("psql")
            .arg(pg::url())
            .arg("-qc")
            .arg(format!("ANALYZE \"{schema}\".chunks"))
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let datasets = [ds.id];
    let search = ChunkSearch {
        datasets: &datasets,
        documents: None,
        limit: 10,
    };
    // Queries near stored vectors: each has true neighbours.
    let queries: Vec<Vec<f32>> = (0..QUERIES)
        .map(|_| {
            let base = &vectors[(rng.next_u64() % n as u64) as usize];
            base.iter().map(|x| x + 0.1 * rng.next_f32()).collect()
        })
        .collect();
    let text_queries: Vec<String> = (0..QUERIES)
        .map(|_| {
            (0..3)
                .map(|_| word_text(rng.word()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();

    let t0 = Instant::now();
    store
        .search_chunks_by_vector(t.id, search, &queries[0])
        .await
        .unwrap();
    let first = t0.elapsed();

    let mut vector_times = Vec::new();
    let mut results = Vec::new();
    for q in &queries {
        let t0 = Instant::now();
        let hits = store
            .search_chunks_by_vector(t.id, search, q)
            .await
            .unwrap();
        vector_times.push(t0.elapsed());
        results.push(hits);
    }
    let mut text_times = Vec::new();
    let mut text_found = 0usize;
    for q in &text_queries {
        let t0 = Instant::now();
        let hits = store.search_chunks_by_text(t.id, search, q).await.unwrap();
        text_times.push(t0.elapsed());
        text_found += hits.len();
    }
    let mut hybrid_times = Vec::new();
    for (q, tq) in queries.iter().zip(&text_queries) {
        let t0 = Instant::now();
        let wide = ChunkSearch {
            limit: 40,
            ..search
        };
        let v = store.search_chunks_by_vector(t.id, wide, q).await.unwrap();
        let x = store.search_chunks_by_text(t.id, wide, tq).await.unwrap();
        let fused = reciprocal_rank_fusion(
            &[
                v.iter().map(|h| h.chunk_id).collect(),
                x.iter().map(|h| h.chunk_id).collect(),
            ],
            60.0,
        );
        let top: Vec<ChunkId> = fused.into_iter().take(10).map(|(id, _)| id).collect();
        let hits = store.chunk_hits(t.id, &top).await.unwrap();
        assert_eq!(hits.len(), top.len());
        hybrid_times.push(t0.elapsed());
    }

    // Recall@10 of the vector search against an exact answer.
    let ids: Vec<Vec<ChunkId>> = {
        let mut all = Vec::new();
        for d in store
            .list_documents(t.id, ds.id, PageRequest::first(PageRequest::MAX_LIMIT))
            .await
            .unwrap()
            .data
        {
            all.push(
                store
                    .list_chunks(t.id, d.id)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.id)
                    .collect(),
            );
        }
        all
    };
    let flat_ids: Vec<ChunkId> = ids.into_iter().flatten().collect();
    assert_eq!(flat_ids.len(), n, "every chunk stored");
    let matrix: Vec<f32> = vectors
        .iter()
        .flat_map(|v| unit_vector(v).unwrap())
        .collect();
    let mut hit = 0usize;
    for (q, got) in queries.iter().zip(&results).take(RECALL_QUERIES) {
        let exact = top_k_unit_rows(&unit_vector(q).unwrap(), &matrix, 10, |_| true);
        let got: std::collections::HashSet<ChunkId> = got.iter().map(|h| h.chunk_id).collect();
        hit += exact
            .iter()
            .filter(|(row, _)| got.contains(&flat_ids[*row]))
            .count();
    }
    let recall = hit as f64 / (RECALL_QUERIES * 10) as f64;

    println!(
        "{label:<9} {n:>7} chunks  ingest {:>8.0} chunks/s ({:.1} s)  vector={}",
        n as f64 / ingest.as_secs_f64(),
        ingest.as_secs_f64(),
        store.vector_search_kind()
    );
    println!(
        "          first vector search {:8.2} ms (loads the vectors on the scan path)",
        first.as_secs_f64() * 1e3
    );
    println!(
        "          vector top-10       {}  recall@10 {recall:.3}",
        summary(vector_times)
    );
    println!(
        "          full text top-10    {}  ({:.1} hits/query)",
        summary(text_times),
        text_found as f64 / QUERIES as f64
    );
    println!("          hybrid + texts      {}", summary(hybrid_times));
}

fn uuid_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::var("RAG_BENCH_SIZES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for &n in &sizes {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("rag.db").display());
            let store = SeaOrmStore::open(&url, StoreOptions::default())
                .await
                .unwrap();
            run(Arc::new(store.clone()), "sqlite", n, None).await;
            store.close().await.unwrap();

            if std::env::var("RAG_BENCH_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
                continue;
            }
            let (store, schema) = pg::fresh_store().await;
            run(Arc::new(store.clone()), "postgres", n, Some(&schema)).await;
            store.close().await.unwrap();
            SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
        }
    });
}
