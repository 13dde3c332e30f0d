//! Celery's wire format, checked against what real Celery 5.7.0 wrote (`tests/fixtures/celery`).

use super::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/celery/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn decodes_what_send_task_sends_with_keyword_arguments() {
    let msg = decode(fixture("task-full-persona-kwargs.json").as_bytes()).unwrap();
    insta::assert_yaml_snapshot!(msg);
    let call = ingest_call(&msg, &TaskNames::default()).unwrap();
    let IngestCall::FullPersona {
        persona_id,
        job_ids,
    } = call
    else {
        panic!("{call:?}")
    };
    assert_eq!(persona_id, "mark-twain");
    assert_eq!(
        job_ids.keys().copied().collect::<Vec<_>>(),
        [Kind::Works, Kind::Quotes, Kind::Profile]
    );
}

#[test]
fn decodes_positional_arguments_priority_and_time_limits() {
    let msg = decode(fixture("task-quotes-args-priority-6-timelimit.json").as_bytes()).unwrap();
    assert_eq!(
        (msg.time_limit, msg.soft_time_limit),
        (Some(600.0), Some(500.0)),
        "hard first on the wire"
    );
    assert_eq!(msg.priority, 6);
    assert_eq!(
        ingest_call(&msg, &TaskNames::default()).unwrap(),
        IngestCall::OneKind {
            kind: Kind::Quotes,
            persona_id: "mark-twain".into(),
            job_id: "8b2e4dae-1c2e-4d66-8b68-4a3f9f8cae12".parse().unwrap(),
        }
    );
}

#[test]
fn what_encode_writes_decodes_to_the_same_call() {
    let kwargs: Map<String, Value> = serde_json::from_value(json!({
        "persona_id": "jane-austen",
        "job_ids": { "works": "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01" },
    }))
    .unwrap();
    let raw = encode(
        "workers.tasks.ingest_full_persona",
        "task-1",
        &[],
        &kwargs,
        "celery",
        "me@host",
    );
    let msg = decode(raw.as_bytes()).unwrap();
    assert_eq!(
        (msg.id.as_str(), msg.root_id.as_deref()),
        ("task-1", Some("task-1"))
    );
    assert_eq!(msg.kwargs, kwargs);
    // Same envelope keys as Celery's own.
    let ours: Value = serde_json::from_str(&raw).unwrap();
    let celery: Value = serde_json::from_str(&fixture("task-full-persona-kwargs.json")).unwrap();
    for part in ["headers", "properties"] {
        let mut theirs: Vec<&String> = celery[part].as_object().unwrap().keys().collect();
        let mut mine: Vec<&String> = ours[part].as_object().unwrap().keys().collect();
        theirs.retain(|k| {
            !["replaced_task_nesting", "stamped_headers", "stamps"].contains(&k.as_str())
        });
        theirs.sort();
        mine.sort();
        assert_eq!(mine, theirs, "{part}");
    }
}

#[test]
fn undecodable_messages_say_why() {
    let pickled = fixture("task-full-persona-kwargs.json")
        .replace("application/json", "application/x-python-serialize");
    let v1_body = BASE64.encode(r#"{"task": "x", "id": "1", "args": [], "kwargs": {}}"#);
    let v1 = fixture("task-full-persona-kwargs.json").replacen(
        &serde_json::from_str::<Value>(&fixture("task-full-persona-kwargs.json")).unwrap()["body"]
            .as_str()
            .unwrap()
            .to_owned(),
        &v1_body,
        1,
    );
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not a JSON envelope"),
        (
            pickled,
            "content type \"application/x-python-serialize\" is not accepted (JSON only)",
        ),
        (v1, "body: expected [args, kwargs, embed] (protocol v2)"),
    ];
    for (raw, why) in cases {
        let error = decode(raw.as_bytes()).unwrap_err().to_string();
        assert!(error.starts_with(why), "{error}");
    }
}

#[test]
fn unknown_tasks_and_bad_arguments_are_refused() {
    let mut msg = decode(fixture("task-full-persona-kwargs.json").as_bytes()).unwrap();
    let names = TaskNames::default();
    msg.kwargs.insert(
        "job_ids".into(),
        json!({ "poems": "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01" }),
    );
    let error = ingest_call(&msg, &names).unwrap_err();
    assert!(error.contains("unknown kind `poems`"), "{error}");
    msg.task = "workers.tasks.send_newsletter".into();
    assert_eq!(
        ingest_call(&msg, &names).unwrap_err(),
        "unknown task \"workers.tasks.send_newsletter\""
    );
}

#[test]
fn priorities_map_to_celerys_sub_queues() {
    let names: Vec<String> = [0, 2, 3, 5, 6, 9]
        .iter()
        .map(|p| priority_queue("celery", *p))
        .collect();
    assert_eq!(
        names,
        [
            "celery",
            "celery",
            "celery\x06\x163",
            "celery\x06\x163",
            "celery\x06\x166",
            "celery\x06\x169"
        ]
    );
}

/// A result value Celery wrote, and the time it wrote as `date_done`.
fn celery_result(name: &str) -> (Value, DateTime<Utc>) {
    let value: Value = serde_json::from_str(&fixture(name)).unwrap();
    let done = value["date_done"].as_str().map_or_else(Utc::now, |d| {
        DateTime::parse_from_rfc3339(d).unwrap().with_timezone(&Utc)
    });
    (value, done)
}

#[test]
fn result_values_read_as_celerys_own() {
    let cases = [
        (
            "result-success.json",
            "11111111-1111-4111-8111-111111111111",
            TaskState::Success(json!({ "profile": "p", "works": "w", "quotes": "q" })),
        ),
        (
            "result-failure.json",
            "22222222-2222-4222-8222-222222222222",
            TaskState::Failure {
                exc_type: "ValueError".into(),
                exc_message: "persona ghost not found".into(),
                exc_module: "builtins".into(),
                traceback: Some("Traceback...".into()),
            },
        ),
        (
            "result-started.json",
            "33333333-3333-4333-8333-333333333333",
            TaskState::Started {
                pid: 1,
                hostname: "w@h".into(),
            },
        ),
        (
            "result-retry.json",
            "44444444-4444-4444-8444-444444444444",
            TaskState::Retry {
                exc_type: "RuntimeError".into(),
                exc_message: "embedding failed: 503 Service Unavailable (gave up after 6 attempts)"
                    .into(),
                exc_module: "builtins".into(),
            },
        ),
    ];
    for (name, task_id, state) in cases {
        let (celery, done) = celery_result(name);
        let ours: Value = serde_json::from_str(&result_value(task_id, &state, done)).unwrap();
        assert_eq!(ours, celery, "{name}");
    }
}
