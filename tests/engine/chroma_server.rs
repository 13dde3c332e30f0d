//! A Chroma server of a test's own: `chroma run` from the project's virtualenv (made by
//! `scripts/python-env`) on a free loopback port, with its data in a temporary folder; killed
//! when dropped. A test may stop and start it again on the same port and data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::free_port;

pub struct ChromaServer {
    child: Option<Child>,
    port: u16,
    data: TempDir,
}

fn chroma_binary() -> PathBuf {
    let path = std::env::var_os("PERSONA_INGEST_CHROMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/chroma"));
    assert!(
        path.exists(),
        "no Chroma server at {}: run scripts/python-env (scripts/test does)",
        path.display()
    );
    path
}

impl ChromaServer {
    pub async fn start() -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            data: tempfile::tempdir().unwrap(),
        };
        server.run().await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn run(&mut self) {
        let child = Command::new(chroma_binary())
            .args([
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--path",
            ])
            .arg(self.data.path())
            .env("ANONYMIZED_TELEMETRY", "False")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let heartbeat = format!("{}/api/v2/heartbeat", self.url());
        for _ in 0..300 {
            if let Ok(response) = reqwest::get(&heartbeat).await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Chroma did not answer at {heartbeat} within 30 s");
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        self.stop();
    }
}
