//! A token-checking proxy in front of a server of a test's own. `chroma run` (Chroma 1.5) has no
//! authentication of its own (its token settings are ignored): deployments that want one put a
//! proxy in front, and Chroma's clients send the token as `Authorization: Bearer` or
//! `X-Chroma-Token`. This one answers 401 to a connection whose first request carries neither,
//! and pipes the others to the server unchanged.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct AuthProxy {
    pub url: String,
    /// Requests refused for want of the token.
    pub refused: Arc<AtomicUsize>,
}

impl AuthProxy {
    /// Listens on a free loopback port; forwards to `upstream` (`host:port`) what carries `token`.
    pub fn start(upstream: String, token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let refused = Arc::new(AtomicUsize::new(0));
        let accepted = [
            format!("authorization: bearer {}", token.to_lowercase()),
            format!("x-chroma-token: {}", token.to_lowercase()),
        ];
        let counter = refused.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, accepted, counter) =
                    (upstream.clone(), accepted.clone(), counter.clone());
                std::thread::spawn(move || serve(client, &upstream, &accepted, &counter));
            }
        });
        Self { url, refused }
    }
}

fn serve(client: TcpStream, upstream: &str, accepted: &[String], refused: &AtomicUsize) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = Vec::new();
    let mut authorised = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        authorised |= accepted.iter().any(|a| line.trim().to_lowercase() == *a);
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut client_out = client;
    if !authorised {
        refused.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"error":"AuthError","message":"Unauthorized"}"#;
        let _ = write!(
            client_out,
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    server.write_all(&head).unwrap();
    let buffered = reader.buffer().to_vec();
    server.write_all(&buffered).unwrap();
    let mut server_in = server.try_clone().unwrap();
    let mut rest = reader.into_inner();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut rest, &mut server_in);
    });
    let _ = std::io::copy(&mut server, &mut client_out);
    let _ = client_out.flush();
}
