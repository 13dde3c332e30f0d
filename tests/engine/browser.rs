//! Headless Chromium over WebDriver for the dashboard's tests: Debian's `chromium` and
//! `chromium-driver` (which `scripts/test` installs when missing), one `chromedriver` a test on
//! a port of its own, sessions at a desktop's or a phone's size, with every network request the
//! page makes recorded (Chrome's performance log), scripts run in the page and screenshots
//! saved to `target/test-artifacts/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::free_port;
use crate::worker_kit::wait_for;

/// `chromedriver` on a port of its own; killed when dropped.
pub struct ChromeDriver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

/// How big the page is shown: a desktop window, or a phone's screen (Chrome's mobile
/// emulation, so the width is the phone's whatever the smallest window the platform allows).
#[derive(Clone, Copy, Debug)]
pub enum Screen {
    Desktop { width: u32, height: u32 },
    Phone { width: u32, height: u32 },
}

/// One browser session.
pub struct Session<'a> {
    driver: &'a ChromeDriver,
    id: String,
}

impl ChromeDriver {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test installs it)");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        wait_for("chromedriver", Duration::from_secs(30), || async {
            let status = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await;
            let status: Value = status.ok()?.json().await.ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    /// A headless Chromium session showing pages on `screen`.
    pub async fn session(&self, screen: Screen) -> Session<'_> {
        let mut options = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        });
        match screen {
            Screen::Desktop { width, height } => options["args"]
                .as_array_mut()
                .unwrap()
                .push(json!(format!("--window-size={width},{height}"))),
            Screen::Phone { width, height } => {
                options["mobileEmulation"] = json!({
                    "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0, "touch": true },
                });
            }
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "performance": "ALL" },
        }}});
        let session = self
            .call(reqwest::Method::POST, "/session", Some(capabilities))
            .await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_owned();
        Session { driver: self, id }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Session<'_> {
    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.id)
    }

    pub async fn goto(&self, url: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at("/url"),
                Some(json!({ "url": url })),
            )
            .await;
    }

    /// Sets the window's outer size (a desktop session's).
    pub async fn resize(&self, width: u32, height: u32) {
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at("/window/rect"),
                Some(json!({ "width": width, "height": height })),
            )
            .await;
    }

    /// Runs `script` (a function body) in the page and answers what it returns.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at("/execute/sync"),
                Some(json!({ "script": script, "args": args })),
            )
            .await
    }

    /// Waits until `script` returns something truthy; answers it.
    /// Waits until `script` returns something truthy; answers it. A script may return
    /// `{error: ...}` to say what it saw, shown if it never holds.
    pub async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        let started = std::time::Instant::now();
        loop {
            let value = self.run(script, args.clone()).await;
            let truthy =
                !matches!(&value, Value::Null | Value::Bool(false)) && value.get("error").is_none();
            if truthy {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: not within 60 s; last seen {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses each key in turn, as a keyboard would (WebDriver's key codes: `\u{E004}` Tab,
    /// `\u{E007}` Enter).
    pub async fn press(&self, keys: &[&str]) {
        let actions: Vec<Value> = keys
            .iter()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.driver
            .call(
                reqwest::Method::POST,
                &self.at("/actions"),
                Some(
                    json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] }),
                ),
            )
            .await;
    }

    /// Saves a screenshot to `target/test-artifacts/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self
            .driver
            .call(reqwest::Method::GET, &self.at("/screenshot"), None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let artifacts =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        std::fs::write(artifacts.join(format!("{name}.png")), png).unwrap();
    }

    /// Every URL the page asked for since the last call (Chrome's performance log).
    pub async fn requests(&self) -> Vec<String> {
        let log = self
            .driver
            .call(
                reqwest::Method::POST,
                &self.at("/se/log"),
                Some(json!({ "type": "performance" })),
            )
            .await;
        log.as_array()
            .unwrap_or_else(|| panic!("no performance log: {log}"))
            .iter()
            .filter_map(|entry| {
                let message: Value = serde_json::from_str(entry["message"].as_str()?).ok()?;
                let message = &message["message"];
                (message["method"] == "Network.requestWillBeSent")
                    .then(|| {
                        message["params"]["request"]["url"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .flatten()
            })
            .collect()
    }

    pub async fn close(self) {
        self.driver
            .call(reqwest::Method::DELETE, &self.at(""), None)
            .await;
    }
}
