//! Rate limits: per API key (runtime and admin keys apart), per client address for the
//! browser's pages, console sign-in and key guessing; shared by replicas through the store;
//! `429` with `Retry-After` and the IETF `RateLimit` headers; the workers never limited.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Backend, Browser, Options, TestApp, spawn_with};

fn limits(runtime: u32, admin: u32, browser: u32, hops: usize) -> authlink::config::RateLimits {
    authlink::config::RateLimits {
        enabled: true,
        runtime_per_minute: runtime,
        operator_per_minute: 1000,
        admin_per_minute: admin,
        browser_per_minute: browser,
        sign_in_per_minute: 2,
        unauthenticated_per_minute: 3,
        trusted_proxy_hops: hops,
    }
}

async fn app_with(l: authlink::config::RateLimits, backend: Backend) -> TestApp {
    spawn_with(Options {
        rate_limits: Some(l),
        backend,
        ..Options::default()
    })
    .await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

async fn connection(app: &TestApp, key: &str) -> reqwest::Response {
    app.call(
        Method::GET,
        "/v1/bots/acme/integrations/crm/connections/u1",
        key,
        None,
    )
    .await
}

#[tokio::test]
async fn a_key_is_limited_on_every_replica_apart_from_other_keys_and_the_workers_go_on() {
    let app = app_with(limits(5, 100, 100, 0), Backend::Redis).await;
    let other = app.replica().await;
    let key = app.setup_bot("acme").await;
    let second = app.new_key("acme").await;
    for (i, on) in [&app, &app, &app, &other, &other].into_iter().enumerate() {
        let r = connection(on, &key).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "call {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"runtime\";q=5;w=60");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"runtime\";r={};", 4 - i)),
            "{}",
            header(&r, "ratelimit")
        );
    }
    // The sixth, on either replica: refused with when to come back (one interval: 12 s).
    let r = connection(&other, &key).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "12");
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    assert_eq!(header(&r, "ratelimit"), "\"runtime\";r=0;t=12");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Another key of the same bot has its own budget, and so have the operator and admin keys.
    assert_eq!(
        connection(&app, &second).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = connection(&app, &app.operator_key).await;
    assert_eq!(header(&r, "ratelimit-policy"), "\"operator\";q=1000;w=60");
    let admin: Value = app
        .call(
            Method::POST,
            "/v1/bots/acme/api-keys",
            &app.operator_key,
            Some(serde_json::json!({"role": "admin"})),
        )
        .await
        .json()
        .await
        .unwrap();
    let r = connection(&app, admin["key"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "ratelimit-policy"), "\"admin\";q=100;w=60");

    // The workers are not limited: the second key's session is cancelled and its event sent.
    let s = app.new_session(&second, "acme", "u2").await;
    let id = s["id"].as_str().unwrap();
    crate::helpers::cancel(&app, &second, id).await;
    assert_eq!(app.receiver.wait_for(id, 1).await.len(), 1);

    // One interval later the first key may call once more.
    app.state.clock.advance(Duration::from_secs(12));
    assert_eq!(connection(&app, &key).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        connection(&app, &key).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_embedded_store_limits_the_same_way() {
    let app = app_with(limits(2, 100, 100, 0), Backend::Memory).await;
    let key = app.setup_bot("acme").await;
    assert_eq!(connection(&app, &key).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(connection(&app, &key).await.status(), StatusCode::NOT_FOUND);
    let r = connection(&app, &key).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "30");
}

#[tokio::test]
async fn link_pages_are_limited_per_address_and_a_spoofed_forwarded_for_does_not_help() {
    let app = app_with(limits(100, 100, 3, 0), Backend::Redis).await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let link = s["link"].as_str().unwrap();
    let client = reqwest::Client::new();
    for i in 0..3 {
        let r = client
            .get(link)
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "visit {i}");
    }
    let r = client
        .get(link)
        .header("x-forwarded-for", "10.9.9.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "20");
    assert!(header(&r, "content-type").starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Please wait 20 seconds"));
    // The callback is a browser page too; the API is not.
    let mut b = Browser::new();
    let callback = app.url("/oauth/callback/salesforce?code=x&state=y");
    assert_eq!(
        b.land(&callback).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(connection(&app, &key).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let app = app_with(limits(100, 100, 1, 1), Backend::Redis).await;
    let client = reqwest::Client::new();
    let visit = |ip: &'static str| {
        client
            .get(app.url("/l/not-a-link"))
            .header("x-forwarded-for", format!("203.0.113.50, {ip}"))
            .send()
    };
    assert_ne!(
        visit("198.51.100.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        visit("198.51.100.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_ne!(
        visit("198.51.100.2").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn key_guessing_and_console_sign_in_are_throttled_by_address() {
    let app = app_with(limits(100, 100, 100, 0), Backend::Redis).await;
    let key = app.setup_bot("acme").await;
    for _ in 0..3 {
        assert_eq!(
            connection(&app, "alk_guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = connection(&app, "alk_guess").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"unauthenticated\";q=3;w=60"
    );
    // A real key from the same address is counted as itself.
    assert_eq!(connection(&app, &key).await.status(), StatusCode::NOT_FOUND);

    let sign_in = |k: String| {
        let url = app.url("/console/sign-in");
        async move { Browser::new().submit(&url, &[("key", &k)], &[]).await }
    };
    assert_eq!(
        sign_in("wrong".into()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in("wrong".into()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Throttled: even the right key waits (that is what stops guessing).
    let r = sign_in(app.operator_key.clone()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn limits_off_means_no_headers_and_no_refusals() {
    let app = crate::helpers::spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = connection(&app, &key).await;
    assert!(r.headers().get("ratelimit").is_none());
    for _ in 0..20 {
        assert_eq!(
            connection(&app, "alk_guess").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

/// A measurement aid, not a test: what one limiter step costs against Redis, and what it adds
/// to an API call. `cargo test --release --test api -- --ignored measure_rate_limit --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_rate_limit() {
    use authlink::domain::rate::Quota;
    let app = app_with(limits(1_000_000, 1_000_000, 1_000_000, 0), Backend::Redis).await;
    let quota = Quota {
        limit: 1_000_000,
        window: Duration::from_secs(60),
    };
    let n = 5000;
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        app.store
            .rate_limit(
                &format!("{}:measure", app.prefix),
                quota,
                app.state.clock.now(),
                1,
            )
            .await
            .unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "limiter step: p50 {:?}, p99 {:?} ({n} sequential)",
        times[n / 2],
        times[n * 99 / 100]
    );
    let off = crate::helpers::spawn_app().await;
    for (name, app) in [("limits on", &app), ("limits off", &off)] {
        let key = app.setup_bot("acme").await;
        let mut times = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let started = std::time::Instant::now();
            connection(app, &key).await;
            times.push(started.elapsed());
        }
        times.sort();
        eprintln!(
            "{name}: API call p50 {:?}, p99 {:?}",
            times[1000], times[1980]
        );
    }
}

/// A busy key takes its permits in batches (`domain::rate::Permits`), and the budget still holds
/// across replicas: with the clock standing still, never more calls pass than the quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_permits_never_let_more_through_than_the_quota_across_replicas() {
    let quota = 2_000; // 1% of it: batches of up to 20
    let app = app_with(limits(quota, 100, 100, 0), Backend::Redis).await;
    let other = app.replica().await;
    let key = app.setup_bot("acme").await;
    // Frozen (for both: they share the clock), so that no permit is earned back while the calls
    // run: the quota is then an exact ceiling.
    app.state.clock.freeze();
    let replicas = [&app, &other];
    let statuses: Vec<StatusCode> = futures_util::stream::StreamExt::collect(
        futures_util::stream::StreamExt::buffer_unordered(
            futures_util::stream::iter((0..3_000).map(|i| {
                let on = replicas[i % 2];
                let key = key.clone();
                async move { connection(on, &key).await.status() }
            })),
            64,
        ),
    )
    .await;
    let passed = statuses
        .iter()
        .filter(|s| **s == StatusCode::NOT_FOUND)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(passed + limited, 3_000, "only 404 or 429: {statuses:?}");
    assert!(
        passed <= quota as usize,
        "{passed} passed a quota of {quota}"
    );
    // Permits a replica took and did not use in time are lost, never reused: most still serve.
    assert!(
        passed >= quota as usize / 2,
        "only {passed} of {quota} passed"
    );
}
