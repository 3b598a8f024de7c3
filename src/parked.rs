//! Requests that wait — long-polls (`?wait=`), event streams, agent retries with `wait` — served
//! without hyper's per-connection state. hyper gives every connection an 8 KiB read buffer and
//! an 8 KiB write buffer and keeps both for the connection's life: the request head is written
//! into the first page of one, an event stream's response head into the first page of the
//! other. For a request that is answered at once that is nothing; for ten thousand requests
//! parked for a minute it was most of their memory (heap profile, `benches/run`).
//!
//! So when a connection's *first* request has arrived whole and is one that waits, it is read
//! here (peeked first: nothing is taken from the socket until it is decided), handed to the same
//! router (every layer: request id, tracing, metrics, timeout, body limit, rate limit), and its
//! response is written here, the body frame by frame (chunked when its length is unknown). The
//! buffers are temporary. The connection then goes on with hyper, as every other connection
//! does from the start. Anything unusual — an incomplete head, `Transfer-Encoding`, `Expect`,
//! `Upgrade`, a second `Content-Length`, more than 32 headers, not HTTP/1.1, over 8 KiB — is
//! left to hyper untouched, which answers it as it always did.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{self, HeaderName, HeaderValue, Request, Response, header};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::ReadHalf;

use crate::routes::limit::Peer;

/// The largest first request taken here, head and body.
const MAX_REQUEST: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What became of a connection's first request.
pub enum First {
    /// Not taken here (or taken and answered): hyper serves the connection from here on.
    Hyper(TcpStream),
    /// Answered here and closed (`Connection: close`, an error, or the client left).
    Closed,
}

/// How a connection is served here: the header read timeout before its first request, the
/// write-progress timeout while answering it.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub write: Duration,
}

/// Wait (at most the header timeout, and not past `closing`) for the connection's first bytes;
/// serve its first request here if it is one that waits.
pub async fn first_request(
    io: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    timeouts: Timeouts,
    closing: tokio_util::sync::CancellationToken,
) -> First {
    let first = tokio::time::timeout(timeouts.header, peek_request(&io, waits));
    let taken = tokio::select! {
        first = first => match first {
            // Nothing within the header timeout: hyper would drop it too.
            Err(_) => return First::Closed,
            Ok(None) => return First::Hyper(io),
            Ok(Some(taken)) => taken,
        },
        // Shutting down: a connection that has sent nothing is closed, as hyper closes idle ones.
        () = closing.cancelled() => return First::Closed,
    };
    serve(io, peer, app, taken, timeouts.write).await
}

/// How long a connection over the cap may take to send its first request head before it is
/// refused: probes send theirs at once, and the slots these connections use are few.
const OVER_CAP_WAIT: Duration = Duration::from_secs(2);

/// A connection beyond the daemon's connection cap (on one of the few health slots): its first
/// request is answered if it is `GET /healthz` or `GET /readyz` (then the connection closes), and
/// anything else gets `503` problem+json with `Retry-After`, and the connection closes. So a
/// probe sees the truth about a full daemon, and a client is told to come back instead of
/// waiting in the listen queue.
pub async fn over_capacity(io: TcpStream, peer: SocketAddr, app: axum::Router, write: Duration) {
    metrics::counter!("authlink_http_connections_over_cap_total").increment(1);
    let probe = tokio::time::timeout(OVER_CAP_WAIT, peek_request(&io, health)).await;
    if let Ok(Some(mut taken)) = probe {
        taken.close = true;
        serve(io, peer, app, taken, write).await;
        return;
    }
    refuse(io, write).await;
}

