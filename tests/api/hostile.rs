//! Hostile input: request smuggling, oversized and malformed requests, NUL bytes and invalid
//! UTF-8, deep JSON, open redirects and look-alike hosts, header injection, SSRF through every
//! URL the daemon will fetch. Each gets a clear 4xx, changes nothing, and the daemon keeps
//! serving everyone else.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Options, TestApp, spawn_app, spawn_with};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Send raw bytes on one connection and read until the server closes it (or a hang guard).
async fn raw(app: &TestApp, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr(app)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn sessions_of(app: &TestApp, key: &str) -> usize {
    let r = app
        .call(
            Method::GET,
            "/v1/bots/acme/auth-sessions?limit=100",
            key,
            None,
        )
        .await;
    r.json::<Value>().await.unwrap()["sessions"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn conflicting_content_length_and_transfer_encoding_smuggle_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let body = r#"{"integration":"crm","user_id":"u1"}"#;
    // The chunked body is empty; a server trusting Content-Length would read the smuggled
    // second request as part of the body, one ignoring both would run it.
    let smuggled = format!(
        "POST /v1/bots/acme/auth-sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
Content-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
POST /v1/bots/acme/auth-sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len() + 200,
        body.len()
    );
    let answer = raw(&app, smuggled.as_bytes()).await;
    let first = answer.lines().next().unwrap_or("");
    assert!(
        first.starts_with("HTTP/1.1 4"),
        "the ambiguous request is refused: {answer}"
    );
    assert!(!answer.contains("201 Created"), "{answer}");
    assert_eq!(sessions_of(&app, &key).await, 0, "nothing was created");
    // Two Content-Length values that disagree.
    let answer = raw(
        &app,
        b"POST /v1/bots/acme/auth-sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(app.status_of("/healthz").await, StatusCode::OK);
}

#[tokio::test]
async fn too_many_headers_and_huge_query_strings_are_refused_and_others_served() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let answer = raw(&app, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let huge = format!(
        "GET /v1/bots/acme/auth-sessions?limit=1&x={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = raw(&app, huge.as_bytes()).await;
    // Refused with a status, or the connection closed on a head that large: never served.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(app.status_of("/healthz").await, StatusCode::OK);
    assert_eq!(sessions_of(&app, &key).await, 0);
}

#[tokio::test]
async fn a_slow_client_holding_a_half_sent_request_does_not_block_anyone() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"POST /v1/bots/acme/auth-sessions HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        slow.push(s);
    }
    // A slow body too: the head is complete, the body never comes.
    let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    s.write_all(
        format!("POST /v1/bots/acme/auth-sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"integ").as_bytes(),
    )
    .await
    .unwrap();
    slow.push(s);
    let s = app.new_session(&key, "acme", "u1").await;
    assert_eq!(s["status"], "pending");
    assert_eq!(app.status_of("/healthz").await, StatusCode::OK);
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off() {
    let app = spawn_app().await;
    let quick = app
        .replica_with(|c| c.header_read_timeout = std::time::Duration::from_millis(300))
        .await;
    let mut slow = tokio::net::TcpStream::connect(addr(&quick)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // The server closes it (the read ends); the hang guard only stops a broken test.
    let mut out = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slow.read_to_end(&mut out),
    )
    .await;
    assert!(closed.is_ok(), "the slow connection is still open");
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
    // A whole head in time is served.
    assert_eq!(quick.status_of("/healthz").await, StatusCode::OK);
}

#[tokio::test]
async fn nul_bytes_invalid_utf8_and_deep_json_get_a_problem_and_change_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let url = app.url("/v1/bots/acme/auth-sessions");
    let client = reqwest::Client::new();
    let nested = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_context = format!(
        r#"{{"integration":"crm","user_id":"u","context":{}1{}}}"#,
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "nul in user_id",
            br#"{"integration":"crm","user_id":"a\u0000b"}"#.to_vec(),
        ),
        (
            "nul in conversation_id",
            br#"{"integration":"crm","user_id":"u","conversation_id":"c\u0000"}"#.to_vec(),
        ),
        (
            "nul in locale",
            br#"{"integration":"crm","user_id":"u","locale":"en\u0000"}"#.to_vec(),
        ),
        (
            "nul in login_hint",
            br#"{"integration":"crm","user_id":"u","login_hint":"a\u0000@b.c"}"#.to_vec(),
        ),
        (
            "nul in integration",
            br#"{"integration":"cr\u0000m","user_id":"u"}"#.to_vec(),
        ),
        (
            "invalid utf-8",
            b"{\"integration\":\"crm\",\"user_id\":\"\xff\xfe\"}".to_vec(),
        ),
        (
            "lone surrogate",
            br#"{"integration":"crm","user_id":"\ud800"}"#.to_vec(),
        ),
        ("deeply nested", nested.into_bytes()),
        ("deep context", deep_context.into_bytes()),
    ];
    for (name, body) in bodies {
        let r = client
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status.is_client_error(), "{name}: {status}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
    }
    // The same through the admin API: a bot name with NUL, an integration display name.
    for (path, body) in [
        ("/v1/bots/acme", json!({"name": "a\u{0}b"})),
        (
            "/v1/bots/acme/integrations/crm",
            json!({"provider": "salesforce", "display_name": "x\u{0}"}),
        ),
    ] {
        let r = app
            .call(Method::PUT, path, &app.operator_key, Some(body))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    }
    assert_eq!(sessions_of(&app, &key).await, 0);
    let (_, bot) = (
        0,
        app.call(Method::GET, "/v1/bots/acme", &app.operator_key, None)
            .await,
    );
    assert_eq!(bot.json::<Value>().await.unwrap()["name"], "acme assistant");
}

#[tokio::test]
async fn return_urls_that_lead_elsewhere_are_refused_everywhere() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let bad = [
        "https://evil.com@chat.example.com/",
        "https://chat.example.com:pw@evil.com/",
        "https://chat.example.com.evil.com/",
        "https://evilchat.example.com/",
        "//evil.com/",
        "https:\\\\evil.com",
        "javascript:alert(1)",
        "data:text/html,hi",
        "https://chat.example.com%2eevil.com/",
        "http://[::1]/",
    ];
    for url in bad {
        let r = app
            .create_session(
                &key,
                "acme",
                json!({"integration": "crm", "user_id": "u", "return_url": url}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
    }
    assert_eq!(sessions_of(&app, &key).await, 0);
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u", "return_url": "https://chat.example.com/back"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn echoed_values_cannot_inject_headers() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u", "login_hint": "a@b.c\r\nSet-Cookie: owned=1"}),
        )
        .await;
    // Refused (a control character), or kept and encoded wherever it is echoed.
    if r.status() == StatusCode::CREATED {
        let s: Value = r.json().await.unwrap();
        let mut b = crate::helpers::Browser::new();
        let to = b.start(s["link"].as_str().unwrap()).await;
        assert!(!to.as_str().contains('\r') && !to.as_str().contains('\n'));
        assert!(
            b.cookie_string()
                .split("; ")
                .all(|c| !c.starts_with("owned="))
        );
    } else {
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
    // A request id with a CR cannot even be sent; a long one is not echoed beyond its limit.
    let r = reqwest::Client::new()
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(4000))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success() || r.status().is_client_error());
}

#[tokio::test]
async fn urls_the_daemon_would_fetch_cannot_point_inside() {
    let app = spawn_with(Options {
        deny_private_networks: true,
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    let inside = [
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/x",
        "https://10.0.0.1/x",
        "https://192.168.1.1/x",
        "https://localhost/x",
        "https://metadata.localhost/x",
        "https://0.0.0.0/x",
    ];
    let before = app.redis_dump();
    for url in inside {
        let cases = [
            (
                "/v1/bots/acme/auth-sessions",
                Method::POST,
                json!({"integration": "crm", "user_id": "u", "webhook_url": url}),
            ),
            (
                "/v1/bots/acme/auth-profiles",
                Method::POST,
                json!({"name": "p", "client_id": "c", "client_secret": "s",
                "authorization_url": "https://login.example.com/a", "token_url": url}),
            ),
            (
                "/v1/bots/acme/channels/hook",
                Method::PUT,
                json!({"type": "webhook", "url": url}),
            ),
            (
                "/v1/bots/acme",
                Method::PUT,
                json!({"name": "acme assistant", "webhook_url": url}),
            ),
        ];
        for (i, (path, method, body)) in cases.into_iter().enumerate() {
            let who = if i == 0 { &key } else { &app.operator_key };
            let r = app.call(method, path, who, Some(body)).await;
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path} {url}");
        }
        let r = app
            .call(
                Method::PUT,
                "/v1/bots/acme",
                &app.operator_key,
                Some(json!({"name": "acme assistant",
                    "identity_issuer": {"issuer": url.trim_end_matches("/x"), "client_id": "c", "client_secret": "s"}})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "issuer {url}");
    }
    assert_eq!(app.redis_dump(), before, "nothing changed");
}
