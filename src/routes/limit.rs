//! Rate limits at the edge, before any handler: API calls per key (runtime and admin keys
//! separately, the operator key on its own), API calls without a valid key per client
//! address (key guessing), the browser's pages per client address (link tokens, callbacks,
//! console sign-in). One atomic store step per request (GCRA, shared by every replica) — or, for
//! a key this replica serves at a high rate, one step per few requests (`domain::rate::Permits`:
//! the store never grants more than the quota, so the shared limit is exact either way). Limited
//! requests get `429` with `Retry-After`; every limited class answers with the IETF `RateLimit`
//! and `RateLimit-Policy` headers. The webhook and channel workers send, they are never limited.
//! A store that cannot answer does not stop traffic (fail open, counted).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::pages::{Lang, Msg, Page};
use crate::config::RateLimits;
use crate::crypto::{ct_eq, sha256_hex};
use crate::domain::bot::KeyRole;
use crate::domain::rate::{Quota, Verdict};
use crate::error::ApiError;
use crate::flow::AppState;

/// The address a connection came from (`ConnectInfo<Peer>`, set by the server), for
/// per-client limits.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::SocketAddr);

/// What one request counts against.
struct Bucket {
    class: &'static str,
    id: String,
    quota: Quota,
    /// A person's browser: answer with a page, not problem+json.
    browser: bool,
}

fn per_minute(limit: u32) -> Quota {
    Quota {
        limit,
        window: std::time::Duration::from_secs(60),
    }
}

/// The client's address: the connection's, or behind `trusted_proxy_hops` proxies the
/// `X-Forwarded-For` entry that many places from its end (the address the nearest trusted proxy
/// saw). A header it cannot use falls back to the connection's address.
fn client_address(limits: &RateLimits, req: &Request) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.0.ip());
    let forwarded = (limits.trusted_proxy_hops > 0)
        .then(|| forwarded_for(req.headers(), limits.trusted_proxy_hops))
        .flatten();
    forwarded.or(peer)
}

fn forwarded_for(headers: &HeaderMap, hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let at = entries.len().checked_sub(hops)?;
    entries[at].parse().ok()
}

/// What the limiter needs of a request, read before any await (a request body is not `Sync`).
struct Seen {
    path: String,
    post: bool,
    bearer: Option<String>,
    /// Made text only for the limits that count by address.
    client: Option<IpAddr>,
}

fn seen(limits: &RateLimits, req: &Request) -> Seen {
    let bearer = super::auth::bearer(req.headers()).map(str::to_owned);
    Seen {
        path: req.uri().path().to_owned(),
        post: req.method() == Method::POST,
        bearer,
        client: client_address(limits, req),
    }
}

/// The bucket a request counts against, and the caller its key proved (handed to the `Caller`
/// extractor, so that the key is hashed and looked up once per request).
async fn bucket(state: &AppState, r: Seen) -> (Option<Bucket>, Option<Caller>) {
    let limits = &state.config.rate_limits;
    let path = r.path.as_str();
    let by_address = |class, limit, browser| Bucket {
        class,
        id: r
            .client
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        quota: per_minute(limit),
        browser,
    };
    if path.starts_with("/l/") || path.starts_with("/oauth/") {
        return (
            Some(by_address("browser", limits.browser_per_minute, true)),
            None,
        );
    }
    if path == "/console/sign-in" && r.post {
        return (
            Some(by_address("sign_in", limits.sign_in_per_minute, true)),
            None,
        );
    }
    if !path.starts_with("/v1/") {
        return (None, None);
    }
    let unauthenticated =
        || by_address("unauthenticated", limits.unauthenticated_per_minute, false);
    let Some(key) = &r.bearer else {
        return (Some(unauthenticated()), None);
    };
    let hash = sha256_hex(key.as_bytes());
    if ct_eq(&hash, &state.config.operator_key_sha256) {
        let bucket = Bucket {
            class: "operator",
            id: "operator".into(),
            quota: per_minute(limits.operator_per_minute),
            browser: false,
        };
        return (Some(bucket), Some(Caller::Operator));
    }
    match state.store.find_api_key(&hash).await {
        Ok(Some(k)) => {
            let (class, limit) = match k.role {
                KeyRole::Admin => ("admin", limits.admin_per_minute),
                KeyRole::Runtime => ("runtime", limits.runtime_per_minute),
            };
            let bucket = Bucket {
                class,
                id: k.id.clone(),
                quota: per_minute(limit),
                browser: false,
            };
            (Some(bucket), Some(Caller::Bot(k)))
        }
        Ok(None) => (Some(unauthenticated()), None),
        Err(_) => (None, None),
    }
}

