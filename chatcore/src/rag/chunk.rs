//! Token-bounded chunking with overlap.
//!
//! The text is cut into blocks (paragraphs, fenced code blocks, heading
//! lines), headings are grouped with the block that follows them, and every
//! group that fits in `max_tokens` becomes one indivisible unit. A group that
//! does not fit is split into sentences (and lines), a sentence that does not
//! fit into words, and a word that does not fit into runs of characters. The
//! units are then packed greedily into chunks; each chunk after the first
//! starts with the tail of the previous one (at most `overlap_tokens`).
//!
//! Every chunk is a contiguous slice of the input, trimmed of surrounding
//! whitespace, so its [`TextChunk::span`] points back into the document.

use std::ops::Range;

/// How [`chunk`] sizes its chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Upper bound on a chunk's tokens (as counted by the caller's counter).
    pub max_tokens: usize,
    /// How many tokens of the previous chunk's tail each chunk repeats, at
    /// most. Clamped to half of `max_tokens`. A chunk that begins with a whole
    /// paragraph too large to leave room for the overlap has none.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// One chunk of a document, ready to embed and store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextChunk {
    /// Position of the chunk in the document, from 0.
    pub ordinal: usize,
    /// The chunk's text: exactly `document[span]`.
    pub text: String,
    /// Tokens in `text`, as counted by the counter given to [`chunk`].
    pub token_count: usize,
    /// Byte range of the chunk in the text given to [`chunk`].
    pub span: Range<usize>,
}

/// A token counter for OpenAI's `cl100k_base` encoding (the encoding of
/// `text-embedding-3-*` and GPT-4). The encoding is loaded once per process,
/// on first use.
pub fn tiktoken_counter() -> impl Fn(&str) -> usize + Send + Sync + Copy + 'static {
    // tiktoken-rs keeps the encoder in a `LazyLock` static.
    let bpe = tiktoken_rs::cl100k_base_singleton();
    move |text: &str| bpe.count_ordinary(text)
}

/// Splits `text` into chunks of at most `opts.max_tokens` tokens, as counted by
/// `count_tokens`, each repeating up to `opts.overlap_tokens` tokens of the
/// previous chunk's tail.
///
/// Headings stay with the paragraph that follows them and paragraphs and code
/// blocks stay whole when they fit; larger ones are split by sentences, then
/// words, then characters (never inside a UTF-8 character). Empty or
/// whitespace-only text gives no chunks. The only chunk that can exceed
/// `max_tokens` is a single character that alone counts more than
/// `max_tokens` tokens (possible with a very small limit: one emoji is
/// several cl100k tokens).
pub fn chunk(
    text: &str,
    opts: &ChunkOptions,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<TextChunk> {
    let max = opts.max_tokens.max(1);
    let overlap = opts.overlap_tokens.min(max / 2);
    let splitter = Splitter {
        text,
        max,
        // Pieces of a split block leave room for the overlap, so that the
        // chunk they start can still begin with the previous chunk's tail.
        piece_max: (max - overlap).max(1),
        count: count_tokens,
    };
    let units = splitter.units();
    splitter.pack(&units, overlap)
}

/// An indivisible piece of text: `text[start..end]`, trimmed, with its
/// token count.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
}

/// A block of the document: a paragraph, a fenced code block or a heading
/// line, as a trimmed byte range.
#[derive(Debug, Clone, Copy)]
struct Block {
    start: usize,
    end: usize,
    heading: bool,
}

/// How finely [`Splitter::push_units`] cuts a range that does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Sentence,
    Word,
    Char,
}

struct Splitter<'a> {
    text: &'a str,
    /// Bound of a chunk, and of a block kept whole.
    max: usize,
    /// Bound of a piece of a block that had to be split.
    piece_max: usize,
    count: &'a dyn Fn(&str) -> usize,
}

