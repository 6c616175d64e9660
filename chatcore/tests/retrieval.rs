//! Retrieval quality and freshness, through `RagService` on SQLite and
//! PostgreSQL.
//!
//! The corpus is made for the test: twenty short handbook pages, each the
//! one right answer to one question. The questions are worded as people ask
//! them (other inflections: "refunded" for "refunds", plurals, question
//! words), so they share few exact words with their answer and many common
//! ones with every page. With the mock provider's embeddings (hashed bags of
//! exact words) the vector ranking is weak on such questions; full text
//! (stemmed, with inverse document frequency) must carry hybrid search.

use std::sync::Arc;
use std::time::Duration;

use chatcore::Chatcore;
use chatcore::admin::{AdminCaller, Operator};
use chatcore::crypto::Keyring;
use chatcore::domain::*;
use chatcore::rag::{DocumentUpload, MetadataFilter, RagService, SearchMode};
use chatcore::store::*;
use chatcore::testkit::fixtures::{self, SystemWrites};
use chatcore::testkit::pg;

const CORPUS: &[(&str, &str)] = &[
    (
        "Refund policy",
        "Refunds are issued within fourteen days of a returned purchase. The money goes back to the original payment card.",
    ),
    (
        "Office hours",
        "The Lisbon office opens at nine in the morning and closes at six in the evening on weekdays.",
    ),
    (
        "Parking",
        "Employees may park in the underground garage. Visitors should use the public car park across the street.",
    ),
    (
        "Vacation",
        "Every employee receives twenty-five vacation days per year. Unused vacation days expire at the end of March.",
    ),
    (
        "Laptops",
        "New hires receive a laptop on their first day. Broken laptops are replaced by the IT helpdesk within two days.",
    ),
    (
        "Passwords",
        "Passwords must be at least sixteen characters long and are rotated every ninety days.",
    ),
    (
        "Expenses",
        "Travel expenses are reimbursed after the manager approves the expense report. Receipts must be attached.",
    ),
    (
        "Security badges",
        "Lost security badges must be reported to reception immediately; a replacement badge costs ten euros.",
    ),
    (
        "Coffee",
        "Free coffee and tea are available in the kitchen on every floor.",
    ),
    (
        "Remote work",
        "Staff may work remotely up to three days per week with their team lead's agreement.",
    ),
    (
        "Payroll",
        "Salaries are paid on the twenty-fifth of each month by bank transfer.",
    ),
    (
        "Fire drills",
        "Fire drills take place twice a year. Leave the building by the nearest stairway, never the elevator.",
    ),
    (
        "Printing",
        "Printers on each floor require badge authentication before a document prints.",
    ),
    (
        "Sick leave",
        "Employees who are sick must notify their manager before ten o'clock and provide a doctor's note after three days.",
    ),
    (
        "Training",
        "Each employee has a yearly training budget of one thousand euros for courses and conferences.",
    ),
    (
        "Onboarding",
        "During onboarding, new colleagues meet their buddy and complete the compliance modules in the first week.",
    ),
    (
        "Bicycles",
        "Bicycles can be stored in the locked bike room next to the garage entrance.",
    ),
    (
        "Mail",
        "Incoming parcels are held at reception and must be collected within five working days.",
    ),
    (
        "Meeting rooms",
        "Meeting rooms are booked through the calendar; bookings longer than four hours need approval.",
    ),
    (
        "Pets",
        "Dogs are welcome in the office on Fridays if they are well behaved and vaccinated.",
    ),
];

/// (question, title of the page that answers it).
const QUESTIONS: &[(&str, &str)] = &[
    (
        "how soon am I refunded after I return something?",
        "Refund policy",
    ),
    ("what time is it opening in Lisbon?", "Office hours"),
    ("where can a visitor leave the car?", "Parking"),
    ("does my unused vacation expire?", "Vacation"),
    ("my laptop is broken, who replaces it?", "Laptops"),
    ("how many characters does a password need?", "Passwords"),
    ("do I need a receipt to get travel reimbursed?", "Expenses"),
    ("I lost my badge, what do I do?", "Security badges"),
    ("is there coffee in the kitchen?", "Coffee"),
    ("how many days can I work remotely?", "Remote work"),
    ("when is my salary paid?", "Payroll"),
    ("can I use elevators during a drill?", "Fire drills"),
    ("how do I get my printer to print?", "Printing"),
    (
        "when do I need a note from the doctor for sickness?",
        "Sick leave",
    ),
    ("is there a budget for a conference?", "Training"),
    ("who is my buddy when I start?", "Onboarding"),
    ("where do I store a bicycle?", "Bicycles"),
    ("where is my parcel collected?", "Mail"),
    ("how are meeting rooms booked?", "Meeting rooms"),
    ("can I bring my dog?", "Pets"),
];

