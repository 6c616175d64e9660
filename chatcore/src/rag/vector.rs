//! Vector retrieval math: cosine top-k, embedding (de)serialisation and
//! reciprocal rank fusion.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use super::RagError;

/// The `k` candidates most similar to `query` by cosine similarity, best
/// first, with their similarity in `[-1, 1]`.
///
/// Candidates whose dimension differs from the query's, and zero or
/// non-finite vectors, are skipped. Equal scores keep the candidates' input
/// order. A zero query (or `k == 0`) gives no results. Runs in one pass with
/// a bounded heap: O(n·d + n·log k) time, O(k) memory.
pub fn cosine_top_k<'a, Id, I>(query: &[f32], candidates: I, k: usize) -> Vec<(Id, f32)>
where
    I: IntoIterator<Item = (Id, &'a [f32])>,
{
    let query_norm = dot(query, query).sqrt();
    if k == 0 || query.is_empty() || !query_norm.is_finite() || query_norm == 0.0 {
        return Vec::new();
    }
    let unit_query: Vec<f32> = query.iter().map(|x| x / query_norm).collect();

    // A min-heap (by score, then later input first) of the best k so far.
    let mut heap: BinaryHeap<Scored<Id>> = BinaryHeap::with_capacity(k + 1);
    for (seq, (id, vector)) in candidates.into_iter().enumerate() {
        if vector.len() != unit_query.len() {
            continue;
        }
        let (dot, norm_sq) = dot_and_norm(&unit_query, vector);
        let score = dot / norm_sq.sqrt();
        if !score.is_finite() {
            continue;
        }
        if heap.len() == k {
            let worst = heap.peek().expect("k > 0");
            // Ties go to the earlier candidate, already in the heap.
            if score <= worst.score {
                continue;
            }
            heap.pop();
        }
        heap.push(Scored { score, seq, id });
    }
    let mut best = heap.into_vec();
    best.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.seq.cmp(&b.seq)));
    best.into_iter().map(|s| (s.id, s.score)).collect()
}

/// A heap entry ordered so that `BinaryHeap` (a max-heap) pops the worst:
/// the lowest score, and among equal scores the latest candidate.
struct Scored<Id> {
    score: f32,
    seq: usize,
    id: Id,
}

impl<Id> Ord for Scored<Id> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.seq.cmp(&other.seq))
    }
}

impl<Id> PartialOrd for Scored<Id> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<Id> PartialEq for Scored<Id> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<Id> Eq for Scored<Id> {}

/// Lanes of independent accumulators: lets the compiler vectorise the loops
/// (floating-point addition is not associative, so it will not reorder one
/// accumulator on its own).
const LANES: usize = 16;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_and_norm(a, b).0
}

/// `a·b` and `b·b` in one pass over equally long slices.
#[inline]
fn dot_and_norm(a: &[f32], b: &[f32]) -> (f32, f32) {
    debug_assert_eq!(a.len(), b.len());
    let mut dot = [0.0f32; LANES];
    let mut norm = [0.0f32; LANES];
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            dot[i] += x[i] * y[i];
            norm[i] += y[i] * y[i];
        }
    }
    let mut d: f32 = dot.iter().sum();
    let mut n: f32 = norm.iter().sum();
    for (x, y) in a_rest.iter().zip(b_rest) {
        d += x * y;
        n += y * y;
    }
    (d, n)
}

/// `vector` scaled to unit length, or `None` for a zero or non-finite one.
pub fn unit_vector(vector: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(vector, vector).sqrt();
    if vector.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(vector.iter().map(|x| x / norm).collect())
}

