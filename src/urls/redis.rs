//! Redis URLs as Celery takes them for its broker and result backend (kombu's Redis transport,
//! Celery's Redis backend), made into clients: `redis://[:password@]host[:port][/db]`,
//! `rediss://` with `ssl_cert_reqs` (`required`, `optional`, `none`, or Celery's `CERT_*`
//! spellings), `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile` in the query, `unix:///path`
//! and kombu's `redis+socket:///path?virtual_host=N`. What cannot be used is an error naming
//! why, for the setting's key to be named by the caller.

use redis::{Client, IntoConnectionInfo};

/// A client for `url` (no connection is made).
pub fn client(url: &str) -> Result<Client, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "not a URL (redis://, rediss://, unix:// or redis+socket://)".to_owned())?;
    match scheme {
        "redis" | "unix" | "redis+unix" => Client::open(url).map_err(|e| e.to_string()),
        "redis+socket" | "socket" => socket(rest),
        "rediss" => tls(rest),
        other => Err(format!(
            "scheme {other:?} is not one of redis, rediss, unix, redis+socket"
        )),
    }
}

/// The database number a URL names (0 when it names none).
pub fn db(url: &str) -> Result<i64, String> {
    let client = client(url)?;
    Ok(client.get_connection_info().redis_settings().db())
}

/// `redis+socket:///path?virtual_host=N` (kombu) as `unix:///path?db=N`.
fn socket(rest: &str) -> Result<Client, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("virtual_host" | "db", n)) => params.push(format!("db={n}")),
            Some(("password", p)) => params.push(format!("pass={p}")),
            _ => return Err(format!("query parameter {pair:?} is not understood")),
        }
    }
    let url = if params.is_empty() {
        format!("unix://{path}")
    } else {
        format!("unix://{path}?{}", params.join("&"))
    };
    Client::open(url.as_str()).map_err(|e| e.to_string())
}

/// `rediss://...?ssl_cert_reqs=...&ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...`.
fn tls(rest: &str) -> Result<Client, String> {
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (mut verify, mut ca, mut cert, mut key) = (true, None, None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let read = |what: &str| std::fs::read(value).map_err(|e| format!("{what} {value}: {e}"));
        match name {
            "ssl_cert_reqs" => {
                verify = match value {
                    "required" | "CERT_REQUIRED" => true,
                    "optional" | "CERT_OPTIONAL" | "none" | "CERT_NONE" => false,
                    other => {
                        return Err(format!(
                            "ssl_cert_reqs {other:?} is not one of required, optional, none"
                        ))
                    }
                }
            }
            "ssl_ca_certs" => ca = Some(read("ssl_ca_certs")?),
            "ssl_certfile" => cert = Some(read("ssl_certfile")?),
            "ssl_keyfile" => key = Some(read("ssl_keyfile")?),
            _ => kept.push(pair),
        }
    }
    let mut url = format!("rediss://{address}");
    if !kept.is_empty() {
        url = format!("{url}?{}", kept.join("&"));
    }
    if !verify {
        // Celery's `optional` checks a certificate only if one is presented; rustls cannot,
        // so it is taken as `none`.
        url.push_str("#insecure");
    }
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let client_tls = match (cert, key) {
        (Some(client_cert), Some(client_key)) => Some(redis::ClientTlsConfig {
            client_cert,
            client_key,
        }),
        (None, None) => None,
        _ => return Err("ssl_certfile and ssl_keyfile go together".into()),
    };
    if ca.is_none() && client_tls.is_none() {
        return Client::open(info).map_err(|e| e.to_string());
    }
    Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert: ca,
        },
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_celery_takes_them() {
        assert_eq!(db("redis://:secret@127.0.0.1:6379/3").unwrap(), 3);
        assert_eq!(
            db("redis+socket:///run/redis.sock?virtual_host=2").unwrap(),
            2
        );
        assert_eq!(db("unix:///run/redis.sock?db=4").unwrap(), 4);
        assert!(client("rediss://127.0.0.1:6380/0?ssl_cert_reqs=CERT_NONE").is_ok());
        assert!(client("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none").is_ok());
        for (bad, says) in [
            ("amqp://guest@localhost//", "scheme \"amqp\""),
            ("127.0.0.1:6379", "not a URL"),
            (
                "rediss://h/0?ssl_cert_reqs=maybe",
                "ssl_cert_reqs \"maybe\"",
            ),
            (
                "rediss://h/0?ssl_ca_certs=/no/such/ca.pem",
                "ssl_ca_certs /no/such/ca.pem",
            ),
            ("redis+socket:///s?color=red", "\"color=red\""),
        ] {
            let error = client(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
