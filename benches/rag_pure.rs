//! Micro-benchmarks of the pure RAG functions: cosine top-10 over 100,000
//! random 384-dimensional vectors, and chunking about 1 MB of text with the
//! cl100k token counter.
//!
//! Run: `cargo bench -p chatcore-benches --bench rag_pure -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use chatcore::rag::{ChunkOptions, chunk, cosine_top_k, tiktoken_counter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// SplitMix64: a small deterministic PRNG, so every run scores the same data.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

const DIM: usize = 384;
const VECTORS: usize = 100_000;

fn cosine(c: &mut Criterion) {
    let mut rng = SplitMix64(1);
    let store: Vec<f32> = (0..DIM * VECTORS).map(|_| rng.next_f32()).collect();
    let query: Vec<f32> = (0..DIM).map(|_| rng.next_f32()).collect();
    let mut group = c.benchmark_group("cosine_top_k");
    group.sample_size(20);
    group.throughput(Throughput::Elements(VECTORS as u64));
    group.bench_function("top10_of_100k_x384", |b| {
        b.iter(|| {
            let candidates = store.chunks_exact(DIM).enumerate();
            black_box(cosine_top_k(black_box(&query), candidates, 10))
        })
    });
    group.finish();
}

/// About 1 MB of Markdown-like text: sections with a heading, paragraphs of
/// prose and an occasional code block.
fn document(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "retrieval",
        "tenant",
        "the",
        "a",
        "provider",
        "of",
        "chunk",
        "embedding",
        "vector",
        "and",
        "store",
        "query",
        "model",
        "token",
        "is",
        "with",
        "document",
        "server",
        "latency",
        "stream",
        "configuration",
        "throughput",
        "índice",
        "東京",
        "naïve",
        "benchmark",
    ];
    let mut rng = SplitMix64(2);
    let mut text = String::with_capacity(bytes + 1024);
    let mut section = 0;
    while text.len() < bytes {
        section += 1;
        text.push_str(&format!("## Section {section}\n\n"));
        for _ in 0..(1 + rng.next_u64() % 5) {
            for _ in 0..(2 + rng.next_u64() % 8) {
                let n = 5 + rng.next_u64() % 15;
                for i in 0..n {
                    if i > 0 {
                        text.push(' ');
                    }
                    text.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
                }
                text.push_str(". ");
            }
            text.push_str("\n\n");
        }
        if rng.next_u64().is_multiple_of(4) {
            text.push_str("```rust\nfn main() {\n    println!(\"hello\");\n}\n```\n\n");
        }
    }
    text
}

fn chunking(c: &mut Criterion) {
    let text = document(1 << 20);
    let count = tiktoken_counter();
    let opts = ChunkOptions::default();
    let chunks = chunk(&text, &opts, &count).len();
    println!(
        "chunking: {} bytes -> {chunks} chunks per iteration",
        text.len()
    );
    let mut group = c.benchmark_group("chunk");
    group.sample_size(10);
    group.throughput(Throughput::Elements(chunks as u64));
    group.bench_function("1MB_cl100k_256_32", |b| {
        b.iter(|| black_box(chunk(black_box(&text), &opts, &count)))
    });
    group.finish();
}

criterion_group!(benches, cosine, chunking);
criterion_main!(benches);