/// The `k` rows of `matrix` (unit vectors of `unit_query.len()` floats each,
/// stored one after another) with the largest dot product with
/// `unit_query`, i.e. the highest cosine similarity, best first, as
/// `(row, similarity)`. Rows for which `keep` is false are skipped; equal
/// scores keep the earlier row. The tight loop behind retrieval when no
/// vector index is at hand.
pub fn top_k_unit_rows(
    unit_query: &[f32],
    matrix: &[f32],
    k: usize,
    mut keep: impl FnMut(usize) -> bool,
) -> Vec<(usize, f32)> {
    let dims = unit_query.len();
    if k == 0 || dims == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Scored<usize>> = BinaryHeap::with_capacity(k + 1);
    let mut worst = f32::NEG_INFINITY;
    for (row, v) in matrix.chunks_exact(dims).enumerate() {
        let score = dot_only(unit_query, v);
        if heap.len() == k && score <= worst {
            continue;
        }
        if !score.is_finite() || !keep(row) {
            continue;
        }
        if heap.len() == k {
            heap.pop();
        }
        heap.push(Scored {
            score,
            seq: row,
            id: row,
        });
        if heap.len() == k {
            worst = heap.peek().expect("k > 0").score;
        }
    }
    let mut best = heap.into_vec();
    best.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.seq.cmp(&b.seq)));
    best.into_iter().map(|s| (s.id, s.score)).collect()
}

/// `a·b` over equally long slices, with independent lanes as in
/// [`dot_and_norm`].
#[inline]
fn dot_only(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut d: f32 = acc.iter().sum();
    for (x, y) in a_rest.iter().zip(b_rest) {
        d += x * y;
    }
    d
}

/// Decodes an embedding stored as little-endian `f32`s (the `chunks.embedding`
/// column's format).
pub fn f32_bytes_to_vec(bytes: &[u8]) -> Result<Vec<f32>, RagError> {
    let (words, rest) = bytes.as_chunks::<4>();
    if !rest.is_empty() {
        return Err(RagError::InvalidVectorBytes { len: bytes.len() });
    }
    Ok(words.iter().map(|w| f32::from_le_bytes(*w)).collect())
}

