//! The list routes a settings console reads: bots (operator), a bot's integrations and who is
//! connected to one (admin), a bot's recent sessions (runtime) — each item exactly as its own
//! GET shows it, pages by `limit`/`cursor`, and bad query parameters refused with 422.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, Browser, Options, TestApp, spawn_app, spawn_with};

async fn get(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let r = app.call(Method::GET, path, key, None).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every query in `paths` is refused with a 422 problem.
async fn refused(app: &TestApp, key: &str, paths: &[&str]) {
    for path in paths {
        let r = app.call(Method::GET, path, key, None).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "validation_failed", "{path}");
    }
}

async fn admin_key(app: &TestApp, bot: &str) -> String {
    let r = app
        .call(
            Method::POST,
            &format!("/v1/bots/{bot}/api-keys"),
            &app.operator_key,
            Some(json!({"role": "admin"})),
        )
        .await;
    r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_operator_pages_through_the_bots_by_id() {
    let app = spawn_app().await;
    for bot in ["gamma", "acme", "beta"] {
        assert_eq!(app.put_bot(bot).await.status(), StatusCode::CREATED);
    }
    let op = &app.operator_key;
    let (status, first) = get(&app, op, "/v1/bots?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first["bots"], "id"), ["acme", "beta"]);
    let (_, acme) = get(&app, op, "/v1/bots/acme").await;
    assert_eq!(
        first["bots"][0], acme,
        "each bot as GET /v1/bots/{{bot}} shows it"
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = get(&app, op, &format!("/v1/bots?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second["bots"], "id"), ["gamma"]);
    assert_eq!(second["next_cursor"], Value::Null, "the last page");
    let (_, all) = get(&app, op, "/v1/bots").await;
    assert_eq!(ids(&all["bots"], "id"), ["acme", "beta", "gamma"]);

    // Bot keys, even admin ones, do not see the other tenants.
    let admin = admin_key(&app, "acme").await;
    assert_eq!(get(&app, &admin, "/v1/bots").await.0, StatusCode::FORBIDDEN);
    refused(
        &app,
        op,
        &[
            "/v1/bots?limit=0",
            "/v1/bots?limit=201",
            "/v1/bots?limit=ten",
            "/v1/bots?cursor=%21%21",
            "/v1/bots?cursor=Tk9UIEEgQk9U",
            "/v1/bots?sort=name",
        ],
    )
    .await;
}

async fn connect(app: &TestApp, key: &str, user: &str) {
    let s = app.new_session(key, "acme", user).await;
    let landing = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
}

async fn integrations_and_connections_are_listed_for_admins(app: TestApp) {
    let runtime = app.setup_bot("acme").await;
    let r = app
        .put_integration("acme", "billing", json!({"provider": "salesforce"}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let admin = admin_key(&app, "acme").await;

    let (status, list) = get(&app, &admin, "/v1/bots/acme/integrations").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list["integrations"], "name"), ["billing", "crm"]);
    let (_, crm) = get(&app, &admin, "/v1/bots/acme/integrations/crm").await;
    assert_eq!(
        list["integrations"][1], crm,
        "as GET of the integration shows it"
    );

    for user in ["u2", "u1", "u3"] {
        connect(&app, &runtime, user).await;
    }
    let path = "/v1/bots/acme/integrations/crm/connections";
    let (status, first) = get(&app, &admin, &format!("{path}?limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(ids(&first["connections"], "user_id"), ["u1", "u2"]);
    for c in first["connections"].as_array().unwrap() {
        let user = c["user_id"].as_str().unwrap();
        let (_, one) = get(&app, &admin, &format!("{path}/{user}")).await;
        assert_eq!(c, &one, "the same view as GET of the connection");
        assert_eq!(c["status"], "active");
        assert!(c["identity"].is_object() && c["created_at"].is_string());
    }
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = get(&app, &admin, &format!("{path}?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second["connections"], "user_id"), ["u3"]);
    assert_eq!(second["next_cursor"], Value::Null);
    let text = first.to_string() + &second.to_string();
    for user in ["u1", "u2", "u3"] {
        let t: Value = crate::tokens::token(&app, &runtime, user, false)
            .await
            .json()
            .await
            .unwrap();
        let token = t["access_token"].as_str().unwrap();
        assert!(!text.contains(token), "{user}'s token in the list");
    }

    // Disconnected: gone from the list. Another integration: nobody.
    let r = app
        .call(Method::DELETE, &format!("{path}/u2"), &runtime, None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (_, after) = get(&app, &app.operator_key, path).await;
    assert_eq!(ids(&after["connections"], "user_id"), ["u1", "u3"]);
    let (_, billing) = get(
        &app,
        &admin,
        "/v1/bots/acme/integrations/billing/connections",
    )
    .await;
    assert_eq!(billing["connections"], json!([]));

    assert_eq!(
        get(&app, &runtime, path).await.0,
        StatusCode::FORBIDDEN,
        "a runtime key does not list connections"
    );
    assert_eq!(
        get(&app, &admin, "/v1/bots/acme/integrations/erp/connections")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    refused(
        &app,
        &admin,
        &[
            &format!("{path}?limit=0"),
            &format!("{path}?limit=-1"),
            &format!("{path}?cursor=not*base64"),
            &format!("{path}?status=active"),
        ],
    )
    .await;
}

#[tokio::test]
async fn integrations_and_connections_are_listed_for_admins_on_redis() {
    integrations_and_connections_are_listed_for_admins(spawn_app().await).await;
}

#[tokio::test]
async fn integrations_and_connections_are_listed_for_admins_in_memory() {
    integrations_and_connections_are_listed_for_admins(
        spawn_with(Options {
            backend: Backend::Memory,
            ..Options::default()
        })
        .await,
    )
    .await;
}

#[tokio::test]
async fn a_bot_lists_its_recent_sessions_newest_first() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let other = app.setup_bot("other").await;
    app.new_session(&other, "other", "u9").await;
    let mut created = Vec::new();
    for user in ["u1", "u2", "u3"] {
        let s = app.new_session(&key, "acme", user).await;
        created.push(s["id"].as_str().unwrap().to_owned());
        // Creation times a second apart, whatever the partitions.
        app.state.clock.advance(Duration::from_secs(1));
    }
    crate::helpers::cancel(&app, &key, &created[1]).await;
    let newest: Vec<String> = created.iter().rev().cloned().collect();

    let path = "/v1/bots/acme/auth-sessions";
    let (status, list) = get(&app, &key, path).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list["sessions"], "id"), newest);
    for s in list["sessions"].as_array().unwrap() {
        let (_, one) = app
            .session(&key, "acme", s["id"].as_str().unwrap(), None)
            .await;
        assert_eq!(s, &one, "the same view as GET of the session");
    }
    let (_, two) = get(&app, &key, &format!("{path}?limit=2")).await;
    assert_eq!(ids(&two["sessions"], "id"), newest[..2]);
    let (_, cancelled) = get(&app, &key, &format!("{path}?status=cancelled")).await;
    assert_eq!(ids(&cancelled["sessions"], "id"), [created[1].clone()]);
    let (_, pending) = get(&app, &app.operator_key, &format!("{path}?status=pending")).await;
    assert_eq!(
        ids(&pending["sessions"], "id"),
        [created[2].clone(), created[0].clone()]
    );
    refused(
        &app,
        &key,
        &[
            &format!("{path}?limit=0"),
            &format!("{path}?limit=101"),
            &format!("{path}?status=done"),
            &format!("{path}?cursor=x"),
        ],
    )
    .await;
}