/// `503` and close, having read what the client sent so far (closing with unread bytes would
/// reset the connection, and the client might never see the answer).
async fn refuse(mut io: TcpStream, write: Duration) {
    let mut sink = [0u8; 1024];
    for _ in 0..MAX_REQUEST / sink.len() {
        match io.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let response = crate::error::problem(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "over_capacity",
        "the server holds as many connections as it may; retry shortly",
        serde_json::Map::new(),
    );
    let mut out = crate::bounds::WriteProgress::new(&mut io, write);
    if write_response(&mut out, response, false).await.is_ok() {
        let _ = out.shutdown().await;
    }
}

/// A first request that waits, parsed from what has arrived, and how many bytes it is.
struct Taken {
    request: Request<Body>,
    len: usize,
    close: bool,
}

/// The first request, if it has arrived whole and `wanted` takes it.
async fn peek_request(io: &TcpStream, wanted: Wanted) -> Option<Taken> {
    io.readable().await.ok()?;
    // Only once there is something to read, on the heap, and dropped before the request is
    // served: an idle or parked connection keeps none of it.
    let mut buf = vec![0u8; MAX_REQUEST];
    let n = io.peek(&mut buf).await.ok()?;
    parse_if(&buf[..n], wanted)
}

/// Which requests (method, target, body) are taken here.
type Wanted = fn(&str, &str, &[u8]) -> bool;

/// For the fuzz target: what `parse` takes of `buf`.
pub(crate) fn take(buf: &[u8]) -> Option<(usize, String, String)> {
    parse(buf).map(|t| {
        (
            t.len,
            t.request.method().to_string(),
            t.request.uri().to_string(),
        )
    })
}

/// For the fuzz target: what an over-cap connection's probe parser takes of `buf`.
pub(crate) fn take_probe(buf: &[u8]) -> Option<(usize, String, String)> {
    parse_if(buf, health).map(|t| {
        (
            t.len,
            t.request.method().to_string(),
            t.request.uri().to_string(),
        )
    })
}

fn parse(buf: &[u8]) -> Option<Taken> {
    parse_if(buf, waits)
}

fn parse_if(buf: &[u8], wanted: Wanted) -> Option<Taken> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = head.parse(buf).ok()? else {
        return None;
    };
    if head.version != Some(1) {
        return None;
    }
    let (method, path) = (head.method?, head.path?);
    let mut length = None;
    let mut close = false;
    for h in head.headers.iter() {
        let name = h.name;
        if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only, as hyper reads it (`usize::from_str` would also take a sign).
            if h.value.is_empty() || !h.value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: usize = std::str::from_utf8(h.value).ok()?.parse().ok()?;
            if length.replace(n).is_some() {
                return None;
            }
        }
        if name.eq_ignore_ascii_case("connection") {
            close |= std::str::from_utf8(h.value)
                .ok()?
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    // Checked: a Content-Length near `usize::MAX` would wrap (and panic with overflow checks).
    let body = buf.get(head_len..head_len.checked_add(length.unwrap_or(0))?)?;
    if !wanted(method, path, body) {
        return None;
    }
    let mut request = Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).ok()?)
        .uri(path)
        .version(http::Version::HTTP_11);
    let map = request.headers_mut()?;
    for h in head.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let request = request
        .body(Body::from(axum::body::Bytes::copy_from_slice(body)))
        .ok()?;
    Some(Taken {
        request,
        len: head_len + body.len(),
        close,
    })
}

/// The probes a full daemon still answers.
fn health(method: &str, target: &str, _body: &[u8]) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    method == "GET" && (path == "/healthz" || path == "/readyz")
}

/// Requests that may be held: a session's status with `wait=`, its event stream, an access-token
/// call whose body mentions `wait`. (A request taken here that does not wait after all is
/// answered all the same.)
fn waits(method: &str, target: &str, body: &[u8]) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with("/v1/bots/") {
        return false;
    }
    match method {
        "GET" if path.contains("/auth-sessions/") => {
            path.ends_with("/events") || query.split('&').any(|kv| kv.starts_with("wait="))
        }
        "POST" if path.ends_with("/access-token") => body.windows(6).any(|w| w == b"\"wait\""),
        _ => false,
    }
}

async fn serve(
    mut io: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    taken: Taken,
    write_timeout: Duration,
) -> First {
    let Taken {
        mut request,
        len,
        close,
    } = taken;
    // The bytes peeked are the request: take exactly those from the socket.
    {
        let mut consumed = vec![0u8; len];
        if io.read_exact(&mut consumed).await.is_err() {
            return First::Closed;
        }
    }
    metrics::counter!("authlink_http_parked_first_requests_total").increment(1);
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(Peer(peer)));
    let (mut read, write) = io.split();
    // A client that does not take its answer is dropped after the write timeout.
    let mut write = crate::bounds::WriteProgress::new(write, write_timeout);
    let response = tokio::select! {
        response = tower::ServiceExt::oneshot(app, request) => match response {
            Ok(response) => response,
            Err(never) => match never {},
        },
        // The client left while its request waited: drop it, as hyper does.
        () = left(&mut read) => return First::Closed,
    };
    let keep = !close
        && !response
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let written = tokio::select! {
        written = write_response(&mut write, response, keep) => written.is_ok(),
        () = left(&mut read) => false,
    };
    if written && keep {
        First::Hyper(io)
    } else {
        let _ = io.shutdown().await;
        First::Closed
    }
}