/// Encodes an embedding as little-endian `f32`s, the inverse of
/// [`f32_bytes_to_vec`].
pub fn vec_to_f32_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Merges several rankings (best first) by reciprocal rank fusion: an id
/// scores `Σ 1 / (k_constant + rank)` over the lists it appears in, with
/// ranks from 1. The usual `k_constant` is 60.
///
/// Returns every id once, by fused score descending; equal scores are ordered
/// by the best rank the id reached in any list, then by first appearance
/// (earlier list, then earlier position). An id repeated within one list
/// counts only at its first position.
pub fn reciprocal_rank_fusion<Id>(lists: &[Vec<Id>], k_constant: f32) -> Vec<(Id, f32)>
where
    Id: Eq + Hash + Clone,
{
    struct Fused {
        score: f64,
        best_rank: usize,
        first_seen: usize,
        last_list: usize,
    }
    let k = f64::from(k_constant);
    let mut fused: HashMap<&Id, Fused> = HashMap::new();
    let mut seen = 0usize;
    for (list_index, list) in lists.iter().enumerate() {
        for (position, id) in list.iter().enumerate() {
            let rank = position + 1;
            // usize to f64 is exact for any realistic list length.
            let contribution = 1.0 / (k + rank as f64);
            match fused.entry(id) {
                Entry::Occupied(mut e) => {
                    let f = e.get_mut();
                    if f.last_list == list_index {
                        continue;
                    }
                    f.score += contribution;
                    f.best_rank = f.best_rank.min(rank);
                    f.last_list = list_index;
                }
                Entry::Vacant(e) => {
                    e.insert(Fused {
                        score: contribution,
                        best_rank: rank,
                        first_seen: seen,
                        last_list: list_index,
                    });
                    seen += 1;
                }
            }
        }
    }
    let mut out: Vec<(&Id, Fused)> = fused.into_iter().collect();
    out.sort_unstable_by(|(_, a), (_, b)| {
        b.score
            .total_cmp(&a.score)
            .then(a.best_rank.cmp(&b.best_rank))
            .then(a.first_seen.cmp(&b.first_seen))
    });
    out.into_iter()
        .map(|(id, f)| (id.clone(), f.score as f32))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic PRNG (SplitMix64) for reproducible test data.
    pub(crate) struct SplitMix64(pub u64);

    impl SplitMix64 {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [-1, 1).
        pub(crate) fn next_f32(&mut self) -> f32 {
            // The top 24 bits give every f32 in [0, 1) with equal spacing.
            let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            unit * 2.0 - 1.0
        }

        pub(crate) fn vector(&mut self, dim: usize) -> Vec<f32> {
            (0..dim).map(|_| self.next_f32()).collect()
        }
    }

    fn brute_force(query: &[f32], vectors: &[Vec<f32>], k: usize) -> Vec<(usize, f32)> {
        let qn = query
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        let mut all: Vec<(usize, f32)> = vectors
            .iter()
            .enumerate()
            .filter(|(_, v)| v.len() == query.len())
            .map(|(i, v)| {
                let d: f64 = query
                    .iter()
                    .zip(v)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                let vn = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                (i, (d / (qn * vn)) as f32)
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn top_k_unit_rows_matches_brute_force_and_honours_keep() {
        let mut rng = SplitMix64(7);
        for (dim, n, k) in [(384, 3_000, 10), (5, 40, 3), (33, 100, 200)] {
            let vectors: Vec<Vec<f32>> = (0..n).map(|_| rng.vector(dim)).collect();
            let matrix: Vec<f32> = vectors
                .iter()
                .flat_map(|v| unit_vector(v).expect("non-zero"))
                .collect();
            let query = rng.vector(dim);
            let unit = unit_vector(&query).expect("non-zero");
            let got = top_k_unit_rows(&unit, &matrix, k, |_| true);
            let want = brute_force(&query, &vectors, k);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0, "dim {dim} n {n}");
                assert!((g.1 - w.1).abs() < 1e-4);
            }
            // Odd rows excluded: the answer is the brute force over even rows.
            let got = top_k_unit_rows(&unit, &matrix, k, |r| r % 2 == 0);
            let evens: Vec<Vec<f32>> = vectors.iter().step_by(2).cloned().collect();
            let want: Vec<usize> = brute_force(&query, &evens, k)
                .into_iter()
                .map(|(i, _)| i * 2)
                .collect();
            assert_eq!(got.into_iter().map(|(r, _)| r).collect::<Vec<_>>(), want);
        }
        assert!(unit_vector(&[0.0, 0.0]).is_none());
        assert!(unit_vector(&[f32::NAN, 1.0]).is_none());
        assert!(top_k_unit_rows(&[1.0], &[1.0, 2.0], 0, |_| true).is_empty());
    }

    #[test]
    fn cosine_top_k_matches_brute_force() {
        let mut rng = SplitMix64(42);
        for (dim, n, k) in [(3, 50, 5), (384, 2_000, 10), (17, 300, 1), (64, 20, 50)] {
            let mut vectors: Vec<Vec<f32>> = (0..n).map(|_| rng.vector(dim)).collect();
            // Some vectors of the wrong dimension, which must be skipped.
            vectors[1] = rng.vector(dim + 1);
            vectors[7] = rng.vector(dim.saturating_sub(1));
            let query = rng.vector(dim);
            let got = cosine_top_k(
                &query,
                vectors.iter().enumerate().map(|(i, v)| (i, v.as_slice())),
                k,
            );
            let want = brute_force(&query, &vectors, k);
            assert_eq!(got.len(), want.len().min(k));
            assert_eq!(
                got.iter().map(|g| g.0).collect::<Vec<_>>(),
                want.iter().map(|w| w.0).collect::<Vec<_>>(),
                "dim {dim} n {n} k {k}"
            );
            for ((_, g), (_, w)) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "{g} vs {w}");
            }
            assert!(got.iter().all(|(i, _)| *i != 1 && *i != 7));
        }
    }

    #[test]
    fn cosine_is_scale_invariant_and_exact_on_known_vectors() {
        let query = [2.0, 0.0];
        let vectors: Vec<(&str, Vec<f32>)> = vec![
            ("orthogonal", vec![0.0, 5.0]),
            ("same", vec![10.0, 0.0]),
            ("opposite", vec![-1.0, 0.0]),
            ("diagonal", vec![1.0, 1.0]),
            ("zero", vec![0.0, 0.0]),
        ];
        let got = cosine_top_k(
            &query,
            vectors.iter().map(|(id, v)| (*id, v.as_slice())),
            10,
        );
        let ids: Vec<&str> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids, ["same", "diagonal", "orthogonal", "opposite"]);
        assert!((got[0].1 - 1.0).abs() < 1e-6);
        assert!((got[1].1 - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((got[3].1 + 1.0).abs() < 1e-6);
    }

    #[test]
    fn cosine_ties_keep_input_order_and_degenerate_inputs_are_empty() {
        let v = [1.0f32, 1.0];
        let got = cosine_top_k(&[1.0, 1.0], (0..5).map(|i| (i, &v[..])), 3);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(cosine_top_k(&[0.0, 0.0], [(0, &v[..])], 3).is_empty());
        assert!(cosine_top_k(&[1.0, 0.0], [(0, &v[..])], 0).is_empty());
        assert!(cosine_top_k::<u8, Vec<(u8, &[f32])>>(&[1.0], vec![], 3).is_empty());
    }

    #[test]
    fn f32_bytes_round_trip_little_endian() {
        let v = vec![1.0f32, -2.5, f32::MAX, 0.0, 1e-20];
        let bytes = vec_to_f32_bytes(&v);
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[..4], &[0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(f32_bytes_to_vec(&bytes).unwrap(), v);
        assert_eq!(
            f32_bytes_to_vec(&bytes[..7]),
            Err(RagError::InvalidVectorBytes { len: 7 })
        );
        assert_eq!(f32_bytes_to_vec(&[]).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn rrf_on_a_known_example() {
        let vector = vec!["a", "b", "c", "d"];
        let text = vec!["c", "a", "e"];
        let got = reciprocal_rank_fusion(&[vector, text], 60.0);
        let ids: Vec<&str> = got.iter().map(|g| g.0).collect();
        // a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, e: 1/63, d: 1/64.
        assert_eq!(ids, ["a", "c", "b", "e", "d"]);
        let expect_a = 1.0 / 61.0 + 1.0 / 62.0;
        assert!((f64::from(got[0].1) - expect_a).abs() < 1e-7);
        assert!((f64::from(got[4].1) - 1.0 / 64.0).abs() < 1e-7);
    }

    #[test]
    fn rrf_ties_are_deterministic_and_duplicates_count_once() {
        // x and y tie (1/2 + 1/3 each with k = 1) with the same best rank:
        // y appeared first. The repeated x in the second list counts once.
        let got = reciprocal_rank_fusion(&[vec!["y", "x"], vec!["x", "y", "x"]], 1.0);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), ["y", "x"]);
        assert_eq!(got[0].1, got[1].1);
        assert!((got[0].1 - (0.5 + 1.0 / 3.0)).abs() < 1e-6);
        // With k = 2, a (ranks 4 and 1) and b (ranks 2 and 2) both score 1/2:
        // a reached the better rank, so it wins although b appeared first.
        let got = reciprocal_rank_fusion(&[vec!["x", "b", "y", "a"], vec!["a", "b"]], 2.0);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            ["a", "b", "x", "y"]
        );
        assert_eq!(got[0].1, got[1].1);
        assert!(reciprocal_rank_fusion::<u32>(&[], 60.0).is_empty());
    }
}
