//! The HTTP server of `persona-ingest run` against a running daemon (real Redis, SQLite): every
//! endpoint, its errors, the bearer token, and `/metrics` read by a Prometheus text parser.
//! (Just over 400 lines: one daemon started per test is the cost of each endpoint's test.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::worker_kit::*;

pub const TOKEN: &str = "s3cret";

pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        self.call("POST", path, body).await
    }

    /// Waits until the server answers `/health`.
    pub async fn up(&self) {
        let url = format!("{}/health", self.base);
        wait_for("the HTTP server", Duration::from_secs(30), || {
            let request = self.client.get(&url).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
    }
}

pub fn http_env(port: u16) -> Vec<(String, String)> {
    vars(&[
        ("ENGINE__HTTP__LISTEN", &format!("127.0.0.1:{port}")),
        ("ENGINE__HTTP__TOKEN", TOKEN),
    ])
}

/// An error answer: its status, and a JSON body saying it.
pub fn assert_error(answer: (StatusCode, Value), status: StatusCode, says: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["status"], json!(status.as_u16()), "{}", answer.1);
    let message = answer.1["error"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[actix::test]
async fn every_endpoint_against_a_running_daemon() {
    let world = World::reading(examples_root());
    let names = Names::new();
    let port = free_port();
    let _daemon = Daemon::start(&world, &names, &redis_url(), &http_env(port));
    let api = Api::new(port);
    api.up().await;

    // The token: wanted everywhere but /health.
    let bare = reqwest::get(format!("{}/ready", api.base)).await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let health = reqwest::get(format!("{}/health", api.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // The dashboard's page holds no data; what it shows does want the token.
    let page = reqwest::get(format!("{}/", api.base)).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("/api/dashboard"));
    let bare = reqwest::get(format!("{}/api/dashboard", api.base))
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    let (status, ready) = api.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready,
        json!({ "ready": true, "checks": { "database": "ok", "redis": "ok", "store": "ok" } })
    );

    // POST .../ingest: the job rows and the Celery message; the daemon serves it.
    let (status, sent) = api.post("/api/personas/twain-sampler/ingest", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    assert_eq!(sent["queue"], json!(names.queue));
    let task_id = sent["task_id"].as_str().unwrap().to_owned();
    let jobs = sent["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 3);
    let result = final_result(&redis_url(), &task_id, Duration::from_secs(60)).await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    let expected = json!({ "works": 20, "quotes": 12, "profile": 4 });
    for job in &jobs {
        let (status, row) = api
            .get(&format!("/api/jobs/{}", job["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(row["status"], "completed");
        assert_eq!(
            row["total_vectors"],
            expected[row["kind"].as_str().unwrap()]
        );
    }
    let (status, one) = api
        .post(
            "/api/personas/twain-sampler/ingest",
            Some(r#"{"kinds": ["quotes"]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{one}");
    assert_eq!(one["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(one["jobs"][0]["kind"], "quotes");
    let one_task = one["task_id"].as_str().unwrap().to_owned();
    final_result(&redis_url(), &one_task, Duration::from_secs(60)).await;
    let (_, job) = api
        .get(&format!(
            "/api/jobs/{}",
            one["jobs"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (
            &job["chunks_embedded"],
            &job["chunks_unchanged"],
            &job["files_skipped"]
        ),
        (&json!(0), &json!(12), &json!(1)),
        "nothing changed since the first run: {job}"
    );
    let (status, forced) = api
        .post(
            "/api/personas/twain-sampler/ingest",
            Some(r#"{"kinds": ["quotes"], "force": true}"#),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{forced}");
    final_result(
        &redis_url(),
        forced["task_id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    let (_, job) = api
        .get(&format!(
            "/api/jobs/{}",
            forced["jobs"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job["chunks_embedded"], json!(12), "forced: {job}");

    // Listings and the persona.
    let (status, listed) = api
        .get("/api/jobs?status=completed&persona=twain-sampler&limit=2")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 2);
    let (_, all) = api.get("/api/jobs?persona=twain-sampler").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 5);
    let (status, persona) = api.get("/api/personas/twain-sampler").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(persona["persona"]["status"], "active");
    let (status, audit) = api.get("/api/personas/twain-sampler/audit").await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    assert_eq!(audit["clean"], json!(true), "{audit}");
    assert_eq!(
        audit["persona"]["kinds"].as_array().unwrap().len(),
        3,
        "{audit}"
    );
    assert_eq!(
        api.get("/api/personas/nobody-here/audit").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(persona["jobs"].as_array().unwrap().len(), 5);

    // Errors: JSON with a status code and a message.
    let missing = uuid::Uuid::new_v4();
    assert_error(
        api.get(&format!("/api/jobs/{missing}")).await,
        StatusCode::NOT_FOUND,
        "no job",
    );
    assert_error(
        api.get("/api/jobs/42").await,
        StatusCode::BAD_REQUEST,
        "not a UUID",
    );
    assert_error(
        api.get("/api/jobs?status=done").await,
        StatusCode::BAD_REQUEST,
        "\"done\"",
    );
    assert_error(
        api.get("/api/jobs?limit=0").await,
        StatusCode::BAD_REQUEST,
        "limit",
    );
    assert_error(
        api.get("/api/jobs?colour=red").await,
        StatusCode::BAD_REQUEST,
        "colour",
    );
    assert_error(
        api.get("/api/personas/ghost").await,
        StatusCode::NOT_FOUND,
        "no persona ghost",
    );
    assert_error(
        api.get("/api/personas/Bad!").await,
        StatusCode::BAD_REQUEST,
        "invalid persona id",
    );
    assert_error(
        api.post("/api/personas/ghost/ingest", None).await,
        StatusCode::NOT_FOUND,
        "no persona ghost",
    );
    assert_error(
        api.post("/api/personas/twain-sampler/ingest", Some("{kinds"))
            .await,
        StatusCode::BAD_REQUEST,
        "body",
    );
    assert_error(
        api.post(
            "/api/personas/twain-sampler/ingest",
            Some(r#"{"kinds": ["poems"]}"#),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "poems",
    );
    assert_error(
        api.get("/api/nothing-here").await,
        StatusCode::NOT_FOUND,
        "no such endpoint",
    );

    let (status, board) = api.get("/api/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(board["personas"][0]["id"], "twain-sampler");
    assert_eq!(board["completed"].as_array().unwrap().len(), 5);
    let counted = board["completed"].as_array().unwrap();
    assert!(
        counted
            .iter()
            .any(|j| j["unchanged"] == json!(12) && j["embedded"] == json!(0)),
        "what each run did: {board}"
    );
    assert_eq!(board["broker"]["workers"].as_array().unwrap().len(), 1);

    // Dead letters, with their reasons.
    let mut con = connect(&redis_url()).await;
    push(&mut con, &names.queue, &["not a message".to_owned()]).await;
    let letters = wait_for("a dead letter", Duration::from_secs(30), || async {
        let (_, letters) = api.get("/api/dead-letters").await;
        (letters["total"] == json!(1)).then_some(letters)
    })
    .await;
    let reason = letters["dead_letters"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("not a JSON envelope"), "{reason}");
    assert_eq!(letters["dead_letters"][0]["message"], "not a message");

    // Metrics, read by a Prometheus text parser.
    let text = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(
        value(
            "persona_ingest_jobs",
            &[("kind", "quotes"), ("status", "completed")]
        ),
        3.0
    );
    assert_eq!(
        value(
            "persona_ingest_jobs",
            &[("kind", "works"), ("status", "completed")]
        ),
        1.0
    );
    // The second run of the quotes found them unchanged (nothing embedded or written again),
    // the third was forced.
    assert_eq!(value("persona_ingest_vectors_written_total", &[]), 48.0);
    assert_eq!(value("persona_ingest_chunks_embedded_total", &[]), 48.0);
    assert_eq!(
        value("persona_ingest_chunks_total", &[("outcome", "unchanged")]),
        12.0
    );
    assert_eq!(
        value("persona_ingest_files_total", &[("outcome", "skipped")]),
        1.0
    );
    assert!(value("persona_ingest_tokens_embedded_total", &[]) > 1000.0);
    assert_eq!(
        value("persona_ingest_tasks_total", &[("state", "SUCCESS")]),
        3.0
    );
    assert_eq!(value("persona_ingest_dead_letters_total", &[]), 1.0);
    assert_eq!(value("persona_ingest_dead_letter_messages", &[]), 1.0);
    assert_eq!(
        value("persona_ingest_queue_messages", &[("queue", &names.queue)]),
        0.0
    );
    assert_eq!(value("persona_ingest_in_flight_messages", &[]), 0.0);
    assert_eq!(value("persona_ingest_workers", &[]), 1.0);
    assert_eq!(value("persona_ingest_running_personas", &[]), 0.0);
    assert!(value("persona_ingest_store_writes_total", &[]) >= 2.0);
    let histogram = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(buckets) => buckets.len(),
                other => panic!("{name}: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no histogram {name}"))
    };
    assert!(histogram("persona_ingest_embedding_call_seconds") > 5);
    assert!(histogram("persona_ingest_embedding_batch_size") > 5);
    forget(&redis_url(), &names.prefix, &[&task_id, &one_task]).await;
}

#[actix::test]
async fn ready_answers_503_naming_redis_when_it_is_gone() {
    let mut redis = OwnRedis::start().await;
    let world = World::reading(examples_root());
    let names = Names::new();
    let port = free_port();
    let _daemon = Daemon::start(&world, &names, &redis.url(), &http_env(port));
    let api = Api::new(port);
    api.up().await;
    assert_eq!(api.get("/ready").await.0, StatusCode::OK);
    redis.kill();
    let (status, ready) = api.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["database"], "ok");
    assert_eq!(ready["checks"]["store"], "ok");
    let error = ready["error"].as_str().unwrap();
    assert!(error.starts_with("not ready: redis ("), "{error}");
    // Metrics still answer, saying what they could not read.
    let response = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("persona_ingest_up{dependency=\"redis\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("persona_ingest_up{dependency=\"database\"} 1"),
        "{text}"
    );
}
