//! Document normalisation: plain text, Markdown and HTML to clean text.

use html2text::render::TextDecorator;
use sha2::{Digest, Sha256};

use super::RagError;

/// Width given to the HTML renderer: wide enough that it never wraps a
/// paragraph (wrapping would put hard line breaks inside sentences).
const HTML_RENDER_WIDTH: usize = 1 << 20;

/// Turns a document's raw content into the clean text that is chunked and
/// hashed.
///
/// `mime_type` may carry parameters (`text/html; charset=utf-8`); they are
/// ignored, since `content` is already a Rust string. Supported types:
///
/// - `text/plain`: newlines normalised to `\n`, trailing whitespace of every
///   line removed, runs of more than two blank lines collapsed to two,
///   control characters (other than tab and newline) removed, leading blank
///   lines and trailing whitespace of the document removed;
/// - `text/markdown` (and `text/x-markdown`): as plain text, and link syntax
///   reduced to its text (`[text](url)` and `[text][ref]` to `text`,
///   `![alt](src)` to `alt`, `<https://x>` to `https://x`, reference
///   definitions dropped). Headings and code (fenced or inline) are kept
///   verbatim;
/// - `text/html` (and `application/xhtml+xml`): rendered to text, headings
///   (as `# Title`), paragraphs and list items as separate blocks; `script`,
///   `style` and `head` content dropped; then as plain text.
///
/// Any other type is [`RagError::UnsupportedMimeType`] (an empty type too:
/// the caller chooses the default).
pub fn normalize(content: &str, mime_type: &str) -> Result<String, RagError> {
    let essence = mime_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "text/plain" => Ok(normalize_plain(content)),
        "text/markdown" | "text/x-markdown" => Ok(normalize_plain(&strip_markdown_links(
            &normalize_newlines(content),
        ))),
        "text/html" | "application/xhtml+xml" => html_to_text(content).map(|t| normalize_plain(&t)),
        _ => Err(RagError::UnsupportedMimeType {
            mime_type: mime_type.to_owned(),
        }),
    }
}

/// The text of a PDF, page after page. The extractor is run under
/// `catch_unwind`: it is known to panic on some malformed files, and a bad
/// upload must fail alone, with [`RagError::Pdf`], not take a worker down.
pub fn pdf_text(pdf: &[u8]) -> Result<String, RagError> {
    if !pdf.starts_with(b"%PDF-") {
        return Err(RagError::Pdf("not a PDF file (no %PDF- header)".into()));
    }
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(pdf))
        .map_err(|_| RagError::Pdf("the PDF could not be read".into()))?
        .map_err(|e| RagError::Pdf(format!("the PDF could not be read: {e}")))?;
    Ok(pages.join("\n\n"))
}

/// SHA-256 of the normalised text, as lowercase hex: the document's content
/// hash, used to skip re-indexing content that has not changed.
pub fn content_hash(normalized: &str) -> String {
    hex::encode(Sha256::digest(normalized.as_bytes()))
}

