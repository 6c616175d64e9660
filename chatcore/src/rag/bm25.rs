//! A small Okapi BM25 scorer, for when the store has no full-text index.

use std::collections::HashMap;

/// Term-frequency saturation.
const K1: f32 = 1.2;
/// Document-length normalisation.
const B: f32 = 0.75;

/// Splits text into lowercase terms: runs of alphanumeric characters (Unicode
/// aware), with each Han, Hiragana or Katakana character a term of its own,
/// since those scripts do not separate words with spaces.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if is_ideographic(c) {
            if !current.is_empty() {
                terms.push(std::mem::take(&mut current));
            }
            terms.push(c.to_string());
        } else if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            terms.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        terms.push(current);
    }
    terms
}

/// Han ideographs, Hiragana and Katakana.
fn is_ideographic(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30FF}'     // Hiragana, Katakana
        | '\u{3400}'..='\u{4DBF}'   // CJK Extension A
        | '\u{4E00}'..='\u{9FFF}'   // CJK Unified Ideographs
        | '\u{F900}'..='\u{FAFF}'   // CJK Compatibility Ideographs
        | '\u{20000}'..='\u{3134F}' // CJK Extensions B to G
    )
}

/// Okapi BM25 scores (k1 = 1.2, b = 0.75) of `docs` for `query`, computed over
/// the given documents as the whole collection, with [`tokenize`] on both
/// sides (a query term repeated counts once).
///
/// Returns only the documents that contain a query term, best first; equal
/// scores keep the input order. The IDF is `ln(1 + (N - df + 0.5) / (df +
/// 0.5))`, which stays positive even for terms in most documents.
pub fn bm25_scores<'a, Id, I>(query: &str, docs: I) -> Vec<(Id, f32)>
where
    I: IntoIterator<Item = (Id, &'a str)>,
{
    let mut query_terms: Vec<String> = Vec::new();
    for term in tokenize(query) {
        if !query_terms.contains(&term) {
            query_terms.push(term);
        }
    }
    if query_terms.is_empty() {
        return Vec::new();
    }
    let index: HashMap<&str, usize> = query_terms
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();

    // One pass: per document, its length and the frequency of each query term.
    struct Doc<Id> {
        id: Id,
        len: usize,
        tf: Vec<u32>,
    }
    let mut stats: Vec<Doc<Id>> = Vec::new();
    let mut df = vec![0u32; query_terms.len()];
    let mut total_len = 0usize;
    for (id, text) in docs {
        let terms = tokenize(text);
        let mut tf = vec![0u32; query_terms.len()];
        for term in &terms {
            if let Some(&i) = index.get(term.as_str()) {
                tf[i] += 1;
            }
        }
        for (d, &f) in df.iter_mut().zip(&tf) {
            *d += u32::from(f > 0);
        }
        total_len += terms.len();
        stats.push(Doc {
            id,
            len: terms.len(),
            tf,
        });
    }
    if stats.is_empty() {
        return Vec::new();
    }
    let n = stats.len() as f32;
    let avg_len = (total_len as f32 / n).max(1.0);
    let idf: Vec<f32> = df
        .iter()
        .map(|&d| (1.0 + (n - d as f32 + 0.5) / (d as f32 + 0.5)).ln())
        .collect();

    let mut scored: Vec<(usize, Id, f32)> = stats
        .into_iter()
        .enumerate()
        .filter_map(|(order, doc)| {
            let norm = K1 * (1.0 - B + B * doc.len as f32 / avg_len);
            let score: f32 = doc
                .tf
                .iter()
                .zip(&idf)
                .filter(|(f, _)| **f > 0)
                .map(|(&f, &w)| {
                    let f = f as f32;
                    w * f * (K1 + 1.0) / (f + norm)
                })
                .sum();
            (score > 0.0).then_some((order, doc.id, score))
        })
        .collect();
    scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    scored.into_iter().map(|(_, id, s)| (id, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_lowercases_and_splits_unicode() {
        assert_eq!(
            tokenize("Hello, WORLD! Ünïcödé-text_42 naïve"),
            ["hello", "world", "ünïcödé", "text", "42", "naïve"]
        );
        assert_eq!(
            tokenize("東京タワー is 高い"),
            ["東", "京", "タ", "ワ", "ー", "is", "高", "い"]
        );
        assert!(tokenize(" ,.;!? 🎉 ").is_empty());
    }

    #[test]
    fn rare_query_word_ranks_its_document_first() {
        let docs = [
            (1, "the cat sat on the mat with the other cat"),
            (2, "the dog chased the cat around the garden"),
            (3, "the aardvark ate ants near the cat"),
            (4, "the cat and the dog slept"),
            (5, "nothing relevant here at all"),
        ];
        let got = bm25_scores("cat aardvark", docs.iter().map(|(i, t)| (*i, *t)));
        assert_eq!(got[0].0, 3, "{got:?}");
        // Every document with "cat" is returned, the one without is not.
        let mut ids: Vec<i32> = got.iter().map(|g| g.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
    }

    #[test]
    fn term_frequency_and_length_matter() {
        let docs = [
            (
                "long",
                "rust is fine but this document talks about many other things at length and rust once more",
            ),
            ("short", "rust rust"),
            ("once", "rust"),
        ];
        let got = bm25_scores("Rust", docs.iter().copied());
        let ids: Vec<&str> = got.iter().map(|g| g.0).collect();
        assert_eq!(ids, ["short", "once", "long"]);
    }

    #[test]
    fn no_query_terms_or_no_docs_give_nothing() {
        assert!(bm25_scores("...", [(1, "text")]).is_empty());
        assert!(bm25_scores::<u8, [(u8, &str); 0]>("text", []).is_empty());
        assert!(bm25_scores("absent", [(1, "text")]).is_empty());
    }
}
