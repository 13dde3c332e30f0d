//! A PostgreSQL server of a test's own (initdb in a temporary directory, its own port), for the
//! tests that stop and restart the database: the machine's shared server is never touched.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::free_port;

pub struct OwnPostgres {
    dir: tempfile::TempDir,
    pub port: u16,
}

/// The server binaries: Debian keeps them under /usr/lib/postgresql/<version>/bin.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .map(|dir| dir.join(name))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A server binary, to run as `postgres` when this process is root.
fn command(program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin(program));
        command
    } else {
        Command::new(bin(program))
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl OwnPostgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let server = Self {
            dir,
            port: free_port(),
        };
        server.run();
        server
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn run(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            path(self.dir.path())
        );
        let log = self.dir.path().join("server.log");
        run(
            "pg_ctl",
            &[
                "-D",
                path(&self.dir.path().join("data")),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once, dropping every connection, as a crash would.
    pub fn stop(&self) {
        run(
            "pg_ctl",
            &[
                "-D",
                path(&self.dir.path().join("data")),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Creates a database and answers its URL.
    pub async fn database(&self, name: &str) -> String {
        let admin = self.url("postgres");
        let db = sea_orm::Database::connect(&admin).await.unwrap();
        use sea_orm::ConnectionTrait;
        db.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        db.close().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.url(name)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = command("pg_ctl")
            .args(["-D", path(&data), "-m", "immediate", "stop"])
            .output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
