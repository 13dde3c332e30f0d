//! The `minilm` embedder (all-MiniLM-L6-v2 in process) against an independent implementation of
//! the same model, and at finding quotes by meaning. The model's files come from
//! `scripts/model-env` (PERSONA_INGEST_MINILM, set by scripts/test).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use persona_ingest::config::ChunkingSettings;
use persona_ingest::embed::{EmbeddingProvider, HashingEmbedder, MiniLm};
use persona_ingest::sources::TextChunker;
use persona_ingest::Kind;

use crate::common::*;
use crate::worker_kit::python;

pub fn model_dir() -> PathBuf {
    std::env::var_os("PERSONA_INGEST_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2")
        })
}

fn load() -> MiniLm {
    MiniLm::load(&model_dir(), 2).unwrap_or_else(|e| {
        panic!("{e}: run scripts/model-env (scripts/test does) to fetch the model")
    })
}

fn quotes(persona: &str, n: usize) -> Vec<String> {
    let path = corpus_root().join(format!("data/{persona}/quotes/all_quotes.jsonl"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .take(n)
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// 200 of the corpus's quotes and 50 works chunks (cut by the chunker with this model's
/// tokenizer) get the vectors a NumPy implementation of the model computes from the same files.
#[actix::test]
async fn vectors_match_an_independent_implementation_of_the_model() {
    let model = load();
    let mut texts = quotes("many-voices", 200);
    let book = std::fs::read_to_string(
        corpus_root().join("data/mark-twain/works/adventures-of-huckleberry-finn_pg76.txt"),
    )
    .unwrap();
    let mut chunker = TextChunker::with_counter(
        ChunkingSettings {
            target_tokens: 200,
            overlap_tokens: 20,
        },
        model.token_counter(),
    );
    chunker.push(&book[40_000..80_000]);
    chunker.finish();
    let chunks: Vec<String> = chunker.take_ready().take(50).map(|c| c.text).collect();
    assert_eq!(chunks.len(), 50);
    for chunk in &chunks {
        let pieces = model.token_counter().count(chunk);
        assert!(pieces <= 200, "a chunk of {pieces} word pieces");
    }
    texts.extend(chunks);

    // Chinese is about one word piece a character, three bytes: sized by bytes alone, a chunk of
    // 200 estimated tokens would be about 266 word pieces, and the model would drop the rest.
    let mut chinese = TextChunker::with_counter(
        ChunkingSettings {
            target_tokens: 200,
            overlap_tokens: 20,
        },
        model.token_counter(),
    );
    chinese.push(&"春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。".repeat(100));
    chinese.finish();
    let chinese: Vec<String> = chinese.take_ready().map(|c| c.text).collect();
    for chunk in &chinese {
        let pieces = model.token_counter().count(chunk);
        assert!(pieces <= 200, "a Chinese chunk of {pieces} word pieces");
        assert!(chunk.ends_with('。'), "{chunk}");
    }
    assert!(chinese.len() >= 12, "{} chunks", chinese.len());

    let ours = model.embed(texts.clone()).await.unwrap();
    let mut reference = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/reference.py"))
        .arg(model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    reference
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&texts).unwrap().as_bytes())
        .unwrap();
    let output = reference.wait_with_output().unwrap();
    assert!(output.status.success());
    let theirs: Vec<Vec<f64>> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(theirs.len(), texts.len());
    let mut worst = (1.0f64, 0);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a.len(), 384);
        let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "text {i}: norm {norm}");
        let c = cosine(a, b);
        if c < worst.0 {
            worst = (c, i);
        }
    }
    println!(
        "lowest cosine to the reference: {:.6} ({:?})",
        worst.0, texts[worst.1]
    );
    assert!(worst.0 >= 0.999, "text {}: cosine {}", worst.1, worst.0);
}