/// `\r\n` and lone `\r` to `\n`.
fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// The plain-text normalisation shared by every type.
fn normalize_plain(content: &str) -> String {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let content = normalize_newlines(content);
    let mut out = String::with_capacity(content.len());
    let mut blank_run = 0usize;
    for line in content.split('\n') {
        // Control characters break databases (PostgreSQL rejects NUL in
        // text) and mean nothing to an embedding model.
        let line: String = line
            .chars()
            .filter(|&c| c == '\t' || !c.is_control())
            .collect();
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            for _ in 0..blank_run.min(2) {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

/// Renders HTML to text with html2text, never wrapping lines.
fn html_to_text(html: &str) -> Result<String, RagError> {
    html2text::config::with_decorator(TextOnly)
        .allow_width_overflow()
        .no_table_borders()
        .string_from_read(html.as_bytes(), HTML_RENDER_WIDTH)
        .map_err(|e| RagError::Html(e.to_string()))
}

/// html2text's plain decorator without its link and image brackets: links
/// become their text, images their alt text, headings `#` lines (which the
/// chunker keeps with the paragraph after them).
#[derive(Debug, Clone, Copy)]
struct TextOnly;

impl TextDecorator for TextOnly {
    type Annotation = ();

    fn decorate_link_start(&mut self, _url: &str) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        String::new()
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, ()) {
        (title.to_owned(), ())
    }
    fn header_prefix(&self, level: usize) -> String {
        "#".repeat(level) + " "
    }
    fn quote_prefix(&self) -> String {
        "> ".to_owned()
    }
    fn unordered_item_prefix(&self) -> String {
        "- ".to_owned()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        *self
    }
}

/// Reduces Markdown link syntax to its text, line by line, leaving fenced
/// code blocks and inline code spans untouched.
fn strip_markdown_links(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    // The open fence's character and length, while inside a fenced block.
    let mut fence: Option<(char, usize)> = None;
    let mut first = true;
    for line in md.split('\n') {
        let emit = match fence {
            Some((ch, len)) => {
                if let Some((c, l, rest)) = fence_marker(line)
                    && c == ch
                    && l >= len
                    && rest.trim().is_empty()
                {
                    fence = None;
                }
                Some(line.to_owned())
            }
            None => {
                if let Some((c, l, _)) = fence_marker(line) {
                    fence = Some((c, l));
                    Some(line.to_owned())
                } else if is_reference_definition(line) {
                    None
                } else {
                    Some(strip_inline_links(line))
                }
            }
        };
        if let Some(text) = emit {
            if !first {
                out.push('\n');
            }
            first = false;
            out.push_str(&text);
        }
    }
    out
}

/// A code fence opener or closer: up to three spaces, then three or more
/// backticks or tildes. Returns the character, the run length and the rest.
fn fence_marker(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|&c| c == '`' || c == '~')?;
    let len = rest.len() - rest.trim_start_matches(ch).len();
    (len >= 3).then(|| (ch, len, &rest[len..]))
}

/// `[label]: destination ...`, with up to three spaces of indentation.
fn is_reference_definition(line: &str) -> bool {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return false;
    }
    let rest = &line[indent..];
    if !rest.starts_with('[') || rest.starts_with("[^") {
        return false;
    }
    match matching_close(rest, 0, '[', ']') {
        Some(close) => {
            close > 1 && rest[close + 1..].starts_with(':') && !rest[close + 2..].trim().is_empty()
        }
        None => false,
    }
}

/// The byte index of the bracket closing the one at `open`, honouring nesting
/// and backslash escapes.
fn matching_close(s: &str, open: usize, open_ch: char, close_ch: char) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in s[open..].char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
        } else if c == open_ch {
            depth += 1;
        } else if c == close_ch {
            depth -= 1;
            if depth == 0 {
                return Some(open + i);
            }
        }
    }
    None
}