impl Splitter<'_> {
    fn tokens(&self, start: usize, end: usize) -> usize {
        (self.count)(&self.text[start..end])
    }

    /// Cuts the text into units, each of at most `max` tokens.
    fn units(&self) -> Vec<Unit> {
        let blocks = blocks(self.text);
        let mut units = Vec::new();
        let mut i = 0;
        while i < blocks.len() {
            // A group: any headings and the block that follows them.
            let first = i;
            while i < blocks.len() && blocks[i].heading {
                i += 1;
            }
            let last = i.min(blocks.len() - 1);
            i = last + 1;
            let (start, end) = (blocks[first].start, blocks[last].end);
            let tokens = self.tokens(start, end);
            if tokens <= self.max {
                units.push(Unit { start, end, tokens });
                continue;
            }
            // Too big: split each block, then glue each heading to the unit
            // after it when the two fit together.
            let mut group: Vec<(Unit, bool)> = Vec::new();
            for block in &blocks[first..=last] {
                let from = group.len();
                let mut pieces = Vec::new();
                self.push_units(
                    block.start,
                    block.end,
                    Level::Sentence,
                    self.max,
                    &mut pieces,
                );
                group.extend(pieces.into_iter().map(|u| (u, false)));
                if block.heading
                    && group.len() > from
                    && let Some(last_piece) = group.last_mut()
                {
                    last_piece.1 = true;
                }
            }
            let mut glued: Vec<(Unit, bool)> = Vec::with_capacity(group.len());
            for (unit, is_heading) in group {
                if let Some((prev, true)) = glued.last().copied() {
                    let tokens = self.tokens(prev.start, unit.end);
                    if tokens <= self.max {
                        *glued.last_mut().expect("checked above") = (
                            Unit {
                                start: prev.start,
                                end: unit.end,
                                tokens,
                            },
                            is_heading,
                        );
                        continue;
                    }
                }
                glued.push((unit, is_heading));
            }
            units.extend(glued.into_iter().map(|(u, _)| u));
        }
        units
    }

    /// Appends the units of `text[start..end]`: one if it fits in `limit`
    /// tokens, else pieces cut at `level` (and finer) that fit in
    /// `piece_max`.
    fn push_units(
        &self,
        start: usize,
        end: usize,
        level: Level,
        limit: usize,
        out: &mut Vec<Unit>,
    ) {
        let (start, end) = trim(self.text, start, end);
        if start == end {
            return;
        }
        let tokens = self.tokens(start, end);
        if tokens <= limit {
            out.push(Unit { start, end, tokens });
            return;
        }
        match level {
            Level::Sentence => {
                for (s, e) in sentence_ranges(self.text, start, end) {
                    self.push_units(s, e, Level::Word, self.piece_max, out);
                }
            }
            Level::Word => {
                for (s, e) in word_ranges(self.text, start, end) {
                    self.push_units(s, e, Level::Char, self.piece_max, out);
                }
            }
            Level::Char => self.hard_split(start, end, out),
        }
    }

    /// Cuts `text[start..end]` (one giant word) into the longest runs of
    /// characters that fit.
    fn hard_split(&self, start: usize, end: usize, out: &mut Vec<Unit>) {
        let text = self.text;
        let mut a = start;
        while a < end {
            let one = next_boundary(text, a);
            let one_tokens = self.tokens(a, one);
            if one_tokens > self.piece_max {
                // A character cannot be split: it is a unit of its own, over
                // the limit only if it alone exceeds `max_tokens`.
                out.push(Unit {
                    start: a,
                    end: one,
                    tokens: one_tokens,
                });
                a = one;
                continue;
            }
            // `lo` fits, `hi` (if any) does not. Grow exponentially, then bisect.
            let (mut lo, mut lo_tokens) = (one, one_tokens);
            let mut hi = end + 1;
            let mut step = (self.piece_max * 4).max(16);
            while lo < end {
                let cand = floor_boundary(text, (a + step).min(end)).max(next_boundary(text, lo));
                let t = self.tokens(a, cand);
                if t <= self.piece_max {
                    (lo, lo_tokens) = (cand, t);
                    step *= 2;
                } else {
                    hi = cand;
                    break;
                }
            }
            while hi <= end {
                let mut mid = floor_boundary(text, lo + (hi - lo) / 2);
                if mid <= lo {
                    mid = next_boundary(text, lo);
                }
                if mid >= hi {
                    break;
                }
                let t = self.tokens(a, mid);
                if t <= self.piece_max {
                    (lo, lo_tokens) = (mid, t);
                } else {
                    hi = mid;
                }
            }
            out.push(Unit {
                start: a,
                end: lo,
                tokens: lo_tokens,
            });
            a = lo;
        }
    }

    /// Packs units greedily into chunks, each starting with the tail of the
    /// previous chunk.
    fn pack(&self, units: &[Unit], overlap: usize) -> Vec<TextChunk> {
        let mut chunks: Vec<TextChunk> = Vec::new();
        let mut next = 0;
        while next < units.len() {
            let mut budget = overlap;
            let (start, last, tokens) = loop {
                let start = match chunks.last() {
                    Some(prev) if budget > 0 => self
                        .overlap_start(prev.span.start, prev.span.end, budget)
                        .unwrap_or(units[next].start),
                    _ => units[next].start,
                };
                let first_tokens = if start == units[next].start {
                    units[next].tokens
                } else {
                    self.tokens(start, units[next].end)
                };
                if first_tokens <= self.max || start == units[next].start {
                    let (last, tokens) = self.extend(units, next, start, first_tokens);
                    break (start, last, tokens);
                }
                // The overlap leaves no room for the next unit: shrink it.
                budget /= 2;
            };
            chunks.push(TextChunk {
                ordinal: chunks.len(),
                text: self.text[start..units[last].end].to_owned(),
                token_count: tokens,
                span: start..units[last].end,
            });
            next = last + 1;
        }
        chunks
    }

    /// The last unit index of the chunk that starts at byte `start` and
    /// contains `units[first]` (which fits, with `first_tokens`), and the
    /// chunk's tokens.
    fn extend(
        &self,
        units: &[Unit],
        first: usize,
        start: usize,
        first_tokens: usize,
    ) -> (usize, usize) {
        // Estimate by summing unit tokens (the separators between units add
        // a few), then settle on the exact count by bisection.
        let mut sum = first_tokens;
        let mut guess = first;
        while guess + 1 < units.len() && sum + units[guess + 1].tokens <= self.max {
            guess += 1;
            sum += units[guess].tokens;
        }
        let (mut lo, mut lo_tokens) = (first, first_tokens);
        if guess > first {
            let t = self.tokens(start, units[guess].end);
            if t <= self.max {
                (lo, lo_tokens) = (guess, t);
            } else {
                let mut hi = guess;
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    let t = self.tokens(start, units[mid].end);
                    if t <= self.max {
                        (lo, lo_tokens) = (mid, t);
                    } else {
                        hi = mid;
                    }
                }
                return (lo, lo_tokens);
            }
        }
        // The sum may overestimate (tokens can merge across a join): take
        // more units while they fit.
        while lo + 1 < units.len() {
            let t = self.tokens(start, units[lo + 1].end);
            if t > self.max {
                break;
            }
            (lo, lo_tokens) = (lo + 1, t);
        }
        (lo, lo_tokens)
    }

    /// Where the overlap taken from the chunk `text[prev_start..prev_end]`
    /// begins: the earliest word start (or, in text without spaces, character)
    /// after `prev_start` whose tail has at most `budget` tokens.
    fn overlap_start(&self, prev_start: usize, prev_end: usize, budget: usize) -> Option<usize> {
        let text = self.text;
        let lowest = next_boundary(text, prev_start);
        if lowest >= prev_end {
            return None;
        }
        // `fits` is a start whose tail fits, `fails` one whose tail does not.
        let mut fits = prev_end;
        let mut fails = None;
        let mut width = budget.saturating_mul(4).max(8);
        loop {
            let cand = floor_boundary(text, prev_end.saturating_sub(width).max(lowest));
            if self.tokens(cand, prev_end) <= budget {
                fits = cand;
                if cand == lowest {
                    break;
                }
                width = width.saturating_mul(2);
            } else {
                fails = Some(cand);
                break;
            }
        }
        if let Some(mut fails) = fails {
            loop {
                let mid = ceil_boundary(text, fails + (fits - fails) / 2);
                if mid >= fits || mid <= fails {
                    break;
                }
                if self.tokens(mid, prev_end) <= budget {
                    fits = mid;
                } else {
                    fails = mid;
                }
            }
        }
        // Start on a word: skip the partial word and the spaces after it,
        // unless the tail has no spaces at all (CJK, one giant word).
        let tail = &text[fits..prev_end];
        let starts_word = text[..fits]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        let start = if starts_word {
            fits
        } else if let Some(ws) = tail.find(char::is_whitespace) {
            let after = &tail[ws..];
            fits + ws + (after.len() - after.trim_start().len())
        } else {
            fits
        };
        let mut start = trim(text, start, prev_end).0;
        // Dropping the space before a word can change how it tokenizes
        // ("retrieval" alone may be more tokens than " retrieval"): move
        // on by words until the tail fits.
        while start < prev_end && self.tokens(start, prev_end) > budget {
            let rest = &text[start..prev_end];
            let ws = rest.find(char::is_whitespace)?;
            start = trim(text, start + ws, prev_end).0;
        }
        (start < prev_end).then_some(start)
    }
}

