//! Logs, traces and metrics. Logs are human-readable on a terminal and JSON lines in production
//! (`log_format = "json"`: every line carries its spans — request id, route, session id, bot,
//! integration); `RUST_LOG` filters. With the `otlp` cargo feature and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the same spans are
//! exported over OTLP/HTTP. Secrets never reach a log line or a span: they are `SecretString`s
//! (redacted `Debug`), spans record ids and route templates only, and the HTTP layer marks
//! `Authorization` and `Cookie` as sensitive.

mod json;
mod writer;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Flushes log lines and exported spans when dropped (at the end of `main`).
#[must_use]
pub struct Guard {
    log: Option<writer::Flush>,
    #[cfg(feature = "otlp")]
    otlp: Option<otlp::Provider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.otlp.take() {
            otlp::shutdown(provider);
        }
    }
}

/// Install the process-wide subscriber writing to stdout. Call from inside the tokio runtime
/// (the OTLP exporter sends from it).
///
/// Lines gather in a buffer that a writer thread hands to stdout about every millisecond, in one
/// `write(2)` (`writer`): a busy daemon makes a few large writes instead of one per line, an idle
/// one shows each line at once. Nothing is dropped: when stdout does not keep up, loggers wait.
pub fn init(format: LogFormat) -> Guard {
    let (lines, flush) = writer::spawn(std::io::stdout());
    let mut guard = init_with(format, "info,tower_http=info", lines);
    guard.log = Some(flush);
    guard
}

/// `init` with other default filter directives (`RUST_LOG` still wins) and another writer:
/// tests capture the production format this way.
pub fn init_with<W>(format: LogFormat, default_filter: &str, writer: W) -> Guard
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The filter applies to the whole subscriber (a filter inside the list of layers would not).
    type Filtered = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;
    type Boxed = Box<dyn tracing_subscriber::Layer<Filtered> + Send + Sync>;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut layers: Vec<Boxed> = vec![match format {
        LogFormat::Json => Box::new(json::JsonLines::new(writer)),
        LogFormat::Pretty => Box::new(tracing_subscriber::fmt::layer().with_writer(writer)),
    }];
    #[cfg(feature = "otlp")]
    let provider = otlp::configured().map(|endpoint| {
        let provider = otlp::provider();
        layers.push(Box::new(otlp::layer(&provider)));
        (provider, endpoint)
    });
    // `try_init`: a second call (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
    #[cfg(feature = "otlp")]
    {
        if let Some((_, endpoint)) = &provider {
            tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
        }
        Guard {
            log: None,
            otlp: provider.map(|(p, _)| p),
        }
    }
    #[cfg(not(feature = "otlp"))]
    Guard { log: None }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};

    pub type Provider = opentelemetry_sdk::trace::SdkTracerProvider;

    /// The endpoint named by the standard OpenTelemetry variables, if any.
    pub fn configured() -> Option<String> {
        [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    }

    /// A batching provider; the exporter reads endpoint, headers and timeout from the standard
    /// `OTEL_EXPORTER_OTLP_*` variables and the service name from `OTEL_SERVICE_NAME`
    /// (default "authlink").
    pub fn provider() -> Provider {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(ReqwestOnTokio {
                client: reqwest::Client::new(),
                runtime: tokio::runtime::Handle::current(),
            })
            .build()
            .expect("the OTLP exporter builds from OTEL_EXPORTER_OTLP_* settings");
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "authlink".into());
        Provider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build()
    }

    pub fn layer<S>(provider: &Provider) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("authlink"))
    }

    pub fn shutdown(provider: Provider) {
        if let Err(e) = provider.shutdown() {
            eprintln!("authlink: flushing OTLP spans failed: {e}");
        }
    }

    /// The exporter's HTTP client: our reqwest 0.12, run on the daemon's tokio runtime (the
    /// batch processor exports from its own thread, outside any runtime).
    #[derive(Debug)]
    struct ReqwestOnTokio {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl opentelemetry_http::HttpClient for ReqwestOnTokio {
        async fn send_bytes(
            &self,
            request: axum::http::Request<bytes::Bytes>,
        ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
            let client = self.client.clone();
            let request = reqwest::Request::try_from(request)?;
            let (status, headers, body) = self
                .runtime
                .spawn(async move {
                    let response = client.execute(request).await?;
                    let (status, headers) = (response.status(), response.headers().clone());
                    // The collector is the operator's, but its answer is read with the same
                    // cap as every other (the exporter only looks at the status).
                    let body = crate::outbound::read_body(
                        response,
                        crate::outbound::DEFAULT_MAX_RESPONSE_BODY,
                    )
                    .await?;
                    Ok::<_, opentelemetry_http::HttpError>((status, headers, body.into()))
                })
                .await??;
            let mut response = axum::http::Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        }
    }
}

