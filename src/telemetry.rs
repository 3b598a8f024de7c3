//! Log setup: human-readable on a terminal, JSON lines in production. `RUST_LOG` filters.
//! Secrets never reach a log line: they are `SecretString`s (redacted `Debug`), and the HTTP
//! layer marks `Authorization` and `Cookie` as sensitive.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init`: a second call (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
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
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
