//! What every request leaves behind: its span (method, route template, request id) and the
//! `authlink_http_*` series. Both name the route template (`/l/{link}`), never the path, so link
//! tokens, codes and states stay out of logs and out of metric labels.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use metrics::{Counter, Histogram};
use tower_http::request_id::{MakeRequestId, RequestId};

/// The request span: method, route template and request id — never the raw path or query (the
/// link carries its token, the callback the authorization code and state) and never headers.
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    // The fields are evaluated only when the span is enabled; as `&str` they are recorded as
    // strings, without the formatting machinery.
    tracing::info_span!(
        "request",
        method = req.method().as_str(),
        route = route_of(req),
        request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    )
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `x-request-id` for requests that come without one: a UUIDv4, formatted on the stack
/// (tower-http's `MakeRequestUuid` goes through `to_string` and a parse), its random bits from
/// the thread's ChaCha generator (`Uuid::new_v4` asks the kernel, a system call per request).
#[derive(Clone, Copy, Default)]
pub struct RequestUuid;

impl MakeRequestId for RequestUuid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let id = uuid.hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

fn route_of<B>(req: &Request<B>) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// `authlink_http_requests_total` (route, method, status) and `authlink_http_request_seconds`
/// (route, method). The series' handles are made on first use and kept, so a request costs a
/// map lookup instead of building label strings and hashing them into the registry.
#[derive(Clone, Default)]
pub struct HttpMetricsLayer {
    routes: Arc<RwLock<HashMap<Box<str>, Arc<RouteSeries>>>>,
}

impl HttpMetricsLayer {
    fn series(&self, route: &str) -> Arc<RouteSeries> {
        let known = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .cloned();
        known.unwrap_or_else(|| {
            self.routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(route.into())
                .or_insert_with(|| {
                    Arc::new(RouteSeries {
                        route: route.to_owned(),
                        series: RwLock::default(),
                    })
                })
                .clone()
        })
    }
}

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> HttpMetrics<S> {
        HttpMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// One route template's series, by method and status.
pub struct RouteSeries {
    route: String,
    series: RwLock<Vec<(&'static str, StatusCode, Counter, Histogram)>>,
}

/// The method label: the standard methods by name, anything else "other" (a client inventing
/// methods must not create series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl RouteSeries {
    fn record(&self, method: &'static str, status: StatusCode, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        let found = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(m, s, ..)| *m == method && *s == status)
            .map(|(.., requests, latency)| (requests.clone(), latency.clone()));
        let (requests, latency) = found.unwrap_or_else(|| {
            let labels = [("route", self.route.clone()), ("method", method.to_owned())];
            let requests = metrics::counter!(
                "authlink_http_requests_total",
                &[
                    labels[0].clone(),
                    labels[1].clone(),
                    ("status", status.as_str().to_owned())
                ]
            );
            let latency = metrics::histogram!("authlink_http_request_seconds", &labels);
            self.series
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push((method, status, requests.clone(), latency.clone()));
            (requests, latency)
        });
        requests.increment(1);
        latency.record(seconds);
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    layer: HttpMetricsLayer,
}

impl<S, B, R> tower::Service<Request<B>> for HttpMetrics<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let series = self.layer.series(route_of(&req));
        let method = method_label(req.method());
        Recorded {
            inner: self.inner.call(req),
            series,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future, recording the series when the response is ready.
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        series: Arc<RouteSeries>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, R, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            this.series
                .record(this.method, response.status(), *this.started);
        }
        Poll::Ready(result)
    }
}