/// The process-wide Prometheus recorder (installed on first use; later calls share it).
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests embedding several apps): then ours
        // renders nothing, which is harmless.
        if metrics::set_global_recorder(recorder).is_ok() {
            register_at_zero();
        }
        handle
    })
}

/// Every counter whose labels are a fixed set, at zero from the start: `rate()` and
/// absent-series alerts see them before the first event (a series born at 1 hides that first
/// increase from `rate()`).
fn register_at_zero() {
    use crate::domain::channel::ChannelKind;
    use crate::domain::session::{FailureCode, Status};
    for status in Status::ALL {
        metrics::counter!("authlink_session_transitions_total", "status" => status.as_str(), "code" => "").absolute(0);
    }
    for code in FailureCode::ALL {
        metrics::counter!("authlink_session_transitions_total", "status" => Status::Failed.as_str(), "code" => code.as_str()).absolute(0);
    }
    let failures = ["4xx", "5xx", "other", "error"];
    metrics::counter!("authlink_webhook_deliveries_total", "outcome" => "delivered", "status_class" => "2xx").absolute(0);
    for outcome in ["retry", "dead"] {
        for class in failures {
            metrics::counter!("authlink_webhook_deliveries_total", "outcome" => outcome, "status_class" => class).absolute(0);
        }
    }
    metrics::counter!("authlink_webhook_dead_letters_total").absolute(0);
    for kind in ChannelKind::ALL {
        for (action, outcome) in [
            ("send", "sent"),
            ("send", "retry"),
            ("send", "failed"),
            ("update", "sent"),
            ("update", "failed"),
            ("update", "unsupported"),
        ] {
            metrics::counter!("authlink_channel_deliveries_total", "type" => kind.as_str(), "action" => action, "outcome" => outcome).absolute(0);
        }
    }
    for outcome in ["ok", "rejected", "unavailable"] {
        metrics::counter!("authlink_refreshes_total", "outcome" => outcome).absolute(0);
    }
    for outcome in ["ok", "failed"] {
        metrics::counter!("authlink_proactive_refreshes_total", "outcome" => outcome).absolute(0);
    }
    for kind in ["corrupt", "unavailable"] {
        metrics::counter!("authlink_store_errors_total", "kind" => kind).absolute(0);
    }
    metrics::gauge!("authlink_webhook_queue_depth").set(0.0);
    metrics::gauge!("authlink_waiting_requests").set(0.0);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// The filter holds for every layer: below it nothing is formatted (nor exported). The only
    /// test in this binary that installs the global subscriber.
    #[test]
    fn events_below_the_filter_are_not_written() {
        if std::env::var_os("RUST_LOG").is_some() {
            return; // RUST_LOG overrides the default filter this test sets.
        }
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let _guard = super::init_with(crate::config::LogFormat::Json, "warn", move || {
            Sink(sink.clone())
        });
        tracing::info!("hidden-event");
        tracing::info_span!("hidden-span").in_scope(|| tracing::warn!("shown-event"));
        let written = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(written.contains("shown-event"), "{written}");
        assert!(!written.contains("hidden-event"), "{written}");
        assert!(!written.contains("hidden-span"), "{written}");
    }

    /// A writer into memory; the JSON layer's tests write through it too.
    #[derive(Clone, Default)]
    pub(super) struct Sink(pub(super) Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
