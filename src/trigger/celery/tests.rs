//! Celery's wire format, checked against what real Celery 5.7.0 wrote (`tests/fixtures/celery`):
//! one test per kind of message and result, hence the length.

use std::io::Write;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::*;
use crate::Kind;

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
        force: false,
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
            force: false,
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
    let mut compressed: Value =
        serde_json::from_str(&fixture("task-full-persona-kwargs.json")).unwrap();
    compressed["headers"]["compression"] = "application/x-lzma".into();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not a JSON envelope"),
        (
            pickled,
            "content type \"application/x-python-serialize\" is not accepted (JSON only)",
        ),
        (
            v1.replace(&v1_body, &BASE64.encode("7")),
            "body: expected [args, kwargs, embed] (protocol v2) or a task object (protocol v1)",
        ),
        (
            compressed.to_string(),
            "compression \"application/x-lzma\" is not supported",
        ),
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
    let error = ingest_call(&msg, &names).unwrap_err().to_string();
    assert!(error.contains("unknown kind `poems`"), "{error}");
    assert!(error.starts_with("ValueError: job_ids"), "{error}");
    msg.task = "workers.tasks.send_newsletter".into();
    assert_eq!(
        ingest_call(&msg, &names).unwrap_err(),
        CallError::NotRegistered("workers.tasks.send_newsletter".into())
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
        let meta = ResultMeta::default();
        let ours: Value =
            serde_json::from_str(&result_value(task_id, &state, &meta, done)).unwrap();
        assert_eq!(ours, celery, "{name}");
    }
}

#[test]
fn calls_that_do_not_bind_are_answered_in_pythons_words() {
    let names = TaskNames::default();
    let message = |args: Value, kwargs: Value| {
        let Value::Object(kwargs) = kwargs else {
            unreachable!()
        };
        let Value::Array(args) = args else {
            unreachable!()
        };
        let raw = encode(
            "workers.tasks.ingest_full_persona",
            "t",
            &args,
            &kwargs,
            "q",
            "o",
        );
        decode(raw.as_bytes()).unwrap()
    };
    let error = |args, kwargs| ingest_call(&message(args, kwargs), &names).unwrap_err();
    let force = |args, kwargs| ingest_call(&message(args, kwargs), &names).unwrap().force();
    let ids = json!({ "works": "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01" });
    assert!(force(json!(["p", ids]), json!({ "force": true })));
    assert!(force(json!(["p", ids, true]), json!({})));
    assert!(!force(json!(["p", ids]), json!({ "force": null })));
    assert!(!force(json!(["p", ids]), json!({})));
    // As the real worker answered it (tests/fixtures/celery/control-replies.json).
    let celery: Value = serde_json::from_str(&fixture("control-replies.json")).unwrap();
    assert_eq!(
        error(json!([]), json!({ "persona_id": "p" })).exception(),
        (
            "TypeError",
            "builtins",
            celery["missing_arg_meta"]["result"]["exc_message"][0]
                .as_str()
                .unwrap()
                .to_owned()
        )
    );
    assert_eq!(
        error(json!([]), json!({})),
        CallError::Type("ingest_full_persona() missing 2 required positional arguments: 'persona_id' and 'job_ids'".into())
    );
    assert_eq!(
        error(json!(["p", {}, true, 3]), json!({})),
        CallError::Type(
            "ingest_full_persona() takes from 2 to 3 positional arguments but 4 were given".into()
        )
    );
    assert_eq!(
        error(json!(["p", {}, true]), json!({ "force": false })),
        CallError::Type("ingest_full_persona() got multiple values for argument 'force'".into())
    );
    assert_eq!(
        error(
            json!(["p", { "works": "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01" }]),
            json!({ "force": "yes" })
        ),
        CallError::Value("force must be a boolean, got \"yes\"".into())
    );
    assert_eq!(
        error(json!(["p"]), json!({ "persona_id": "p", "job_ids": {} })),
        CallError::Type(
            "ingest_full_persona() got multiple values for argument 'persona_id'".into()
        )
    );
    assert_eq!(
        error(
            json!([]),
            json!({ "persona_id": "p", "job_ids": {}, "forced": true })
        ),
        CallError::Type("ingest_full_persona() got an unexpected keyword argument 'forced'".into())
    );
    assert_eq!(
        error(json!(["p", { "works": 7 }]), json!({})),
        CallError::Value("job_ids.works must be a UUID string, got 7".into())
    );
    assert_eq!(
        error(
            json!([7, { "works": "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01" }]),
            json!({})
        ),
        CallError::Value("persona_id must be a string, got 7".into())
    );
}

