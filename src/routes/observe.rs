//! What every request leaves behind: its `x-request-id`, its span (method, route template, request
//! id) and the `authlink_http_*` series. Both name the route template (`/l/{link}`), never the
//! path, so link tokens, codes and states stay out of logs and out of metric labels.
//!
//! One layer (`EdgeLayer`) does what tower-http's `SetRequestId`, `PropagateRequestId` and
//! `Trace` layers and a metrics layer did one after another: under callgrind each of them was a
//! future wrapped around the next, and `Trace` boxed every response body again to wrap it.
//! What they logged is logged the same way: the request's lines at debug, a 5xx answer or a
//! failing body at error.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use metrics::{Counter, Histogram};

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

/// `x-request-id` for a request that came without one: a UUIDv4, formatted on the stack, its
/// random bits from the thread's ChaCha generator (`Uuid::new_v4` asks the kernel, a system
/// call per request).
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut buf))
        .expect("a hyphenated UUID is a header value")
}

fn route_of<B>(req: &Request<B>) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
}

/// As tower-http's `Trace` shows a latency: whole milliseconds.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// `authlink_http_requests_total` (route, method, status) and `authlink_http_request_seconds`
/// (route, method). The series' handles are made on first use and kept, so a request costs a
/// map lookup instead of building label strings and hashing them into the registry.
#[derive(Clone, Default)]
pub struct EdgeLayer {
    routes: Arc<RwLock<foldhash::HashMap<Box<str>, Arc<RouteSeries>>>>,
}

impl EdgeLayer {
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
    fn record(&self, method: &'static str, status: StatusCode, latency: Duration) {
        let seconds = latency.as_secs_f64();
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

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    layer: EdgeLayer,
}

impl<S, B> tower::Service<Request<B>> for Edge<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The caller's id is kept (it correlates their logs with ours); else a fresh one, on
        // the request too, for whatever reads it there.
        let id = match req.headers().get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = request_span(&req);
        let series = self.layer.series(route_of(&req));
        let method = method_label(req.method());
        let started = Instant::now();
        let inner = {
            let _entered = span.enter();
            tracing::debug!("started processing request");
            self.inner.call(req)
        };
        Answered {
            inner,
            span,
            id,
            series,
            method,
            started,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future, in the request's span; when the response is ready it records the
    /// series, echoes the request id and logs as `Trace` did.
    pub struct Answered<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        id: HeaderValue,
        series: Arc<RouteSeries>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for Answered<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let status = response.status();
        let elapsed = this.started.elapsed();
        this.series.record(this.method, status, elapsed);
        response
            .headers_mut()
            .entry(REQUEST_ID)
            .or_insert_with(|| this.id.clone());
        let latency = Millis(elapsed);
        if status.is_server_error() {
            tracing::error!(classification = %format_args!("Status code: {status}"), latency = %latency, "response failed");
        }
        tracing::debug!(latency = %latency, status = status.as_u16(), "finished processing request");
        // A body of known length is written at once, outside any handler code; one that streams
        // (events) runs in the request's span as it is written.
        if http_body::Body::size_hint(response.body())
            .exact()
            .is_none()
        {
            let span = this.span.clone();
            response = response.map(|body| {
                Body::new(Streamed {
                    inner: body,
                    span,
                    started: Instant::now(),
                })
            });
        }
        Poll::Ready(Ok(response))
    }
}

pin_project_lite::pin_project! {
    /// A streaming response body, polled in its request's span.
    struct Streamed {
        #[pin]
        inner: Body,
        span: tracing::Span,
        started: Instant,
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let frame = ready!(this.inner.poll_frame(cx));
        // The clock is read only when there is something to log, not for every event sent.
        let duration = || Millis(this.started.elapsed());
        match &frame {
            None => tracing::debug!(stream_duration = %duration(), "end of stream"),
            Some(Err(e)) => {
                tracing::error!(error = %e, latency = %duration(), "response failed");
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use http_body_util::BodyExt as _;
    use tower::{Layer as _, Service as _};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::registry::LookupSpan;

    use super::*;

    /// An event: its level, message and the names of the spans it is in.
    type Line = (tracing::Level, String, Vec<String>);

    /// Every event.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Line>>>);

    impl<S> tracing_subscriber::Layer<S> for Seen
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut message = Message(String::new());
            event.record(&mut message);
            let spans = ctx
                .event_scope(event)
                .map(|s| s.from_root().map(|s| s.name().to_owned()).collect())
                .unwrap_or_default();
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message.0, spans));
        }
    }

    impl Seen {
        fn find(&self, level: tracing::Level, message: &str) -> Option<Vec<String>> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .find(|(l, m, _)| *l == level && m == message)
                .map(|(.., spans)| spans.clone())
        }
    }

    fn request(id: Option<&str>) -> Request<Body> {
        let mut req = Request::builder().uri("/x");
        if let Some(id) = id {
            req = req.header(REQUEST_ID, id);
        }
        req.body(Body::empty()).unwrap()
    }

    async fn answer(status: StatusCode, body: fn() -> Body, req: Request<Body>) -> Response<Body> {
        let inner = tower::service_fn(move |_req: Request<Body>| async move {
            tracing::info!("handled");
            Ok::<_, Infallible>(Response::builder().status(status).body(body()).unwrap())
        });
        EdgeLayer::default().layer(inner).call(req).await.unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn requests_get_an_id_a_span_and_a_5xx_is_logged_as_an_error() {
        let seen = Seen::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));

        let generated = answer(StatusCode::OK, Body::empty, request(None)).await;
        let id = generated.headers()[REQUEST_ID].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        let kept = answer(StatusCode::OK, Body::empty, request(Some("req-7"))).await;
        assert_eq!(kept.headers()[REQUEST_ID], "req-7");
        assert_eq!(
            seen.find(tracing::Level::INFO, "handled").unwrap(),
            ["request"]
        );
        assert!(
            seen.find(tracing::Level::ERROR, "response failed")
                .is_none()
        );

        let failed = answer(StatusCode::BAD_GATEWAY, Body::empty, request(None)).await;
        assert_eq!(failed.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            seen.find(tracing::Level::ERROR, "response failed").unwrap(),
            ["request"]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_streaming_body_runs_in_its_requests_span_and_a_sized_one_is_left_as_it_is() {
        let seen = Seen::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
        let streaming = || {
            Body::from_stream(futures_util::stream::once(async {
                tracing::info!("streamed");
                Ok::<_, Infallible>(Bytes::from_static(b"event"))
            }))
        };
        let response = answer(StatusCode::OK, streaming, request(None)).await;
        assert!(
            seen.find(tracing::Level::INFO, "streamed").is_none(),
            "not polled yet"
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"event");
        assert_eq!(
            seen.find(tracing::Level::INFO, "streamed").unwrap(),
            ["request"]
        );
        assert_eq!(
            seen.find(tracing::Level::DEBUG, "end of stream").unwrap(),
            ["request"]
        );

        let sized = answer(StatusCode::OK, || Body::from("{}"), request(None)).await;
        assert_eq!(http_body::Body::size_hint(sized.body()).exact(), Some(2));
    }
}