/// Resolves when the client closes its side (or the socket fails); never when it sends more
/// (a pipelined request is left in the socket for hyper).
async fn left(read: &mut ReadHalf<'_>) {
    let mut probe = [0u8; 1];
    match read.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// The response head, then its body: with `content-length` when the body knows its size,
/// else chunked (an event stream), frame by frame.
async fn write_response(
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    response: Response<Body>,
    keep: bool,
) -> std::io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let length = http_body::Body::size_hint(&body).exact();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue; // framing is ours
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // No framing for the statuses that never have a body (RFC 9110 §8.6).
    let bodiless = parts.status.is_informational()
        || parts.status == http::StatusCode::NO_CONTENT
        || parts.status == http::StatusCode::NOT_MODIFIED;
    match length {
        _ if bodiless => {}
        Some(n) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !keep {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    out.write_all(&head).await?;
    drop(head);
    out.flush().await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not sent
        };
        if data.is_empty() {
            continue;
        }
        if bodiless {
            continue;
        } else if length.is_some() {
            out.write_all(&data).await?;
        } else {
            let size = format!("{:x}\r\n", data.len());
            out.write_all(size.as_bytes()).await?;
            out.write_all(&data).await?;
            out.write_all(b"\r\n").await?;
        }
        out.flush().await?;
    }
    if length.is_none() && !bodiless {
        out.write_all(b"0\r\n\r\n").await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_plain_requests_that_wait_are_taken() {
        let get = |target: &str, extra: &str| {
            format!("GET {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n{extra}\r\n")
        };
        let events = "/v1/bots/acme/auth-sessions/0190/events";
        let taken = parse(get(events, "").as_bytes()).expect("an event stream");
        assert_eq!(taken.request.uri().path(), events);
        assert_eq!(taken.request.headers()["authorization"], "Bearer k");
        assert!(!taken.close);
        assert!(parse(get("/v1/bots/acme/auth-sessions/0190?wait=30", "").as_bytes()).is_some());
        assert!(
            parse(get(events, "connection: close\r\n").as_bytes())
                .unwrap()
                .close
        );
        // Not a wait, or not plain: hyper's.
        for not_taken in [
            get("/v1/bots/acme/auth-sessions/0190", ""),
            get("/v1/bots/acme/auth-sessions/0190?waited=1", ""),
            get("/healthz?wait=1", ""),
            get(events, "transfer-encoding: chunked\r\n"),
            get(events, "expect: 100-continue\r\n"),
            get(events, "upgrade: websocket\r\n"),
            get(events, "content-length: 0\r\ncontent-length: 0\r\n"),
            get(events, "content-length: +0\r\n"),
            // Found by the fuzzer: a length that wraps the end of the body past the head.
            get(events, "content-length: 18446744073709551608\r\n"),
            get(events, "").replace("HTTP/1.1", "HTTP/1.0"),
            get(events, "")[..40].to_owned(),
            get(events, &"x-a: b\r\n".repeat(MAX_HEADERS)),
        ] {
            assert!(parse(not_taken.as_bytes()).is_none(), "{not_taken:?}");
        }
        let post = |body: &str, sent: usize| {
            format!(
                "POST /v1/bots/acme/integrations/crm/access-token HTTP/1.1\r\ncontent-length: {}\r\n\r\n{}",
                body.len(),
                &body[..sent]
            )
        };
        let retry = r#"{"user_id":"u1","session_id":"x","wait":30}"#;
        let taken = parse(post(retry, retry.len()).as_bytes()).expect("an agent retry");
        assert_eq!(taken.len, post(retry, retry.len()).len());
        assert!(
            parse(post(retry, 10).as_bytes()).is_none(),
            "the body has not all arrived"
        );
        assert!(parse(post(r#"{"user_id":"u1"}"#, 16).as_bytes()).is_none());
    }
}
