//! Resource bounds (`[limits]`) against a real `authlink` process started with a low descriptor
//! limit (256, soft and hard, set by `prlimit` on the child): one key waiting on more sessions
//! than its bound, a flood of connections over the cap, a client that pipelines requests and
//! never reads the answers, an event stream at its maximum lifetime. In every case the caller is
//! told (429/503 problem+json with `Retry-After`, or a closed connection) and `/healthz` answers.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::servers::{Daemon, free_port};

/// A hang guard (a daemon that never does what is awaited fails the test instead of blocking
/// it), not a timing threshold: each awaited end comes within a second or two of its setting.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The child's descriptor limit: low, as on a small container, so that a flood that is not
/// bounded would exhaust it.
const NOFILE: u32 = 256;

/// A daemon process on the embedded store with `limits` (TOML of the `[limits]` section and
/// any after it), bot `acme` and its Salesforce integration `crm`.
struct Bounded {
    daemon: Daemon,
    operator: String,
    api: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Bounded {
    async fn start(sections: &str) -> Self {
        let keys = authlink::config::GeneratedKeys::new();
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("authlink.toml");
        std::fs::write(
            &config,
            format!(
                r#"public_url = "http://127.0.0.1:{port}"
[keys]
signing = ["{}"]
encryption = ["{}"]
operator_key_sha256 = "{}"
[system_apps.salesforce]
client_id = "cid"
client_secret = "secret"
login_host = "http://127.0.0.1:9"
{sections}
"#,
                keys.signing, keys.encryption, keys.operator_key_sha256
            ),
        )
        .unwrap();
        let child = Command::new("prlimit")
            .arg(format!("--nofile={NOFILE}:{NOFILE}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_authlink"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("AUTHLINK__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit (util-linux) runs the authlink binary");
        let daemon = Daemon {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        // One connection per call: the tests count the daemon's connections, so none is kept
        // idle in a pool.
        let api = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        crate::helpers::until_async_within(Duration::from_secs(20), || async {
            api.get(format!("{}/readyz", daemon.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        let b = Self {
            daemon,
            operator: secrecy::ExposeSecret::expose_secret(&keys.operator_key).to_owned(),
            api,
            _dir: dir,
        };
        for (path, body) in [
            ("/v1/bots/acme", json!({"name": "acme"})),
            (
                "/v1/bots/acme/integrations/crm",
                json!({"provider": "salesforce"}),
            ),
        ] {
            let r = b
                .call(reqwest::Method::PUT, path, &b.operator, Some(body))
                .await;
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
        b
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.daemon.base)
    }

    fn addr(&self) -> &str {
        self.daemon.base.trim_start_matches("http://")
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self.api.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

    async fn runtime_key(&self) -> String {
        let r = self
            .call(
                reqwest::Method::POST,
                "/v1/bots/acme/api-keys",
                &self.operator,
                Some(json!({"role": "runtime"})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn new_session(&self, user: &str) -> String {
        let r = self
            .call(
                reqwest::Method::POST,
                "/v1/bots/acme/auth-sessions",
                &self.operator,
                Some(json!({"integration": "crm", "user_id": user})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// An event stream of session `id`, opened with `key`; its first event read (so the daemon
    /// holds it) when the answer is 200.
    async fn stream(&self, key: &str, id: &str) -> reqwest::Response {
        let mut r = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/bots/acme/auth-sessions/{id}/events"),
                key,
                None,
            )
            .await;
        if r.status() == StatusCode::OK {
            let first = r.chunk().await.unwrap().expect("a first event");
            assert!(String::from_utf8_lossy(&first).contains("pending"));
        }
        r
    }

    async fn healthz(&self) -> StatusCode {
        self.api
            .get(self.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// The status, the head (lower-cased) and the body of the answer to one request sent on `conn`
/// (its body framed by `content-length`).
async fn exchange(conn: &mut TcpStream, request: &str) -> (u16, String, String) {
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(HANG_GUARD, conn.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while got.len() < head_end + length {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed in the body");
        got.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + length]).into_owned();
    (status, head, body)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: authlink\r\n\r\n")
}

/// One runtime key holding as many event streams as `limits.waits_per_key` allows: its next
/// stream and its next long-poll get 429 problem+json with `Retry-After`; another key of the same
/// bot still waits; `/healthz` answers; and a stream that ends gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_waiting_past_its_bound_gets_429_while_healthz_answers() {
    let b = Bounded::start("[limits]\nwaits_per_key = 3\nwaits_per_bot = 10").await;
    let (k1, k2) = (b.runtime_key().await, b.runtime_key().await);
    let mut sessions = Vec::new();
    for u in 0..5 {
        sessions.push(b.new_session(&format!("u{u}")).await);
    }
    let mut held = Vec::new();
    for id in &sessions[..3] {
        let r = b.stream(&k1, id).await;
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
    }

    let over = b.stream(&k1, &sessions[3]).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(over.headers().contains_key("retry-after"));
    assert_eq!(over.headers()["content-type"], "application/problem+json");
    let problem: Value = over.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_waiting");
    let poll = b
        .call(
            reqwest::Method::GET,
            &format!("/v1/bots/acme/auth-sessions/{}?wait=30", sessions[3]),
            &k1,
            None,
        )
        .await;
    assert_eq!(poll.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(poll.headers().contains_key("retry-after"));
    // A plain status read does not wait: never limited.
    let read = b
        .call(
            reqwest::Method::GET,
            &format!("/v1/bots/acme/auth-sessions/{}", sessions[3]),
            &k1,
            None,
        )
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    // Another key of the bot has its own bound.
    let other = b.stream(&k2, &sessions[4]).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(b.healthz().await, StatusCode::OK);

    // The session of one held stream is cancelled: that stream ends, and its place is free.
    let cancelled = b
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{}", sessions[0]),
            &k1,
            None,
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let mut ended = held.remove(0);
    tokio::time::timeout(HANG_GUARD, async {
        while ended.chunk().await.unwrap().is_some() {}
    })
    .await
    .expect("the cancelled session's stream ended");
    let again = b.stream(&k1, &sessions[3]).await;
    assert_eq!(again.status(), StatusCode::OK);
}

/// More connections than `limits.max_connections`: the ones over the cap are answered 503
/// problem+json with `Retry-After` (not left in the listen queue, not a daemon out of
/// descriptors), while `/healthz` and `/readyz` still answer on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_over_the_cap_gets_503_while_health_answers() {
    let b =
        Bounded::start("[limits]\nmax_connections = 20\n[http]\nheader_read_timeout_ms = 60000")
            .await;
    let mut held = Vec::new();
    let mut refused = None;
    // Each connection is answered before the next opens, and stays open: the daemon holds it.
    for _ in 0..40 {
        let mut conn = TcpStream::connect(b.addr()).await.unwrap();
        let answer = exchange(&mut conn, &get("/no-such-page")).await;
        if answer.0 == 503 {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.0, 404);
        held.push(conn);
    }
    let (_, head, body) = refused.expect("a connection over the cap was refused");
    assert!(held.len() <= 20, "{} connections served", held.len());
    assert!(head.contains("\r\nretry-after: "), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "over_capacity"
    );
    // Still full, and the probes get through.
    for probe in ["/healthz", "/readyz"] {
        let mut conn = TcpStream::connect(b.addr()).await.unwrap();
        let (status, _, _) = exchange(&mut conn, &get(probe)).await;
        assert_eq!(status, 200, "{probe}");
    }
    let mut conn = TcpStream::connect(b.addr()).await.unwrap();
    assert_eq!(exchange(&mut conn, &get("/no-such-page")).await.0, 503);
}

/// A client that pipelines `GET /openapi.json` and never reads the answers: once its socket
/// buffers are full, the daemon's writes make no progress, and after
/// `limits.write_timeout_seconds` the daemon closes the connection (the client's next write
/// fails) instead of holding it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_pipelines_and_never_reads_is_disconnected() {
    let b = Bounded::start("[limits]\nwrite_timeout_seconds = 1").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window: the answers fill it (and the daemon's send buffer) quickly.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(b.addr().parse().unwrap()).await.unwrap();
    let request = get("/openapi.json").repeat(16);
    let closed = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Err(e) = conn.write_all(request.as_bytes()).await {
                return e;
            }
        }
    })
    .await
    .expect("the daemon closed the connection of a client that does not read");
    assert!(
        matches!(
            closed.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{closed}"
    );
    assert_eq!(b.healthz().await, StatusCode::OK);
}

/// An event stream ends cleanly at `limits.event_stream_max_seconds` although its session is
/// still pending; its first event told the client to reconnect (`retry:`), and a new stream
/// starts with the current status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_ends_at_its_max_lifetime() {
    let b = Bounded::start("[limits]\nevent_stream_max_seconds = 1").await;
    let id = b.new_session("u1").await;
    let mut stream = b
        .call(
            reqwest::Method::GET,
            &format!("/v1/bots/acme/auth-sessions/{id}/events"),
            &b.operator,
            None,
        )
        .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let mut text = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.extend_from_slice(&chunk);
        }
    })
    .await
    .expect("the stream ended at its maximum lifetime");
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("retry:"), "{text}");
    assert!(text.contains("\"pending\""), "{text}");
    let status: Value = b
        .call(
            reqwest::Method::GET,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &b.operator,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "pending", "the session did not settle");
    let again = b.stream(&b.operator, &id).await;
    assert_eq!(again.status(), StatusCode::OK);
}

/// A keep-alive connection left idle after its answer is closed after the header read timeout
/// (hyper restarts that timer when a connection goes idle): idle clients do not hold
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let b = Bounded::start("[http]\nheader_read_timeout_ms = 500").await;
    let mut conn = TcpStream::connect(b.addr()).await.unwrap();
    assert_eq!(exchange(&mut conn, &get("/healthz")).await.0, 200);
    let mut rest = Vec::new();
    tokio::time::timeout(HANG_GUARD, conn.read_to_end(&mut rest))
        .await
        .expect("the idle connection was closed")
        .unwrap();
    assert!(rest.is_empty());
}