struct Setup {
    rag: Arc<RagService>,
    tenant: TenantId,
    dataset: DatasetId,
}

async fn setup(store: Arc<dyn Store>) -> Setup {
    let mut nt = fixtures::new_tenant("quality");
    nt.slug = format!("quality-{}", uuid::Uuid::now_v7().simple());
    let t = store.create_tenant(nt).await.unwrap();
    let p = store
        .create_provider_config(t.id, fixtures::mock_provider())
        .await
        .unwrap();
    let rag = Chatcore::builder()
        .store(store.clone())
        .keyring(Keyring::from_raw([3u8; 32], &[]))
        .build()
        .await
        .unwrap()
        .rag;
    let mut nd = fixtures::new_dataset(p.id, 384);
    nd.name = "handbook".into();
    nd.embedding_model = "mock-embedding".into();
    let ds = store.create_dataset(t.id, nd).await.unwrap();
    Setup {
        rag,
        tenant: t.id,
        dataset: ds.id,
    }
}

impl Setup {
    /// The operator inside the test's tenant: it may change its data.
    fn operator(&self) -> AdminCaller {
        AdminCaller::operator_in(self.tenant, &Operator::default())
    }
}

async fn upload(s: &Setup, title: &str, content: &str) -> DocumentId {
    let d = s
        .rag
        .upload_as(
            s.operator().writer().unwrap(),
            s.dataset,
            DocumentUpload {
                title: title.into(),
                content: content.into(),
                mime_type: "text/plain".into(),
                source: None,
                metadata: serde_json::json!({"section": title}),
            },
        )
        .await
        .unwrap();
    d.id
}

async fn wait_ready(store: &dyn Store, tenant: TenantId, ids: &[DocumentId]) {
    for _ in 0..500 {
        let mut ready = 0;
        for id in ids {
            let d = store.get_document(tenant, *id).await.unwrap();
            assert_ne!(d.status, DocumentStatus::Failed, "{:?}", d.error);
            ready += usize::from(d.status == DocumentStatus::Ready);
        }
        if ready == ids.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("documents not indexed in time");
}

/// Share of questions whose answer is among the top `k`.
async fn recall_at(s: &Setup, mode: SearchMode, k: usize) -> f64 {
    let mut found = 0;
    for (q, want) in QUESTIONS {
        let hits = s
            .rag
            .search_with(s.tenant, &[s.dataset], q, k, &MetadataFilter::new(), mode)
            .await
            .unwrap();
        found += usize::from(hits.iter().any(|h| h.title == *want));
    }
    found as f64 / QUESTIONS.len() as f64
}

async fn quality(store: Arc<dyn Store>, backend: &str) {
    let s = setup(store.clone()).await;
    let mut ids = Vec::new();
    for (title, content) in CORPUS {
        ids.push(upload(&s, title, content).await);
    }
    wait_ready(&*store, s.tenant, &ids).await;

    let mut table = Vec::new();
    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        let r1 = recall_at(&s, mode, 1).await;
        let r3 = recall_at(&s, mode, 3).await;
        let r5 = recall_at(&s, mode, 5).await;
        table.push((mode, r1, r3, r5));
    }
    for (mode, r1, r3, r5) in &table {
        eprintln!(
            "{backend} ({}): {mode:?}: recall@1 {r1:.2}, recall@3 {r3:.2}, recall@5 {r5:.2}",
            store.vector_search_kind()
        );
    }
    let (_, v1, v3, v5) = table[0];
    let (_, t1, t3, _) = table[1];
    let (_, _, _, h5) = table[2];
    // Full text finds the answer first almost always.
    assert!(t1 >= 0.9, "full text recall@1 {t1}");
    assert!(t3 >= 0.95, "full text recall@3 {t3}");
    // The mock's bag-of-words vectors miss inflections: they lose.
    assert!(v1 < t1 && v3 < t3, "vector {v1}/{v3} vs text {t1}/{t3}");
    // Hybrid: full text carries it to the top five even where the vector
    // side ranks the answer low (fusion gives both rankings equal votes,
    // so a weak side costs places at the very top: see the note).
    assert!(h5 >= 0.95, "hybrid recall@5 {h5}");
    assert!(h5 > v5, "hybrid {h5} vs vector {v5}");

    // A metadata filter narrows retrieval to matching documents.
    let filter = MetadataFilter::new().with("section", "Coffee");
    let hits = s
        .rag
        .search(
            s.tenant,
            &[s.dataset],
            "refunds for a returned purchase",
            5,
            &filter,
        )
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.title == "Coffee"), "{hits:?}");

    // A deleted document no longer answers, in any mode.
    s.rag
        .delete_document_as(s.operator().writer().unwrap(), ids[0])
        .await
        .unwrap();
    for mode in [SearchMode::Vector, SearchMode::Text, SearchMode::Hybrid] {
        let hits = s
            .rag
            .search_with(
                s.tenant,
                &[s.dataset],
                "refunds for a returned purchase",
                20,
                &MetadataFilter::new(),
                mode,
            )
            .await
            .unwrap();
        assert!(hits.iter().all(|h| h.title != "Refund policy"), "{mode:?}");
    }
    // A changed document is re-indexed and answers with its new content.
    let id = upload(
        &s,
        "Coffee",
        "Espresso machines stand on the third floor only.",
    )
    .await;
    wait_ready(&*store, s.tenant, &[id]).await;
    let hits = s
        .rag
        .search(
            s.tenant,
            &[s.dataset],
            "espresso machine",
            1,
            &MetadataFilter::new(),
        )
        .await
        .unwrap();
    assert_eq!(hits[0].title, "Coffee");
    assert!(hits[0].text.contains("Espresso"));
}

