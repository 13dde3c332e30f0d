//! Layering and refusal of settings.

use super::*;

fn inputs(env: &[(&str, &str)]) -> ConfigInputs {
    ConfigInputs {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ConfigInputs::default()
    }
}

fn refusal(inputs: &ConfigInputs) -> String {
    Settings::load(inputs).unwrap_err().to_string()
}

#[test]
fn defaults_load_and_are_zero_setup() {
    let s = Settings::load(&ConfigInputs::default()).unwrap();
    assert_eq!(s.embedding.provider, ProviderKind::Local);
    assert_eq!(s.store.kind, StoreKind::Embedded);
    assert!(s.database.url.starts_with("sqlite://"));
    assert_eq!(s.worker.time_limit, 7200);
    assert_eq!(s.worker.soft_time_limit, 6900);
    assert_eq!(s.collection_name("mark-twain", "works"), "mark-twain_works");
}

#[test]
fn environment_layers_over_file_and_flags_over_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[chunking]\ntarget_tokens = 300\n[embedding]\ndimension = 64\n",
    )
    .unwrap();
    let mut inputs = inputs(&[
        ("ENGINE__EMBEDDING__PROVIDER", "local"),
        ("ENGINE__EMBEDDING__DIMENSION", "128"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1/x"),
        ("ENGINE__DATA_ROOT", "/srv/corpus"),
    ]);
    inputs.file = Some(file);
    let s = Settings::load(&inputs).unwrap();
    assert_eq!(s.chunking.target_tokens, 300, "file over defaults");
    assert_eq!(s.embedding.dimension, Some(128), "environment over file");
    assert_eq!(s.database.url, "postgres://postgres@127.0.0.1/x");
    assert_eq!(s.data_root, PathBuf::from("/srv/corpus"));

    let s = Settings::load(&inputs.with_override("embedding.dimension", "32")).unwrap();
    assert_eq!(s.embedding.dimension, Some(32), "flags over environment");
}

#[test]
fn engine_variables_win_over_customary_ones() {
    let s = Settings::load(&inputs(&[
        ("DATABASE_URL", "sqlite://a.db"),
        ("ENGINE__DATABASE__URL", "sqlite://b.db"),
    ]))
    .unwrap();
    assert_eq!(s.database.url, "sqlite://b.db");
}

#[test]
fn wrong_values_are_refused_naming_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("ENGINE__CHUNKING__TARGET_TOKENS", "many")],
            "chunking.target_tokens",
        ),
        (
            &[("ENGINE__EMBEDDING__PROVIDER", "telepathy")],
            "embedding.provider",
        ),
        (
            &[("ENGINE__QUOTES__ON_BAD_RECORD", "ignore")],
            "quotes.on_bad_record",
        ),
        (
            &[("ENGINE__CHUNKING__OVERLAP_TOKENS", "300")],
            "chunking.overlap_tokens",
        ),
        (
            &[("ENGINE__EMBEDDING__DIMENSION", "1")],
            "embedding.dimension",
        ),
        (
            &[("ENGINE__WORKER__CONCURRENCY", "0")],
            "worker.concurrency",
        ),
        (
            &[("ENGINE__WORKER__SOFT_TIME_LIMIT", "9000")],
            "worker.soft_time_limit",
        ),
        (
            &[("ENGINE__COLLECTIONS__NAME_TEMPLATE", "{persona}")],
            "collections.name_template",
        ),
        (
            &[("ENGINE__COLLECTIONS__NAME_TEMPLATE", "{persona}/{kind}")],
            "collections.name_template",
        ),
        (&[("REDIS_URL", "amqp://guest@localhost//")], "redis.url"),
        (
            &[("REDIS_URL", "rediss://h:6380/0?ssl_cert_reqs=CERT_MAYBE")],
            "redis.url",
        ),
        (
            &[(
                "CELERY_RESULT_BACKEND",
                "rediss://h/0?ssl_ca_certs=/no/ca.pem",
            )],
            "results.url",
        ),
        (
            &[("ENGINE__TASKS__FULL_PERSONA_ANSWERS", "eventually")],
            "tasks.full_persona_answers",
        ),
    ];
    for (env, key) in cases {
        let message = refusal(&inputs(env));
        assert!(message.contains(key), "{env:?}: {message}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let message = refusal(&inputs(&[("ENGINE__CHUNKING__TARGET_TOKEN", "300")]));
    assert!(message.contains("target_token"), "{message}");
}

#[test]
fn a_missing_config_file_is_refused() {
    let inputs = ConfigInputs {
        file: Some("/nonexistent/engine.toml".into()),
        ..ConfigInputs::default()
    };
    assert!(refusal(&inputs).contains("/nonexistent/engine.toml"));
}

#[test]
fn queues_come_as_a_comma_separated_list_from_the_environment() {
    let s = Settings::load(&inputs(&[("ENGINE__WORKER__QUEUES", "personas,celery")])).unwrap();
    assert_eq!(s.worker.queues, ["personas", "celery"]);
    let s = Settings::load(&inputs(&[("ENGINE__EMBEDDING__API_KEY", "12345")])).unwrap();
    assert_eq!(
        s.embedding.api_key.as_deref(),
        Some("12345"),
        "numbers stay strings where strings are wanted"
    );
}

#[test]
fn minilm_brings_its_defaults_below_every_setting_a_user_makes() {
    let minilm = inputs(&[("ENGINE__EMBEDDING__PROVIDER", "minilm")]);
    let s = Settings::load(&minilm).unwrap();
    assert_eq!(
        (
            s.chunking.target_tokens,
            s.chunking.overlap_tokens,
            s.embedding.max_input_tokens,
            s.embedding.vector_dimension(),
        ),
        (200, 20, 256, Some(384))
    );
    let chosen = Settings::load(
        &minilm
            .clone()
            .with_override("chunking.target_tokens", "120"),
    )
    .unwrap();
    assert_eq!(chosen.chunking.target_tokens, 120, "the user's value wins");

    // 255 word pieces and [CLS] and [SEP] are more than the model reads: chunks would be cut.
    let error = refusal(
        &minilm
            .clone()
            .with_override("chunking.target_tokens", "255"),
    );
    assert!(
        error.contains("`chunking.target_tokens`: 255 word pieces")
            && error.contains("at most 254"),
        "{error}"
    );
    let error = refusal(&minilm.with_override("embedding.max_input_tokens", "512"));
    assert!(
        error.contains("`embedding.max_input_tokens`: 512 is over"),
        "{error}"
    );
}

#[test]
fn an_unknown_encoding_is_refused_naming_the_key() {
    let error = refusal(&inputs(&[("ENGINE__SOURCES__ENCODING", "klingon-8")]));
    assert!(
        error.contains("`sources.encoding`: \"klingon-8\" is not an encoding label"),
        "{error}"
    );
    // A label of WHATWG's "replacement" encoding would read every file as one U+FFFD.
    let error = refusal(&inputs(&[("ENGINE__SOURCES__ENCODING", "iso-2022-kr")]));
    assert!(
        error.contains("`sources.encoding`: \"iso-2022-kr\" names WHATWG's \"replacement\""),
        "{error}"
    );
    let s = Settings::load(&inputs(&[("ENGINE__SOURCES__ENCODING", "Latin1")])).unwrap();
    assert_eq!(s.sources.encoding().unwrap().name(), "windows-1252");
}
