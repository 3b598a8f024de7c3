//! `verification: code` (SPEC §6): the person reads a code on the success page and types it into
//! the chat; only then is the grant usable. Five wrong codes fail the session; codes expire with it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, Browser, Options, TestApp, spawn_app, spawn_with};

/// A completed sign-in of a code session: (session id, the code shown on the page).
async fn signed_in(app: &TestApp, key: &str) -> (String, String) {
    let s: Value = app
        .create_session(
            key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "verification": "code"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let page = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    let code = page
        .body
        .split("<strong>")
        .nth(1)
        .unwrap()
        .split("</strong>")
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    (s["id"].as_str().unwrap().to_owned(), code)
}

async fn verify(app: &TestApp, key: &str, id: &str, code: &str) -> reqwest::Response {
    app.call(
        Method::POST,
        &format!("/v1/bots/acme/auth-sessions/{id}/verify"),
        key,
        Some(json!({"code": code})),
    )
    .await
}

async fn token_status(app: &TestApp, key: &str) -> StatusCode {
    app.call(
        Method::POST,
        "/v1/bots/acme/integrations/crm/access-token",
        key,
        Some(json!({"user_id": "u1"})),
    )
    .await
    .status()
}

fn wrong(code: &str) -> String {
    format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[tokio::test]
async fn the_right_code_completes_the_session_and_unlocks_the_grant() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let (id, code) = signed_in(&app, &key).await;
    let (_, s) = app.session(&key, "acme", &id, None).await;
    assert_eq!(s["status"], "awaiting_code");
    assert_eq!(
        token_status(&app, &key).await,
        StatusCode::NOT_FOUND,
        "unusable before the code"
    );
    app.receiver.wait_for(&id, 1).await;
    assert_eq!(
        app.receiver.for_session(&id)[0].kind,
        "auth_session.awaiting_code"
    );

    let r = verify(&app, &key, &id, &wrong(&code)).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("4 attempt(s) left"));
    let r = verify(&app, &key, &id, &code).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "completed");
    assert_eq!(token_status(&app, &key).await, StatusCode::OK);
    let events = app.receiver.wait_for(&id, 2).await;
    assert_eq!(events[1].kind, "auth_session.completed");
    assert_eq!(
        verify(&app, &key, &id, &code).await.status(),
        StatusCode::CONFLICT,
        "single use"
    );
}

#[tokio::test]
async fn five_wrong_codes_fail_the_session_and_drop_the_tokens() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let (id, code) = signed_in(&app, &key).await;
    for _ in 0..5 {
        assert_eq!(
            verify(&app, &key, &id, &wrong(&code)).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let (_, s) = app.session(&key, "acme", &id, None).await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error"]["code"], "verification_failed");
    assert_eq!(
        verify(&app, &key, &id, &code).await.status(),
        StatusCode::CONFLICT,
        "the right code is too late"
    );
    assert_eq!(token_status(&app, &key).await, StatusCode::NOT_FOUND);
    assert_eq!(
        app.provider.revocations().len(),
        1,
        "the tokens were revoked at the provider"
    );
}

/// Issue 24, finding 6: a flood of wrong codes at once. Each try is counted before its code is
/// compared, in one store step, so exactly five codes are ever compared (four answers say how many
/// tries are left, one fails the session); every other request is refused without a comparison,
/// and the right code sent afterwards finds the session failed.
async fn a_flood_of_wrong_codes_is_counted_before_any_is_compared(backend: Backend) {
    let app = spawn_with(Options {
        backend,
        ..Options::default()
    })
    .await;
    let key = app.setup_bot("acme").await;
    let (id, code) = signed_in(&app, &key).await;
    let bad = wrong(&code);
    let answers = futures_util::future::join_all((0..200).map(|_| async {
        let r = verify(&app, &key, &id, &bad).await;
        (r.status(), r.text().await.unwrap())
    }))
    .await;
    let compared: Vec<&(StatusCode, String)> = answers
        .iter()
        .filter(|(_, text)| text.contains("wrong code"))
        .collect();
    assert_eq!(
        compared.len(),
        5,
        "exactly the allowed tries were compared: {compared:?}"
    );
    for left in 1..=4 {
        let told = format!("wrong code; {left} attempt(s) left");
        assert_eq!(
            compared.iter().filter(|(_, t)| t.contains(&told)).count(),
            1,
            "{told}: {compared:?}"
        );
    }
    assert!(
        compared
            .iter()
            .all(|(s, _)| *s == StatusCode::UNPROCESSABLE_ENTITY),
        "{compared:?}"
    );
    // No try goes uncounted: the rest are told the session has failed (not "retry", which let
    // every one of them be compared without being counted).
    for (status, text) in answers.iter().filter(|(_, t)| !t.contains("wrong code")) {
        assert_eq!(*status, StatusCode::CONFLICT, "{text}");
        assert!(text.contains("failed"), "{text}");
    }
    let r = verify(&app, &key, &id, &code).await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "the right code is too late"
    );
    let (_, s) = app.session(&key, "acme", &id, None).await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error"]["code"], "verification_failed");
    assert_eq!(token_status(&app, &key).await, StatusCode::NOT_FOUND);
    assert_eq!(app.provider.revocations().len(), 1, "revoked once");
}

#[tokio::test]
async fn a_flood_of_wrong_codes_is_counted_before_any_is_compared_on_redis() {
    a_flood_of_wrong_codes_is_counted_before_any_is_compared(Backend::Redis).await;
}

#[tokio::test]
async fn a_flood_of_wrong_codes_is_counted_before_any_is_compared_on_memory() {
    a_flood_of_wrong_codes_is_counted_before_any_is_compared(Backend::Memory).await;
}

#[tokio::test]
async fn a_code_expires_with_its_session() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let (id, code) = signed_in(&app, &key).await;
    // The session reaches its deadline (as the sweeper would record it then).
    let sid = authlink::domain::SessionId::parse(&id).unwrap();
    let session = app.store.get_session(sid).await.unwrap().unwrap();
    let later = session.spec.expires_at + time::Duration::seconds(1);
    let expired = authlink::expiry::settle(&*app.store, session, later)
        .await
        .unwrap();
    assert_eq!(expired.status, authlink::domain::session::Status::Expired);
    assert_eq!(
        verify(&app, &key, &id, &code).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(token_status(&app, &key).await, StatusCode::NOT_FOUND);
}
