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
    /// The server's `max_payload_size_bytes` (unset: its default, 40 MiB).
    max_payload_bytes: Option<usize>,
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
        Self::start_with(None).await
    }

    /// A server that refuses (413) any request body over `max_payload_bytes`.
    pub async fn start_with(max_payload_bytes: Option<usize>) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            data: tempfile::tempdir().unwrap(),
            max_payload_bytes,
        };
        server.run().await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn run(&mut self) {
        let mut command = Command::new(chroma_binary());
        command.arg("run");
        match self.max_payload_bytes {
            // Only a config file (`chroma run <file>`) sets the server's payload limit.
            Some(limit) => {
                let config = self.data.path().join("config.yaml");
                let yaml = format!(
                    "persist_path: \"{}\"\nport: {}\nlisten_address: \"127.0.0.1\"\nmax_payload_size_bytes: {limit}\n",
                    self.data.path().join("data").display(),
                    self.port
                );
                std::fs::write(&config, yaml).unwrap();
                command.arg(config);
            }
            None => {
                command
                    .args([
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &self.port.to_string(),
                        "--path",
                    ])
                    .arg(self.data.path());
            }
        }
        let child = command
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
