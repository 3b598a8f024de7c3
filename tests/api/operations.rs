//! ⑦ Operating the daemon: what `/metrics` tells an operator after a real flow.

use reqwest::StatusCode;

use crate::helpers::{Browser, spawn_app};

/// The value of the first series named `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_describe_requests_transitions_and_exchanges_with_few_labels() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "metrics-user").await;
    let id = s["id"].as_str().unwrap();
    let link = s["link"].as_str().unwrap();
    let page = Browser::new().authorize(link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // A request no route matches, and one with a method nobody defined.
    assert_eq!(app.status_of("/no/such/path").await, StatusCode::NOT_FOUND);
    let brew = app
        .api
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            app.url("/no/such/pot"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(brew.status(), StatusCode::NOT_FOUND);

    let text = app.metrics().await;
    let created = sample(
        &text,
        "authlink_http_requests_total",
        &[
            r#"route="/v1/bots/{bot}/auth-sessions""#,
            r#"method="POST""#,
            r#"status="201""#,
        ],
    );
    assert!(created >= Some(1.0), "{text}");
    let callback = sample(
        &text,
        "authlink_http_request_seconds_count",
        &[r#"route="/oauth/callback/{config}""#],
    );
    assert!(callback >= Some(1.0), "{text}");
    // Unmatched paths share one route label; an invented method is labelled "other".
    for labels in [
        [r#"route="unmatched""#, r#"status="404""#],
        [r#"route="unmatched""#, r#"method="other""#],
    ] {
        assert!(
            sample(&text, "authlink_http_requests_total", &labels) >= Some(1.0),
            "{labels:?}: {text}"
        );
    }
    assert!(!text.contains("BREW"), "{text}");
    for status in ["pending", "in_progress", "completed"] {
        assert!(
            sample(
                &text,
                "authlink_session_transitions_total",
                &[&format!(r#"status="{status}""#)]
            ) >= Some(1.0),
            "{status}: {text}"
        );
    }
    assert!(
        sample(
            &text,
            "authlink_exchange_seconds_count",
            &[r#"provider="salesforce""#, r#"outcome="ok""#]
        ) >= Some(1.0),
        "{text}"
    );
    // Labels are templates and enums: no session id, link token or user id ever becomes one.
    let link_token = link.rsplit('/').next().unwrap();
    for secretish in [id, link_token, "metrics-user", key.as_str()] {
        assert!(!text.contains(secretish), "{secretish} in metrics");
    }
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_flow_ids_in_their_spans() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let request_id = format!("req-{}", uuid::Uuid::new_v4().simple());
    let r = app
        .api
        .post(app.url("/v1/bots/acme/auth-sessions"))
        .bearer_auth(&key)
        .header("x-request-id", &request_id)
        .json(&serde_json::json!({"integration": "crm", "user_id": "log-user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["x-request-id"],
        request_id.as_str(),
        "propagated"
    );
    let s: serde_json::Value = r.json().await.unwrap();
    let id = s["id"].as_str().unwrap();
    let page = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // Every line is a JSON object (the production format) …
    let logs = crate::helpers::logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // … and an event inside a flow step carries that step's span with the ids.
    let in_span = |message: &str, span: &str| {
        lines
            .iter()
            .find(|l| {
                l["message"] == message
                    && l["spans"].as_array().is_some_and(|spans| {
                        spans
                            .iter()
                            .any(|s| s["name"] == span && s["session_id"] == id)
                    })
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {message:?} in span {span} for {id}"))
    };
    let created = in_span("auth session created", "create_session");
    let spans = created["spans"].as_array().unwrap();
    let request = spans.iter().find(|s| s["name"] == "request").unwrap();
    assert_eq!(request["request_id"], request_id.as_str());
    assert_eq!(request["route"], "/v1/bots/{bot}/auth-sessions");
    let step = spans
        .iter()
        .find(|s| s["name"] == "create_session")
        .unwrap();
    assert_eq!(step["bot"], "acme");
    assert_eq!(step["integration"], "crm");
    in_span("auth session completed", "callback");
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_fresh_uuid_in_its_response_and_its_span() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = app
            .api
            .post(app.url("/v1/bots/acme/auth-sessions"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"integration": "crm", "user_id": "id-user"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(
            parsed.hyphenated().to_string(),
            id,
            "lower-case, hyphenated"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "one id per request");
    let logs = crate::helpers::logs();
    for id in &ids {
        assert!(
            logs.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|l| l["spans"].as_array().is_some_and(|spans| spans
                    .iter()
                    .any(|s| s["name"] == "request" && s["request_id"] == id.as_str()))),
            "no log line in the request span of {id}"
        );
    }
}

/// A daemon process writes its log lines from a writer thread, batched under load: every line
/// still arrives whole, while the daemon runs (not only when a buffer fills), and the last ones
/// are flushed when it stops.
#[tokio::test]
async fn a_daemon_writes_whole_json_log_lines_promptly_and_flushes_them_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdout.log");
    let file = std::fs::File::create(&path).unwrap();
    let mut solo = crate::servers::Solo::start_with_output(
        r#"log_format = "json""#,
        &[("RUST_LOG", "info")],
        file.into(),
    )
    .await;
    let users: Vec<String> = (0..50).map(|i| format!("log-user-{i}")).collect();
    let sessions = futures_util::future::join_all(users.iter().map(|u| solo.new_session(u))).await;
    let ids: Vec<String> = sessions
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    // Complete lines only: the file may be read while the writer is in the middle of a write,
    // so whatever follows the last newline may still be growing.
    let lines = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&path).unwrap();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let created = |lines: &[serde_json::Value], id: &str| {
        lines
            .iter()
            .any(|l| l["message"] == "auth session created" && l["session_id"] == id)
    };
    // While it runs: one whole JSON line per session, without waiting for a buffer to fill.
    crate::helpers::until(|| {
        let lines = lines();
        ids.iter().all(|id| created(&lines, id))
    })
    .await;
    assert!(
        !lines().iter().any(|l| l["message"] == "authlink stopped"),
        "still running"
    );
    // Stopped: the last line is flushed before the process exits.
    solo.terminate();
    crate::helpers::until_async_within(std::time::Duration::from_secs(10), || {
        let exited = solo.daemon.child.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    assert!(solo.daemon.child.wait().unwrap().success());
    let lines = lines();
    assert_eq!(
        lines.last().map(|l| l["message"].clone()),
        Some("authlink stopped".into())
    );
    assert!(ids.iter().all(|id| created(&lines, id)));
}

/// With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`, a real daemon process exports its
/// spans over OTLP/HTTP (protobuf) to a collector on loopback, flushing them when it stops; the
/// export carries the ids and names, and no key.
#[cfg(feature = "otlp")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_and_flushed_on_stop() {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;

    use crate::servers::Solo;

    // The collector: records every OTLP/HTTP trace export.
    let exports: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let seen = exports.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            seen.lock().unwrap().push(body);
            async { StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let mut solo = Solo::start(
        r#"log_format = "json""#,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "authlink-otlp-test"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let s = solo.new_session("otlp-user").await;
    let id = s["id"].as_str().unwrap().to_owned();

    // Stop it: the batch still waiting is flushed on the way out.
    solo.terminate();
    assert!(solo.daemon.child.wait().unwrap().success());

    let exported: Vec<u8> = exports.lock().unwrap().concat();
    let has = |needle: &[u8]| exported.windows(needle.len()).any(|w| w == needle);
    for wanted in [
        b"authlink-otlp-test".as_slice(),
        b"create_session",
        b"/v1/bots/{bot}/auth-sessions",
        id.as_bytes(),
    ] {
        assert!(
            has(wanted),
            "{} not exported",
            String::from_utf8_lossy(wanted)
        );
    }
    assert!(
        !has(solo.operator.as_bytes()),
        "the operator key was exported"
    );
}

/// A fresh daemon, before anything has happened: every counter with a fixed label set is there
/// at zero, so `rate()` and absent-series alerts work from the first scrape.
#[tokio::test]
async fn a_fresh_daemon_reports_its_fixed_series_at_zero() {
    let solo = crate::servers::Solo::start("", &[]).await;
    let text = reqwest::get(format!("{}/metrics", solo.daemon.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"authlink_session_transitions_total{status="completed",code=""} 0"#,
        r#"authlink_session_transitions_total{status="failed",code="identity_mismatch"} 0"#,
        r#"authlink_session_transitions_total{status="expired",code=""} 0"#,
        r#"authlink_webhook_deliveries_total{outcome="dead",status_class="5xx"} 0"#,
        r#"authlink_webhook_dead_letters_total 0"#,
        r#"authlink_channel_deliveries_total{type="slack",action="send",outcome="sent"} 0"#,
        r#"authlink_refreshes_total{outcome="rejected"} 0"#,
        r#"authlink_proactive_refreshes_total{outcome="failed"} 0"#,
        r#"authlink_store_errors_total{kind="unavailable"} 0"#,
        "authlink_webhook_queue_depth 0",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}