/// Twenty questions in other words than the quotes they should find, among 300 quotes: the
/// model puts the right one in its top 3 for at least 16; the hashing embedder's count is
/// printed beside it.
#[actix::test]
async fn quotes_are_found_by_meaning() {
    const QUESTIONS: [(&str, usize); 20] = [
        (
            "Even in the coldest part of the year I discovered an unbeatable warmth inside myself.",
            0,
        ),
        ("Is it too late to become the person I could have been?", 3),
        ("Should I hold off until the moment is perfect?", 8),
        (
            "What happens to societies that ignore the lessons of the past?",
            30,
        ),
        ("Can you greet someone while making a fist?", 46),
        (
            "The ocean's swells are beyond our control, but we can ride them on a board.",
            48,
        ),
        (
            "If your career is something you enjoy, it will not feel like labour.",
            67,
        ),
        (
            "The finest military strategy defeats the opponent without any battle.",
            80,
        ),
        ("When life gives you sour fruit, turn it into a drink.", 89),
        ("Problems are chances dressed for labour.", 93),
        ("Don't ever quit, not ever.", 109),
        (
            "Without a destination, every route is as good as another.",
            113,
        ),
        (
            "Like good health, a close companion is appreciated only once lost.",
            118,
        ),
        (
            "Don't treat others in ways you would hate to be treated.",
            122,
        ),
        (
            "Our brains are only useful when receptive, like a skydiver's canopy.",
            131,
        ),
        (
            "Follow the rhythm of the natural world: its secret is waiting calmly.",
            135,
        ),
        ("Real wisdom is recognising that you are ignorant.", 136),
        (
            "Talk in a rage and you will give an address you will be sorry for.",
            144,
        ),
        (
            "Being your own idol costs less than going to the cinema.",
            147,
        ),
        (
            "The larva's apocalypse is, to the master, a beautiful winged insect.",
            156,
        ),
    ];
    let pool = quotes("many-voices", 300);
    let questions: Vec<String> = QUESTIONS.iter().map(|(q, _)| q.to_string()).collect();
    let minilm: Box<dyn EmbeddingProvider> = Box::new(load());
    let hashing: Box<dyn EmbeddingProvider> = Box::new(HashingEmbedder::new(384));
    let mut found = Vec::new();
    for provider in [&minilm, &hashing] {
        let docs = provider.embed(pool.clone()).await.unwrap();
        let asked = provider.embed(questions.clone()).await.unwrap();
        let hits = asked
            .iter()
            .zip(QUESTIONS)
            .filter(|(q, (_, want))| {
                let mut scored: Vec<(f32, usize)> = docs
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (q.iter().zip(d).map(|(a, b)| a * b).sum(), i))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                scored.iter().take(3).any(|(_, i)| i == want)
            })
            .count();
        found.push(hits);
    }
    println!(
        "right quote in the top 3: all-MiniLM-L6-v2 {}/20, hashing {}/20",
        found[0], found[1]
    );
    assert!(found[0] >= 16, "all-MiniLM-L6-v2 found {}/20", found[0]);
}

/// `provider = "minilm"` from the settings alone: chunks sized with its tokenizer, the
/// collection records the model and 384 dimensions, and `query` finds a passage by meaning.
#[actix::test]
async fn a_persona_ingested_with_minilm_is_found_by_meaning() {
    let world = World::new();
    world.write("personas/p/profile.md", "# P\n\nA writer of sea stories.\n");
    world.write(
        "data/p/quotes/all_quotes.jsonl",
        "{\"text\": \"The sea was calm and the ship sailed slowly into the harbour at dawn.\"}\n\
         {\"text\": \"Taxes and accounting bore me more than anything in the world.\"}\n",
    );
    let model = model_dir();
    let engine = world
        .engine(&[
            ("embedding.provider", "minilm"),
            ("embedding.model_path", model.to_str().unwrap()),
        ])
        .await;
    assert_eq!(
        engine.settings.chunking.target_tokens, 200,
        "the provider's default"
    );
    let outcome = engine.ingest(persona("p"), &Kind::ALL).await.unwrap();
    assert!(outcome.succeeded(), "{:?}", outcome.error);
    let info = engine.store.collection("p_quotes").await.unwrap().unwrap();
    assert_eq!(
        (info.embedding_model.as_str(), info.dimension),
        ("all-MiniLM-L6-v2", 384)
    );
    let hits = nearest(
        &engine,
        "p_quotes",
        "a boat arriving in port in the early morning",
        1,
    )
    .await;
    assert!(
        hits[0].document.starts_with("The sea was calm"),
        "{}",
        hits[0].document
    );
}

/// The provider suite every embedder passes (see `testkit::conformance`).
#[actix::test]
async fn minilm_conforms_to_the_provider_suite() {
    persona_ingest::testkit::conformance::embedding_provider("minilm", &load()).await;
}