/// The byte range of `text[start..end]` without surrounding whitespace.
fn trim(text: &str, start: usize, end: usize) -> (usize, usize) {
    let slice = &text[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let trail = slice.len() - slice.trim_end().len();
    if lead == slice.len() {
        (start, start)
    } else {
        (start + lead, end - trail)
    }
}

fn next_boundary(text: &str, i: usize) -> usize {
    i + text[i..].chars().next().map_or(0, char::len_utf8)
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A code fence opener or closer: up to three spaces, then three or more
/// backticks or tildes. Returns the character and the run length.
fn fence(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|&c| c == '`' || c == '~')?;
    let len = rest.len() - rest.trim_start_matches(ch).len();
    (len >= 3).then_some((ch, len))
}

/// An ATX heading line: up to three spaces, one to six `#`, then a space or
/// the end of the line.
fn is_heading(line: &str) -> bool {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return false;
    }
    let hashes = trimmed.len() - trimmed.trim_start_matches('#').len();
    (1..=6).contains(&hashes)
        && trimmed[hashes..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace)
}

/// Cuts the text into blocks: paragraphs (separated by blank lines), fenced
/// code blocks (blank lines inside included) and heading lines.
fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut open_fence: Option<(char, usize)> = None;
    let flush = |current: &mut Option<(usize, usize)>, out: &mut Vec<Block>, heading: bool| {
        if let Some((s, e)) = current.take() {
            let (start, end) = trim(text, s, e);
            if start < end {
                out.push(Block {
                    start,
                    end,
                    heading,
                });
            }
        }
    };
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let (line_start, line_end) = (offset, offset + line.len());
        offset = line_end;
        let content = line.trim_end_matches(['\n', '\r']);
        if let Some((ch, len)) = open_fence {
            current = Some((current.map_or(line_start, |c| c.0), line_end));
            if fence(content).is_some_and(|(c, l)| {
                c == ch && l >= len && content.trim_start().trim_start_matches(c).trim().is_empty()
            }) {
                open_fence = None;
                flush(&mut current, &mut out, false);
            }
        } else if content.trim().is_empty() {
            flush(&mut current, &mut out, false);
        } else if let Some(f) = fence(content) {
            flush(&mut current, &mut out, false);
            open_fence = Some(f);
            current = Some((line_start, line_end));
        } else if is_heading(content) {
            flush(&mut current, &mut out, false);
            current = Some((line_start, line_end));
            flush(&mut current, &mut out, true);
        } else {
            current = Some((current.map_or(line_start, |c| c.0), line_end));
        }
    }
    flush(&mut current, &mut out, false);
    out
}