#[tokio::test]
async fn recall_on_a_known_corpus_sqlite() {
    quality(Arc::new(SeaOrmStore::in_memory().await.unwrap()), "sqlite").await;
}

#[tokio::test]
async fn recall_on_a_known_corpus_postgres() {
    if pg::skip_requested() {
        eprintln!("CHATCORE_TEST_SKIP_POSTGRES=1: skipping");
        return;
    }
    let (store, schema) = pg::fresh_store().await;
    quality(Arc::new(store), "postgres").await;
    SeaOrmStore::drop_schema(&pg::url(), &schema).await.unwrap();
}

/// Two instances on one SQLite file: what one writes, the other's next
/// search sees, although it keeps vectors in memory.
#[tokio::test]
async fn another_instance_sees_changes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let one = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let two = SeaOrmStore::open(&url, StoreOptions::default())
        .await
        .unwrap();
    let t = one.create_tenant(fixtures::new_tenant("x")).await.unwrap();
    let mut np = fixtures::mock_provider();
    np.name = "m".into();
    np.default_model = None;
    let p = one.create_provider_config(t.id, np).await.unwrap();
    let mut nd = fixtures::new_dataset(p.id, 2);
    nd.name = "d".into();
    nd.embedding_model = "m".into();
    let ds = one.create_dataset(t.id, nd).await.unwrap();
    let doc = |title: &str| NewDocument {
        dataset_id: ds.id,
        title: title.into(),
        source: None,
        mime_type: "text/plain".into(),
        metadata: serde_json::json!({}),
        content: title.into(),
        content_hash: title.into(),
    };
    let chunk = |e: [f32; 2]| NewChunk {
        ordinal: 0,
        text: "t".into(),
        token_count: 1,
        embedding: Some(e.to_vec()),
    };
    let a = one.create_document(t.id, doc("a")).await.unwrap();
    one.replace_chunks(t.id, a.id, vec![chunk([1.0, 0.0])])
        .await
        .unwrap();
    let search = |s: SeaOrmStore| async move {
        s.search_chunks_by_vector(
            t.id,
            ChunkSearch {
                datasets: &[ds.id],
                documents: None,
                limit: 5,
            },
            &[1.0, 0.0],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.document_id)
        .collect::<Vec<_>>()
    };
    assert_eq!(search(one.clone()).await, vec![a.id]);
    // The second instance adds a document and re-embeds the first.
    let b = two.create_document(t.id, doc("b")).await.unwrap();
    two.replace_chunks(t.id, b.id, vec![chunk([1.0, 0.1])])
        .await
        .unwrap();
    assert_eq!(search(one.clone()).await, vec![a.id, b.id]);
    two.replace_chunks(t.id, a.id, vec![chunk([0.0, 1.0])])
        .await
        .unwrap();
    assert_eq!(search(one.clone()).await, vec![b.id, a.id]);
    two.delete_document(t.id, b.id).await.unwrap();
    assert_eq!(search(one.clone()).await, vec![a.id]);
}