/// The middleware, as a tower layer: its future is small and unboxed (a from_fn middleware's
/// future holds the whole request twice for as long as the request runs, a long-poll's for
/// minutes). Rate limits off: the request goes straight through.
#[derive(Clone)]
pub struct RateLimitLayer {
    state: AppState,
}

impl RateLimitLayer {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    state: AppState,
}

impl<S> tower::Service<Request> for RateLimit<S>
where
    S: tower::Service<Request, Response = Response> + Clone,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Limited<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !self.state.config.rate_limits.enabled {
            return Limited::Running {
                inner: self.inner.call(req),
                headers: None,
            };
        }
        // The service that was made ready goes with the request; a clone stays for the next.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let seen = seen(&self.state.config.rate_limits, &req);
        Limited::Deciding {
            decision: Box::pin(decide(self.state.clone(), seen)),
            req: Some(req),
            inner,
        }
    }
}

/// The limiter's answer for a request: its bucket and verdict, or `None` (not limited, or the
/// store could not say: let through); and the caller its key proved, if any.
type Decision = (Option<(Bucket, Verdict)>, Option<Caller>);

pin_project_lite::pin_project! {
    /// Deciding (boxed, and gone once decided), then the request running with the headers to
    /// add to its response.
    #[project = LimitedProj]
    pub enum Limited<S, F> {
        Deciding {
            decision: std::pin::Pin<Box<dyn Future<Output = Decision> + Send>>,
            req: Option<Request>,
            inner: S,
        },
        Running {
            #[pin]
            inner: F,
            headers: Option<(Bucket, Verdict)>,
        },
    }
}

impl<S> Future for Limited<S, S::Future>
where
    S: tower::Service<Request, Response = Response>,
{
    type Output = Result<Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                LimitedProj::Deciding {
                    decision,
                    req,
                    inner,
                } => {
                    let (decided, caller) = ready!(decision.as_mut().poll(cx));
                    let mut req = req
                        .take()
                        .expect("a deciding request is there until decided");
                    if let Some(caller) = caller {
                        req.extensions_mut().insert(super::auth::Proven(caller));
                    }
                    let running = match decided {
                        None => Limited::Running {
                            inner: inner.call(req),
                            headers: None,
                        },
                        Some((b, verdict)) if verdict.allowed => Limited::Running {
                            inner: inner.call(req),
                            headers: Some((b, verdict)),
                        },
                        Some((b, verdict)) => {
                            metrics::counter!("authlink_rate_limited_total", "class" => b.class)
                                .increment(1);
                            tracing::info!(class = b.class, "rate limited");
                            let mut resp = refused(&b, &verdict, Lang::pick(None, req.headers()));
                            set_headers(resp.headers_mut(), &b, &verdict);
                            return Poll::Ready(Ok(resp));
                        }
                    };
                    self.set(running);
                }
                LimitedProj::Running { inner, headers } => {
                    let mut resp = ready!(inner.poll(cx))?;
                    if let Some(h) = headers.take() {
                        set_headers(resp.headers_mut(), &h.0, &h.1);
                    }
                    return Poll::Ready(Ok(resp));
                }
            }
        }
    }
}

