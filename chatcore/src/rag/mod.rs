//! Retrieval-augmented generation.
//!
//! The ingestion path is [`normalize`] (plain text, Markdown or HTML to
//! clean text), [`content_hash`] (to skip re-indexing unchanged documents) and
//! [`chunk`] (token-bounded, overlapping chunks that keep headings with their
//! paragraph). The query path is [`cosine_top_k`] over stored embeddings
//! (decoded with [`f32_bytes_to_vec`]), [`bm25_scores`] when no full-text
//! index is available, [`reciprocal_rank_fusion`] to merge the two rankings,
//! and [`MetadataFilter`] to restrict the candidate documents.
//!
//! [`RagService`] does the I/O: ingestion through the dataset's embedding
//! provider into the store, off the request path, and hybrid retrieval for
//! chat (it is the engine's `ContextRetriever`).

mod bm25;
mod chunk;
mod filter;
mod normalize;
mod service;
mod vector;

pub use bm25::{bm25_scores, tokenize};
pub use chunk::{ChunkOptions, TextChunk, chunk, tiktoken_counter};
pub use filter::MetadataFilter;
pub use normalize::{content_hash, normalize, pdf_text};
pub use service::{DocumentUpload, DocumentView, RagService, RawFormat, SearchHit, SearchMode};
pub use vector::{
    cosine_top_k, f32_bytes_to_vec, reciprocal_rank_fusion, top_k_unit_rows, unit_vector,
    vec_to_f32_bytes,
};

/// Errors of the pure RAG functions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RagError {
    /// The document's MIME type is not one that [`normalize`] understands
    /// (`text/plain`, `text/markdown`, `text/html`).
    #[error("unsupported mime type: {mime_type:?}")]
    UnsupportedMimeType {
        /// The MIME type as given by the caller.
        mime_type: String,
    },
    /// The PDF could not be read.
    #[error("{0}")]
    Pdf(String),
    /// The HTML could not be converted to text.
    #[error("could not convert HTML to text: {0}")]
    Html(String),
    /// A stored vector's byte length is not a multiple of 4.
    #[error("vector byte length {len} is not a multiple of 4")]
    InvalidVectorBytes {
        /// The byte length that was given.
        len: usize,
    },
}