/// Sentence (and line) ranges of `text[start..end]`, untrimmed.
fn sentence_ranges(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let slice = &text[start..end];
    let mut out = Vec::new();
    let mut piece = start;
    let mut chars = slice.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let at = start + i;
        let after = at + c.len_utf8();
        let cut = match c {
            '\n' => Some((at, after)),
            '。' | '！' | '？' => Some((after, after)),
            '.' | '!' | '?' | '…' | ';' => chars
                .peek()
                .is_none_or(|&(_, n)| n.is_whitespace())
                .then_some((after, after)),
            _ => None,
        };
        if let Some((piece_end, next_start)) = cut {
            out.push((piece, piece_end));
            piece = next_start;
        }
    }
    if piece < end {
        out.push((piece, end));
    }
    out
}

/// Whitespace-separated word ranges of `text[start..end]`.
fn word_ranges(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut word: Option<usize> = None;
    for (i, c) in text[start..end].char_indices() {
        match (c.is_whitespace(), word) {
            (true, Some(w)) => {
                out.push((w, start + i));
                word = None;
            }
            (false, None) => word = Some(start + i),
            _ => {}
        }
    }
    if let Some(w) = word {
        out.push((w, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::vector::tests::SplitMix64;
    use super::*;

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
        "fast",
        "stream",
    ];

    /// Deterministic prose: `sentences` sentences of 4 to 15 words.
    fn prose(rng: &mut SplitMix64, sentences: usize) -> String {
        let mut out = Vec::new();
        for _ in 0..sentences {
            let n = 4 + (rng.next_u64() % 12) as usize;
            let mut s: Vec<&str> = (0..n)
                .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                .collect();
            let first = s[0].to_owned();
            let capital = first[..1].to_uppercase() + &first[1..];
            s[0] = &capital;
            out.push(format!("{}.", s.join(" ")));
        }
        out.join(" ")
    }

    fn word_count(s: &str) -> usize {
        s.split_whitespace().count()
    }

    /// The properties every chunking must have: exact slices in order, within
    /// the limit, covering every non-space character, overlaps within budget.
    fn check(text: &str, chunks: &[TextChunk], opts: &ChunkOptions, count: &dyn Fn(&str) -> usize) {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            assert!(chunks.is_empty());
            return;
        }
        assert!(!chunks.is_empty());
        let lead = text.len() - text.trim_start().len();
        assert_eq!(chunks[0].span.start, lead, "first chunk starts at the text");
        assert_eq!(
            chunks.last().unwrap().span.end,
            lead + trimmed.len(),
            "last chunk ends with it"
        );
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.ordinal, i);
            assert_eq!(c.text, &text[c.span.clone()]);
            assert_eq!(c.text, c.text.trim(), "chunk {i} is trimmed");
            assert!(!c.text.is_empty());
            assert_eq!(c.token_count, count(&c.text));
            assert!(
                c.token_count <= opts.max_tokens,
                "chunk {i}: {} tokens",
                c.token_count
            );
        }
        for (i, w) in chunks.windows(2).enumerate() {
            let (prev, next) = (&w[0], &w[1]);
            assert!(
                next.span.start > prev.span.start,
                "chunks {i}, {} in order",
                i + 1
            );
            assert!(
                next.span.end > prev.span.end,
                "chunks {i}, {} in order",
                i + 1
            );
            if next.span.start >= prev.span.end {
                // No overlap: nothing but whitespace may lie between them.
                assert!(
                    text[prev.span.end..next.span.start].trim().is_empty(),
                    "gap after chunk {i}"
                );
            } else {
                let overlap = &text[next.span.start..prev.span.end];
                assert!(prev.text.ends_with(overlap) && next.text.starts_with(overlap));
                assert!(
                    count(overlap) <= opts.overlap_tokens,
                    "overlap {i}: {overlap:?}"
                );
            }
        }
    }

    /// The text the chunks repeat from their predecessor, for each pair.
    fn overlaps<'t>(text: &'t str, chunks: &[TextChunk]) -> Vec<&'t str> {
        chunks
            .windows(2)
            .map(|w| &text[w[1].span.start.min(w[0].span.end)..w[0].span.end])
            .collect()
    }

    #[test]
    fn tiktoken_counter_counts_cl100k_tokens() {
        let count = tiktoken_counter();
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
        // Special-token text is counted as ordinary text, not rejected.
        assert!(count("<|endoftext|>") > 1);
    }

    #[test]
    fn normalized_markdown_chunks_keep_sections_whole() {
        let count = tiktoken_counter();
        let md = "# Guide\n\nRead [the intro](https://x/intro) first.\n\n\n\n\n## Setup\n\
                  Install it with `cargo add chatcore`.\n\n## Use\n\nCall it.";
        let text = super::super::normalize(md, "text/markdown").unwrap();
        let opts = ChunkOptions {
            max_tokens: 14,
            overlap_tokens: 0,
        };
        let chunks = chunk(&text, &opts, &count);
        check(&text, &chunks, &opts, &count);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "# Guide\n\nRead the intro first.",
                "## Setup\nInstall it with `cargo add chatcore`.",
                "## Use\n\nCall it."
            ]
        );
    }

    #[test]
    fn empty_and_whitespace_give_no_chunks() {
        let count = tiktoken_counter();
        for text in ["", " ", "\n\n\t  \r\n", "\u{3000}\u{a0}"] {
            assert!(
                chunk(text, &ChunkOptions::default(), &count).is_empty(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn short_text_is_one_chunk() {
        let count = tiktoken_counter();
        let text = "\n  # Title\n\nOne short paragraph.  \n";
        let chunks = chunk(text, &ChunkOptions::default(), &count);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "# Title\n\nOne short paragraph.");
        assert_eq!(
            chunks[0].token_count,
            count("# Title\n\nOne short paragraph.")
        );
        check(text, &chunks, &ChunkOptions::default(), &count);
    }

    #[test]
    fn exact_word_level_split_with_overlap() {
        let opts = ChunkOptions {
            max_tokens: 4,
            overlap_tokens: 2,
        };
        let text = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10";
        let chunks = chunk(text, &opts, &word_count);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            ["w1 w2 w3 w4", "w3 w4 w5 w6", "w5 w6 w7 w8", "w7 w8 w9 w10"]
        );
        check(text, &chunks, &opts, &word_count);
    }

    #[test]
    fn whole_paragraphs_are_packed_without_splitting() {
        let opts = ChunkOptions {
            max_tokens: 6,
            overlap_tokens: 0,
        };
        let text = "a b c\n\nd e f\n\ng h\n\ni j k l m";
        let chunks = chunk(text, &opts, &word_count);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["a b c\n\nd e f", "g h", "i j k l m"]);
        check(text, &chunks, &opts, &word_count);
    }

    #[test]
    fn one_huge_paragraph_is_split_by_sentences_with_overlap() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(7);
        let text = prose(&mut rng, 400);
        let opts = ChunkOptions {
            max_tokens: 64,
            overlap_tokens: 12,
        };
        let chunks = chunk(&text, &opts, &count);
        assert!(chunks.len() > 20, "{} chunks", chunks.len());
        check(&text, &chunks, &opts, &count);
        for (i, overlap) in overlaps(&text, &chunks).into_iter().enumerate() {
            assert!(
                !overlap.is_empty(),
                "no overlap between chunks {i} and {}",
                i + 1
            );
            // The overlap starts on a word.
            let start = chunks[i + 1].span.start;
            assert!(
                text[..start].ends_with(char::is_whitespace),
                "overlap {i}: {overlap:?}"
            );
        }
        // Chunks end on sentence boundaries: the split is by sentences, not
        // words, when sentences fit.
        let ends_sentence = chunks.iter().filter(|c| c.text.ends_with('.')).count();
        assert_eq!(ends_sentence, chunks.len());
    }

    #[test]
    fn a_single_10k_character_word_is_hard_split() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(3);
        let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let word: String = (0..10_000)
            .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize] as char)
            .collect();
        let opts = ChunkOptions {
            max_tokens: 50,
            overlap_tokens: 5,
        };
        let chunks = chunk(&word, &opts, &count);
        check(&word, &chunks, &opts, &count);
        assert!(chunks.len() > 10);
        // Without overlaps, the chunks spell the word.
        let mut rebuilt = String::new();
        for c in &chunks {
            let new_from = rebuilt.len().max(c.span.start) - c.span.start;
            rebuilt.push_str(&c.text[new_from..]);
        }
        assert_eq!(rebuilt, word);
        assert!(overlaps(&word, &chunks).iter().all(|o| !o.is_empty()));
        // Chunks are filled, not cut into tiny pieces.
        let avg = chunks.iter().map(|c| c.token_count).sum::<usize>() / chunks.len();
        assert!(avg >= 40, "average {avg} tokens");
    }

    #[test]
    fn unicode_cjk_and_emoji_never_split_inside_a_char() {
        let count = tiktoken_counter();
        let cjk = "東京は日本の首都です。人口は約千四百万人です！大きな都市ですか？".repeat(12);
        let emoji = "👩‍👩‍👧‍👦🎉🇫🇷👍🏽".repeat(40);
        let mixed = format!("# 見出し 🎉\n\n{cjk}\n\nÜber naïve café — {emoji}\n\n{emoji}{cjk}");
        for (max, overlap) in [(16, 4), (40, 8), (7, 3), (256, 32)] {
            let opts = ChunkOptions {
                max_tokens: max,
                overlap_tokens: overlap,
            };
            let chunks = chunk(&mixed, &opts, &count);
            check(&mixed, &chunks, &opts, &count);
            assert!(chunks.iter().all(|c| mixed.is_char_boundary(c.span.start)));
        }
        // With a character counter the overlap in text without spaces is
        // exactly the budget.
        let chars = |s: &str| s.chars().count();
        let opts = ChunkOptions {
            max_tokens: 10,
            overlap_tokens: 3,
        };
        let chunks = chunk(&cjk, &opts, &chars);
        check(&cjk, &chunks, &opts, &chars);
        assert!(
            overlaps(&cjk, &chunks)
                .iter()
                .all(|o| o.chars().count() == 3)
        );
    }

    #[test]
    fn a_char_over_the_limit_is_a_chunk_of_its_own() {
        let count = tiktoken_counter();
        assert!(count("🎉") > 1);
        let chunks = chunk(
            "🎉🎉",
            &ChunkOptions {
                max_tokens: 1,
                overlap_tokens: 0,
            },
            &count,
        );
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["🎉", "🎉"]);
    }

    #[test]
    fn code_blocks_stay_together_when_they_fit() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(11);
        let code = "```rust\nfn main() {\n    let x = 1;\n\n    println!(\"{x}\");\n\n\n    // done.\n}\n```";
        let text = format!(
            "{}\n\n{code}\n\n{}\n\n{code}\n\n{}",
            prose(&mut rng, 6),
            prose(&mut rng, 3),
            prose(&mut rng, 5)
        );
        let opts = ChunkOptions {
            max_tokens: 60,
            overlap_tokens: 8,
        };
        assert!(count(code) < 60 && count(code) > 20);
        let chunks = chunk(&text, &opts, &count);
        check(&text, &chunks, &opts, &count);
        assert!(chunks.len() > 3);
        // Both copies of the block, each whole in some chunk (the blank lines
        // inside it do not end it).
        for (at, _) in text.match_indices(code) {
            let whole = chunks
                .iter()
                .any(|c| c.span.start <= at && at + code.len() <= c.span.end);
            assert!(whole, "code block at {at} is split");
        }
    }

    #[test]
    fn a_code_block_larger_than_the_limit_is_split_by_lines() {
        let count = tiktoken_counter();
        let body: String = (0..80)
            .map(|i| format!("    let v{i} = compute({i});\n"))
            .collect();
        let text = format!("Intro.\n\n```rust\n{body}```\n\nOutro.");
        let opts = ChunkOptions {
            max_tokens: 50,
            overlap_tokens: 0,
        };
        let chunks = chunk(&text, &opts, &count);
        check(&text, &chunks, &opts, &count);
        assert!(chunks.len() > 5);
        // Lines are not cut in the middle.
        for c in &chunks[1..] {
            let before = text[..c.span.start].trim_end_matches(' ');
            assert!(before.ends_with('\n'), "{:?}", c.text);
        }
    }

    #[test]
    fn headings_stay_with_their_paragraph() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(5);
        let mut text = String::new();
        for i in 0..12 {
            text.push_str(&format!("## Section {i}\n\n{}\n\n", prose(&mut rng, 2)));
        }
        text.push_str("# Trailing heading");
        for max in [40, 60, 90] {
            let opts = ChunkOptions {
                max_tokens: max,
                overlap_tokens: 0,
            };
            let chunks = chunk(&text, &opts, &count);
            check(&text, &chunks, &opts, &count);
            for c in &chunks[..chunks.len() - 1] {
                let last_line = c.text.lines().last().unwrap();
                assert!(
                    !last_line.starts_with('#'),
                    "max {max}: chunk ends with a heading: {:?}",
                    c.text
                );
            }
            for i in 0..12 {
                let heading = format!("## Section {i}\n\n");
                assert!(
                    chunks.iter().any(|c| c.text.contains(&heading)),
                    "max {max}, section {i}"
                );
            }
        }
    }

    #[test]
    fn a_heading_over_a_huge_paragraph_keeps_its_first_sentence() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(9);
        let text = format!(
            "Preface sentence.\n\n# Big section\n\n{}",
            prose(&mut rng, 60)
        );
        let opts = ChunkOptions {
            max_tokens: 50,
            overlap_tokens: 10,
        };
        let chunks = chunk(&text, &opts, &count);
        check(&text, &chunks, &opts, &count);
        let with_heading = chunks
            .iter()
            .find(|c| c.text.contains("# Big section"))
            .unwrap();
        assert!(
            !with_heading.text.ends_with("# Big section"),
            "{:?}",
            with_heading.text
        );
    }

    #[test]
    fn overlap_is_present_between_paragraph_chunks() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(13);
        let paragraphs: Vec<String> = (0..30).map(|_| prose(&mut rng, 2)).collect();
        let text = paragraphs.join("\n\n");
        let opts = ChunkOptions {
            max_tokens: 120,
            overlap_tokens: 16,
        };
        let chunks = chunk(&text, &opts, &count);
        check(&text, &chunks, &opts, &count);
        assert!(chunks.len() > 3);
        for (i, overlap) in overlaps(&text, &chunks).into_iter().enumerate() {
            assert!(count(overlap) >= 4, "overlap {i} too small: {overlap:?}");
        }
        // Paragraphs are whole: each one is inside some chunk.
        for p in &paragraphs {
            assert!(chunks.iter().any(|c| c.text.contains(p.as_str())));
        }
    }

    #[test]
    fn random_documents_keep_the_invariants() {
        let count = tiktoken_counter();
        let mut rng = SplitMix64(21);
        for round in 0..20 {
            let mut text = String::new();
            for _ in 0..(rng.next_u64() % 15) {
                match rng.next_u64() % 5 {
                    0 => text.push_str(&format!("# H{round}\n")),
                    1 => text.push_str("```\ncode line\n\nmore code\n```\n"),
                    2 => text.push_str(&"x".repeat((rng.next_u64() % 700) as usize)),
                    3 => text.push_str("\n\n\n  "),
                    _ => {
                        let sentences = (rng.next_u64() % 30) as usize;
                        text.push_str(&prose(&mut rng, sentences));
                    }
                }
                text.push_str(if rng.next_u64().is_multiple_of(2) {
                    "\n\n"
                } else {
                    "\n"
                });
            }
            let max = 8 + (rng.next_u64() % 100) as usize;
            let overlap = (rng.next_u64() % 40) as usize;
            let opts = ChunkOptions {
                max_tokens: max,
                overlap_tokens: overlap,
            };
            let chunks = chunk(&text, &opts, &count);
            check(
                &text,
                &chunks,
                &ChunkOptions {
                    overlap_tokens: overlap.min(max / 2),
                    ..opts
                },
                &count,
            );
        }
    }
}