/// The bucket a request counts against and one step of its limit.
async fn decide(state: AppState, r: Seen) -> Decision {
    let (b, caller) = bucket(&state, r).await;
    let Some(b) = b else { return (None, caller) };
    let key = [b.class, ":", &b.id].concat();
    match verdict(&state, &key, b.quota).await {
        Ok(v) => (Some((b, v)), caller),
        Err(e) => {
            metrics::counter!("authlink_rate_limit_errors_total").increment(1);
            tracing::warn!(error = %e, "rate limit unavailable; request let through");
            (None, caller)
        }
    }
}

/// A permit this replica already holds for `key`, or one store step (taking a few more when the
/// key is busy, while the requests that find none meanwhile wait for them).
async fn verdict(
    state: &AppState,
    key: &str,
    quota: Quota,
) -> Result<Verdict, crate::store::StoreError> {
    use crate::domain::rate::Next;
    // Waiting is bounded: after this many batches went by without a permit left over (a
    // crowd larger than a batch), a request asks the store itself.
    let mut waits = 2;
    let (want, batch) = loop {
        let now = std::time::Instant::now();
        if let Some(v) = state.permits.take(key, now) {
            return Ok(v);
        }
        match state.permits.next(key, quota, now) {
            Next::Wait(batch) if waits > 0 => {
                waits -= 1;
                batch.done().await;
            }
            Next::Wait(_) => break (1, None),
            Next::Ask { want, batch } => break (want, batch),
        }
    };
    let v = match state
        .store
        .rate_limit(key, quota, state.clock.now(), want)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            state.permits.abandon(key);
            return Err(e);
        }
    };
    state.permits.granted(key, &v, std::time::Instant::now());
    drop(batch);
    Ok(v)
}

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn seconds(d: std::time::Duration) -> u64 {
    d.as_millis().div_ceil(1000) as u64
}

fn refused(b: &Bucket, v: &Verdict, lang: Lang) -> Response {
    let wait = seconds(v.reset).max(1);
    let mut resp = if b.browser {
        let mut page = Page::new(
            StatusCode::TOO_MANY_REQUESTS,
            lang,
            Msg::TooManyTitle,
            Msg::TooManyBody,
        );
        page.vars.push(("seconds", wait.to_string()));
        page.into_response()
    } else {
        ApiError::TooManyRequests(wait).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers): the quota, and
/// what is left of it with the seconds until it is whole (or, refused, until the next request).
/// Put together by hand: on every API response, `format!` and a header name parsed from text
/// each time were a visible cost.
fn set_headers(h: &mut HeaderMap, b: &Bucket, v: &Verdict) {
    let mut n = itoa::Buffer::new();
    let mut value = String::with_capacity(48);
    let mut quoted = |value: &mut String, parts: [(&str, u64); 2]| {
        value.clear();
        value.push('"');
        value.push_str(b.class);
        value.push('"');
        for (key, number) in parts {
            value.push_str(key);
            value.push_str(n.format(number));
        }
        HeaderValue::from_str(value)
    };
    let policy = [
        (";q=", u64::from(b.quota.limit)),
        (";w=", b.quota.window.as_secs()),
    ];
    if let Ok(policy) = quoted(&mut value, policy) {
        h.insert(RATELIMIT_POLICY, policy);
    }
    let now = [(";r=", u64::from(v.remaining)), (";t=", seconds(v.reset))];
    if let Ok(now) = quoted(&mut value, now) {
        h.insert(RATELIMIT, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_entry_the_nearest_trusted_proxy_added() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        // client (spoofed 6.6.6.6 first), then the CDN saw 1.2.3.4, the LB saw the CDN 10.0.0.2.
        assert_eq!(forwarded_for(&h, 1), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(forwarded_for(&h, 2), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(forwarded_for(&h, 4), None);
        let mut bad = HeaderMap::new();
        bad.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(forwarded_for(&bad, 1), None);
    }
}