#[test]
fn protocol_1_messages_are_read() {
    let body = json!({
        "task": "workers.tasks.ingest_persona_works", "id": "v1-task",
        "args": ["mark-twain", "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01"], "kwargs": {},
        "retries": 2, "eta": null, "expires": null, "utc": true,
        "callbacks": null, "errbacks": null, "timelimit": [null, null], "taskset": null, "chord": null,
    });
    let raw = json!({
        "body": BASE64.encode(body.to_string()),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": {},
        "properties": { "delivery_info": { "exchange": "", "routing_key": "celery" }, "priority": 0, "body_encoding": "base64", "delivery_tag": "x" },
    });
    let msg = decode(raw.to_string().as_bytes()).unwrap();
    assert_eq!(
        (msg.protocol, msg.id.as_str(), msg.retries),
        (1, "v1-task", 2)
    );
    assert_eq!(
        ingest_call(&msg, &TaskNames::default()).unwrap(),
        IngestCall::OneKind {
            kind: Kind::Works,
            persona_id: "mark-twain".into(),
            job_id: "7a1f3c9e-0b1d-4c55-9a57-3f2f8e7b9d01".parse().unwrap(),
            force: false,
        }
    );
    // Its retry goes out as protocol 2, as Celery's does.
    let again = retry_message(raw.to_string().as_bytes(), &msg, "celery", Utc::now()).unwrap();
    let again = decode(&again).unwrap();
    assert_eq!(
        (again.protocol, again.retries, again.id.as_str()),
        (2, 3, "v1-task")
    );
    assert!(again.eta.is_some());
}

#[test]
fn compressed_bodies_are_read() {
    let plain = fixture("task-full-persona-kwargs.json");
    let envelope: Value = serde_json::from_str(&plain).unwrap();
    let body = BASE64.decode(envelope["body"].as_str().unwrap()).unwrap();
    let expected = decode(plain.as_bytes()).unwrap();
    let zlib = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    let bz2 = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&body).unwrap();
        e.finish().unwrap()
    };
    for (name, bytes) in [("application/x-gzip", &zlib), ("application/x-bz2", &bz2)] {
        let mut compressed = envelope.clone();
        compressed["body"] = BASE64.encode(bytes).into();
        compressed["headers"]["compression"] = name.into();
        let msg = decode(compressed.to_string().as_bytes()).unwrap();
        assert_eq!(
            (msg.kwargs.clone(), msg.id.clone()),
            (expected.kwargs.clone(), expected.id.clone()),
            "{name}"
        );
    }
    let mut broken = envelope.clone();
    broken["body"] = BASE64.encode(b"not zlib at all").into();
    broken["headers"]["compression"] = "application/x-gzip".into();
    let error = decode(broken.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("body: not application/x-gzip data"),
        "{error}"
    );
}

/// A bzip2 body of a few hundred bytes that inflates to 20 MiB is refused at the limit,
/// never read whole into memory.
#[test]
fn a_compression_bomb_is_refused_at_the_limit() {
    let envelope: Value = serde_json::from_str(&fixture("task-full-persona-kwargs.json")).unwrap();
    let bomb = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..20 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    let mut message = envelope.clone();
    message["body"] = BASE64.encode(&bomb).into();
    message["headers"]["compression"] = "application/x-bz2".into();
    let error = decode(message.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("body: application/x-bz2 body inflates past {MAX_BODY_BYTES} bytes")
    );
}

#[test]
fn revoked_and_parented_results_read_as_a_real_workers() {
    let celery: Value = serde_json::from_str(&fixture("control-replies.json")).unwrap();
    for (key, reason) in [("revoked_meta", "revoked"), ("expired_meta", "expired")] {
        let theirs = &celery[key];
        let done = DateTime::parse_from_rfc3339(theirs["date_done"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
        let meta = ResultMeta {
            parent_id: None,
            children: theirs["children"].as_array().map(|_| Vec::new()),
        };
        let state = TaskState::Revoked {
            reason: reason.into(),
        };
        let ours: Value = serde_json::from_str(&result_value(
            theirs["task_id"].as_str().unwrap(),
            &state,
            &meta,
            done,
        ))
        .unwrap();
        assert_eq!(&ours, theirs, "{key}");
    }
    // The seed's ingest_full_persona: its children as Celery stores them.
    let theirs = &celery["full_meta"];
    let done = DateTime::parse_from_rfc3339(theirs["date_done"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let children: Vec<String> = celery["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let meta = ResultMeta {
        parent_id: None,
        children: Some(children),
    };
    let state = TaskState::Success(theirs["result"].clone());
    let ours: Value = serde_json::from_str(&result_value(
        theirs["task_id"].as_str().unwrap(),
        &state,
        &meta,
        done,
    ))
    .unwrap();
    assert_eq!(&ours, theirs);
}
