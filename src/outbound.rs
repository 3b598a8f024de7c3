//! Calls to other servers, and the one way their answers are read. Provider, issuer and channel
//! URLs are set by tenants, so no answer is trusted to be small: a body is read chunk by chunk
//! up to a cap (`http.max_response_body_bytes`) and abandoned at the cap, so a server that
//! streams gigabytes costs at most the cap (a token URL streaming 1.5 GB took the daemon from
//! 20 MB to 3.1 GB before).
//!
//! [`HttpClient`] is the client every outbound call goes through; it carries the cap, and its
//! [`HttpClient::body`] / [`HttpClient::json`] are the readers. reqwest's own readers (`bytes`,
//! `text`, `json`, `chunk`, `bytes_stream`) are refused elsewhere by clippy (`clippy.toml`), so
//! a new call cannot read an answer whole by accident.

use std::fmt;

use reqwest::{IntoUrl, Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

/// The default for `http.max_response_body_bytes`: far above any token, identity, discovery,
/// JWKS or chat API answer (a few KiB), far below what would hurt the daemon.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1 << 20;

/// The outbound HTTP client: reqwest's (no redirects, bounded time, the resolver its builder
/// chose), with the cap on what is read of an answer. Cheap to clone (one reference count).
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    max_body: usize,
}

impl HttpClient {
    pub fn new(client: reqwest::Client, max_body: usize) -> Self {
        Self { client, max_body }
    }

    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.client.post(url)
    }

    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder {
        self.client.put(url)
    }

    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// The answer's body, up to the cap.
    pub async fn body(&self, response: Response) -> Result<Vec<u8>, BodyError> {
        read_body(response, self.max_body).await
    }

    /// The answer's body as JSON, up to the cap.
    pub async fn json<T: DeserializeOwned>(&self, response: Response) -> Result<T, BodyError> {
        let body = self.body(response).await?;
        serde_json::from_slice(&body).map_err(BodyError::Json)
    }
}

/// Why an answer's body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the cap (said by `Content-Length`, or found while reading): what was read is
    /// dropped, and the connection with it.
    #[error("the answer exceeded {}", Size(*limit))]
    TooLarge { limit: usize },
    /// The connection failed or timed out mid-body.
    #[error("the answer could not be read: {0}")]
    Read(reqwest::Error),
    #[error("the answer is not the expected JSON: {0}")]
    Json(serde_json::Error),
}

/// `response`'s body, at most `limit` bytes. `Content-Length` refuses an announced oversize
/// before anything is read; it is not relied on otherwise (chunked answers have none), so the
/// count is kept while reading and the read stops at the first chunk past the limit.
// The one caller of reqwest's chunk reader (clippy.toml refuses it everywhere else).
#[allow(clippy::disallowed_methods)]
pub async fn read_body(mut response: Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    // The announced length only sizes the buffer, and never past the cap.
    let mut body = Vec::with_capacity(announced.map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(e.without_url()))?
    {
        if chunk.len() > limit - body.len() {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A byte count as an operator writes it: `1 MiB`, `64 KiB`, `1000 bytes`.
pub struct Size(pub usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on loopback that answers one request with `head`, `body` `times` times, then
    /// `tail`; its socket stays open until the reader goes.
    async fn answer(head: &'static str, body: Vec<u8>, times: usize, tail: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            socket.write_all(head.as_bytes()).await.unwrap();
            for _ in 0..times {
                if socket.write_all(&body).await.is_err() {
                    return;
                }
            }
            let _ = socket.write_all(tail.as_bytes()).await;
            // Hold the connection: a reader waiting for more than was sent would hang here.
            let _ = socket.read(&mut request).await;
        });
        url
    }

    async fn read(url: &str, limit: usize) -> Result<Vec<u8>, BodyError> {
        let response = reqwest::get(url).await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read_body(response, limit),
        )
        .await
        .expect("the read ends without the rest of the body")
    }

    /// One chunk of a chunked body: 1 KiB of `a`.
    fn kib_chunk() -> Vec<u8> {
        let mut chunk = b"400\r\n".to_vec();
        chunk.extend([b'a'; 1024]);
        chunk.extend(b"\r\n");
        chunk
    }

    const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";

    #[tokio::test]
    async fn an_announced_oversize_is_refused_before_reading() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1500000000\r\n\r\n";
        let url = answer(head, Vec::new(), 0, "").await;
        assert!(matches!(
            read(&url, 1 << 20).await,
            Err(BodyError::TooLarge { limit: 1048576 })
        ));
    }

    #[tokio::test]
    async fn an_unannounced_body_stops_at_the_cap_and_one_of_exactly_the_cap_is_read() {
        let endless = answer(CHUNKED, kib_chunk(), usize::MAX, "").await;
        assert!(matches!(
            read(&endless, 64 * 1024).await,
            Err(BodyError::TooLarge { limit: 65536 })
        ));
        let exact = answer(CHUNKED, kib_chunk(), 64, "0\r\n\r\n").await;
        assert_eq!(
            read(&exact, 64 * 1024).await.unwrap(),
            vec![b'a'; 64 * 1024]
        );
        let over = answer(CHUNKED, kib_chunk(), 65, "0\r\n\r\n").await;
        assert!(matches!(
            read(&over, 64 * 1024).await,
            Err(BodyError::TooLarge { .. })
        ));
    }

    #[test]
    fn sizes_read_as_an_operator_writes_them() {
        assert_eq!(Size(1 << 20).to_string(), "1 MiB");
        assert_eq!(Size(3 << 20).to_string(), "3 MiB");
        assert_eq!(Size(64 << 10).to_string(), "64 KiB");
        assert_eq!(Size(1_000_000).to_string(), "1000000 bytes");
        assert_eq!(
            BodyError::TooLarge { limit: 1 << 20 }.to_string(),
            "the answer exceeded 1 MiB"
        );
    }
}
