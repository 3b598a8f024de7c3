//! Requests that wait, sent first on a connection of their own (`src/parked.rs` serves those
//! without hyper's buffers), over a raw socket: what they answer, how the response is framed,
//! and that the connection goes on with hyper afterwards. Requests that are not plain are left
//! to hyper and answered as before. Each test has a daemon process of its own (`Solo`), so that
//! the count of requests served by `parked` in its metrics is the test's alone.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::servers::Solo;

/// One HTTP/1.1 connection, read by hand.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn open(app: &Solo) -> Self {
        let addr = app.daemon.base.trim_start_matches("http://");
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, request: &str) {
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    async fn fill(&mut self) {
        let mut more = [0u8; 4096];
        let n = self.stream.read(&mut more).await.unwrap();
        assert!(n > 0, "the connection closed early");
        self.buf.extend_from_slice(&more[..n]);
    }

    async fn head(&mut self) -> Head {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = r.parse(&self.buf).unwrap() {
                let head = Head {
                    status: r.code.unwrap(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8(h.value.to_vec()).unwrap(),
                            )
                        })
                        .collect(),
                };
                self.buf.drain(..len);
                return head;
            }
            self.fill().await;
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                self.buf.drain(..end + 2);
                return line;
            }
            self.fill().await;
        }
    }

    /// The next chunk of a chunked body; `None` after the last.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size = usize::from_str_radix(&self.line().await, 16).unwrap();
        let data = self.take(size).await;
        assert_eq!(self.line().await, "", "a chunk ends with CRLF");
        (size > 0).then_some(data)
    }

    /// A response with a `content-length` body.
    async fn response(&mut self) -> (Head, Value) {
        let head = self.head().await;
        assert_eq!(head.get("transfer-encoding"), None);
        let len: usize = head.get("content-length").unwrap().parse().unwrap();
        let body = self.take(len).await;
        (head, serde_json::from_slice(&body).unwrap())
    }
}

fn get(path: &str, key: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: authlink\r\nauthorization: Bearer {key}\r\n{extra}\r\n")
}

/// How many first requests `parked` served (the metric it counts them in).
async fn served_here(app: &Solo) -> u64 {
    app.api
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("authlink_http_parked_first_requests_total "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn cancel(app: &Solo, id: &str) {
    let r = app
        .api
        .delete(app.url(&format!("/v1/bots/acme/auth-sessions/{id}")))
        .bearer_auth(&app.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A daemon of the test's own, its operator key, and a pending session of `acme`/`crm`.
async fn started() -> (Solo, String, String) {
    let app = Solo::start("", &[]).await;
    let key = app.operator.clone();
    let id = app.new_session("u1").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (app, key, id)
}

#[tokio::test]
async fn a_long_poll_first_on_its_connection_is_answered_and_the_connection_goes_on() {
    let (app, key, id) = started().await;
    let mut raw = Raw::open(&app).await;
    let path = format!("/v1/bots/acme/auth-sessions/{id}");
    raw.send(&get(&format!("{path}?wait=30"), &key, "")).await;
    cancel(&app, &id).await;
    let (head, body) = raw.response().await;
    assert_eq!(head.status, 200);
    assert_eq!(body["status"], "cancelled");
    assert_eq!(head.get("content-type"), Some("application/json"));
    assert!(
        head.get("x-request-id").is_some(),
        "the router's layers ran"
    );
    assert!(head.get("date").is_some());
    assert_eq!(head.get("connection"), None);
    assert_eq!(served_here(&app).await, 1);
    // The same connection, now served by hyper.
    raw.send(&get(&path, &key, "")).await;
    let (head, again) = raw.response().await;
    assert_eq!(head.status, 200);
    assert_eq!(again, body);
    assert_eq!(served_here(&app).await, 1);
    // What the API answers a wrong key, here too.
    let mut raw = Raw::open(&app).await;
    raw.send(&get(&format!("{path}?wait=30"), "alk_wrong", ""))
        .await;
    let (head, problem) = raw.response().await;
    assert_eq!(head.status, 401, "{problem}");
    assert_eq!(head.get("content-type"), Some("application/problem+json"));
    assert_eq!(served_here(&app).await, 2);
}

#[tokio::test]
async fn an_event_stream_first_on_its_connection_is_chunked_to_its_end() {
    let (app, key, id) = started().await;
    let mut raw = Raw::open(&app).await;
    raw.send(&get(
        &format!("/v1/bots/acme/auth-sessions/{id}/events"),
        &key,
        "accept: text/event-stream\r\n",
    ))
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    assert_eq!(head.get("content-length"), None);
    let mut text = String::new();
    while !text.contains("pending") {
        text.push_str(&String::from_utf8(raw.chunk().await.unwrap()).unwrap());
    }
    cancel(&app, &id).await;
    while let Some(chunk) = raw.chunk().await {
        text.push_str(&String::from_utf8(chunk).unwrap());
    }
    let statuses: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["status"].to_string())
        .collect();
    assert_eq!(statuses.first().map(String::as_str), Some("\"pending\""));
    assert_eq!(statuses.last().map(String::as_str), Some("\"cancelled\""));
    assert_eq!(served_here(&app).await, 1);
    // The stream ended; the connection did not.
    raw.send(&get("/v1/bots/acme", &key, "")).await;
    assert_eq!(raw.response().await.0.status, 200);
}

#[tokio::test]
async fn an_agent_retry_first_on_its_connection_gets_its_body_and_honours_connection_close() {
    let app = Solo::start("", &[]).await;
    let key = app.operator.clone();
    let offer = app
        .api
        .post(app.url("/v1/bots/acme/integrations/crm/access-token"))
        .bearer_auth(&key)
        .json(&json!({"user_id": "u9", "authorize": {"mcp": {"protocol_version": "2025-11-25"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(offer.status(), StatusCode::NOT_FOUND);
    let offer: Value = offer.json().await.unwrap();
    let id = offer["session"]["id"].as_str().unwrap().to_owned();
    let body = json!({"user_id": "u9", "session_id": id, "wait": 30}).to_string();
    let mut raw = Raw::open(&app).await;
    raw.send(&format!(
        "POST /v1/bots/acme/integrations/crm/access-token HTTP/1.1\r\nhost: authlink\r\n\
         authorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    cancel(&app, &id).await;
    let (head, answer) = raw.response().await;
    assert_eq!(head.status, 410, "{answer}");
    assert_eq!(answer["session"]["id"], id.as_str());
    assert_eq!(head.get("connection"), Some("close"));
    let mut rest = Vec::new();
    raw.stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after the answer");
    assert_eq!(served_here(&app).await, 1);
}

#[tokio::test]
async fn a_first_request_that_is_not_plain_is_left_to_hyper() {
    let (app, key, id) = started().await;
    let path = format!("/v1/bots/acme/auth-sessions/{id}?wait=30");
    // Two lengths (a smuggling attempt): hyper refuses the request.
    let mut raw = Raw::open(&app).await;
    raw.send(&get(
        &path,
        &key,
        "content-length: 0\r\ncontent-length: 5\r\n",
    ))
    .await;
    assert_eq!(raw.head().await.status, 400);
    assert_eq!(served_here(&app).await, 0);
}