/// Strips inline links, images, reference links and autolinks from one line
/// of Markdown, keeping inline code spans verbatim.
fn strip_inline_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let c = rest.chars().next().expect("i is on a char boundary");
        if c == '\\' {
            // Keep the escape and the escaped character as they are.
            let next = rest[1..].chars().next().map_or(0, char::len_utf8);
            out.push_str(&rest[..1 + next]);
            i += 1 + next;
            continue;
        }
        if c == '`' {
            let ticks = rest.len() - rest.trim_start_matches('`').len();
            let marker = &rest[..ticks];
            let closing = rest[ticks..].find(marker).filter(|&at| {
                // The closing run must be exactly as long as the opening one.
                !rest[ticks + at + ticks..].starts_with('`')
            });
            let span = closing.map_or(ticks, |at| ticks + at + ticks);
            out.push_str(&rest[..span]);
            i += span;
            continue;
        }
        let is_image = c == '!' && rest[1..].starts_with('[');
        if c == '[' || is_image {
            let open = usize::from(is_image);
            if let Some(close) = matching_close(rest, open, '[', ']') {
                let label = &rest[open + 1..close];
                let after = &rest[close + 1..];
                let consumed = if after.starts_with('(') {
                    matching_close(after, 0, '(', ')').map(|p| close + 1 + p + 1)
                } else if after.starts_with('[') {
                    matching_close(after, 0, '[', ']').map(|p| close + 1 + p + 1)
                } else {
                    None
                };
                if let Some(consumed) = consumed {
                    out.push_str(&strip_inline_links(label));
                    i += consumed;
                    continue;
                }
            }
        }
        if c == '<'
            && let Some(len) = autolink_len(rest)
        {
            out.push_str(&rest[1..len - 1]);
            i += len;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The length of an autolink (`<scheme:...>` or `<user@host>`) at the start
/// of `s`, including the angle brackets.
fn autolink_len(s: &str) -> Option<usize> {
    let close = s.find('>')?;
    let inner = &s[1..close];
    if inner.is_empty() || inner.chars().any(|c| c.is_whitespace() || c == '<') {
        return None;
    }
    let is_uri = inner.split_once(':').is_some_and(|(scheme, _)| {
        (2..=32).contains(&scheme.len())
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    });
    let is_email = inner
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
    (is_uri || is_email).then_some(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_cleaned() {
        let raw =
            "\u{feff}\n\nTitle  \r\nline two\t\r\n\r\n\r\n\r\n\r\n\r\nafter\0 gap\rlast   \n\n";
        let got = normalize(raw, "text/plain").unwrap();
        assert_eq!(got, "Title\nline two\n\n\nafter gap\nlast");
    }

    #[test]
    fn two_blank_lines_are_kept_and_one_is_kept() {
        assert_eq!(
            normalize("a\n\nb\n\n\nc", "text/plain").unwrap(),
            "a\n\nb\n\n\nc"
        );
    }

    #[test]
    fn mime_parameters_and_case_are_ignored() {
        assert_eq!(normalize("x  ", "Text/Plain; charset=utf-8").unwrap(), "x");
    }

    #[test]
    fn unknown_mime_type_is_a_typed_error() {
        for mime in ["application/pdf", "", "image/png"] {
            assert_eq!(
                normalize("x", mime),
                Err(RagError::UnsupportedMimeType {
                    mime_type: mime.to_owned()
                })
            );
        }
    }

    #[test]
    fn markdown_links_become_text_and_code_is_kept() {
        let md = "# Install [chatcore](https://example.com/a_(b))\n\
                  \n\
                  See [the docs][docs] and ![a diagram](img.png) or <https://x.dev/p>.\n\
                  Mail <me@example.com>, keep `[not](a link)` and \\[escaped](x).\n\
                  [![badge](b.svg)](https://ci) done\n\
                  \n\
                  [docs]: https://example.com/docs \"Docs\"\n\
                  \n\
                  ```rust\n\
                  let v = [a](b);   \n\
                  ```\n\
                  after";
        let got = normalize(md, "text/markdown").unwrap();
        assert_eq!(
            got,
            "# Install chatcore\n\
             \n\
             See the docs and a diagram or https://x.dev/p.\n\
             Mail me@example.com, keep `[not](a link)` and \\[escaped](x).\n\
             badge done\n\
             \n\
             \n\
             ```rust\n\
             let v = [a](b);\n\
             ```\n\
             after"
        );
    }

    #[test]
    fn markdown_unclosed_fence_protects_the_rest() {
        let got = normalize("~~~~\n[a](b)\n~~~\n[c](d)", "text/x-markdown").unwrap();
        assert_eq!(got, "~~~~\n[a](b)\n~~~\n[c](d)");
    }

    #[test]
    fn markdown_brackets_that_are_not_links_stay() {
        let got = normalize("array[0] and [todo] and a < b > c", "text/markdown").unwrap();
        assert_eq!(got, "array[0] and [todo] and a < b > c");
    }

    #[test]
    fn html_keeps_blocks_and_drops_scripts() {
        let html = "<!doctype html><html><head><title>T</title>\
                    <style>p { color: red }</style></head><body>\
                    <h1>Main title</h1><p>First paragraph with a <a href=\"https://x\">link</a>.</p>\
                    <script>alert('no');</script>\
                    <h2>Section</h2><p>Second &amp; last.</p>\
                    <ul><li>one</li><li>two</li></ul><img src=\"x.png\" alt=\"chart\"></body></html>";
        let got = normalize(html, "text/html; charset=utf-8").unwrap();
        assert!(
            got.starts_with("# Main title\n\n"),
            "head content dropped: {got:?}"
        );
        assert!(got.ends_with("\n\nchart"), "image as its alt text: {got:?}");
        assert!(!got.contains("alert"), "{got}");
        assert!(!got.contains("color"), "{got}");
        let blocks: Vec<&str> = got.split("\n\n").collect();
        assert!(blocks.contains(&"# Main title"), "{got:?}");
        assert!(blocks.contains(&"First paragraph with a link."), "{got:?}");
        assert!(blocks.contains(&"## Section"), "{got:?}");
        assert!(got.contains("Second & last."), "{got:?}");
        assert!(got.contains("- one\n- two"), "{got:?}");
        let title = got.find("Main title").unwrap();
        let second = got.find("Second").unwrap();
        assert!(title < second);
    }

    #[test]
    fn html_long_paragraph_is_not_wrapped() {
        let words = vec!["word"; 500].join(" ");
        let got = normalize(&format!("<p>{words}</p>"), "text/html").unwrap();
        assert_eq!(got, words);
    }

    #[test]
    fn content_hash_is_sha256_hex() {
        assert_eq!(
            content_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(content_hash("abc"), content_hash("abd"));
    }
}
