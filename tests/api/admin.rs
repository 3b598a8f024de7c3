//! Admin routes: bots, keys, integrations, and who may call what.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn bots_keys_and_integrations_round_trip() {
    let app = spawn_app().await;
    assert_eq!(app.put_bot("acme").await.status(), StatusCode::CREATED);
    assert_eq!(app.put_bot("acme").await.status(), StatusCode::OK);
    let bot: Value = app
        .call(Method::GET, "/v1/bots/acme", &app.operator_key, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bot["name"], "acme assistant");

    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/api-keys",
            &app.operator_key,
            Some(json!({"role": "admin", "name": "ci"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let secret = created["key"].as_str().unwrap();
    assert!(secret.starts_with("alk_"));
    let list: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/api-keys",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(secret),
        "listing never shows the key"
    );
    assert!(
        app.redis_dump().iter().all(|(_, v)| !v.contains(secret)),
        "stored hashed"
    );

    let r = app.put_integration("acme", "crm", json!({"provider": "salesforce", "scopes": ["api", "refresh_token"], "link_ttl_seconds": 600})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let i: Value = app
        .call(Method::GET, "/v1/bots/acme/integrations/crm", secret, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(i["mode"], "user");
    assert_eq!(i["profile"], "system");
    assert_eq!(
        i["callback_url"],
        format!("{}/oauth/callback/salesforce", app.base)
    );

    let id = created["id"].as_str().unwrap();
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/bots/acme/api-keys/{id}"),
            &app.operator_key,
            None
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::GET, "/v1/bots/acme", secret, None)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.call(Method::DELETE, "/v1/bots/acme", &app.operator_key, None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::GET, "/v1/bots/acme", &app.operator_key, None)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn integrations_are_validated() {
    let app = spawn_app().await;
    app.put_bot("acme").await;
    for (body, why) in [
        (json!({"provider": "oauth2"}), "no system app for oauth2"),
        (
            json!({"provider": "salesforce", "profile": "prof_1"}),
            "custom profiles",
        ),
        (
            json!({"provider": "salesforce", "salesforce": {"environment": "my_domain", "host": "https://evil.example.com"}}),
            "my domain host",
        ),
        (
            json!({"provider": "salesforce", "link_ttl_seconds": 5}),
            "ttl",
        ),
        (json!({"provider": "zoho"}), "unknown provider"),
        (
            json!({"provider": "salesforce", "scopes": ["a b"]}),
            "scope with a space",
        ),
    ] {
        let r = app.put_integration("acme", "crm", body).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
    }
    let r = app
        .put_integration("acme", "Bad Name", json!({"provider": "salesforce"}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.put_integration("acme", "crm", json!({"provider": "salesforce", "salesforce": {"environment": "my_domain", "host": "https://acme.my.salesforce.com"}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        app.put_integration("ghost", "crm", json!({"provider": "salesforce"}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn display_names_default_to_the_provider_and_bad_ones_change_nothing() {
    let app = spawn_app().await;
    app.put_bot("acme").await;
    let put = |extra: Value| {
        let mut body = json!({"provider": "salesforce"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        app.put_integration("acme", "crm", body)
    };
    let get = || async {
        let r = app
            .call(
                Method::GET,
                "/v1/bots/acme/integrations/crm",
                &app.operator_key,
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()
    };
    let r = put(json!({})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let shown = r.json::<Value>().await.unwrap();
    assert_eq!(shown["display_name"], "Salesforce", "the provider's name");
    assert_eq!(get().await["display_name"], "Salesforce");

    let r = put(json!({"display_name": "  Acme CRM  "})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let before = get().await;
    assert_eq!(before["display_name"], "Acme CRM", "trimmed");

    for (extra, why) in [
        (json!({"display_name": ""}), "empty"),
        (json!({"display_name": "   "}), "blank"),
        (json!({"display_name": "x".repeat(101)}), "too long"),
        (json!({"display_name": "two\nlines"}), "control character"),
        (json!({"display_name": 42}), "not a string"),
        (json!({"displayname": "Acme"}), "unknown field"),
    ] {
        let r = put(extra).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
        let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("application/problem+json"), "{why}");
    }
    assert_eq!(get().await, before, "nothing changed");
    let r = put(json!({"display_name": "é".repeat(100)})).await;
    assert_eq!(r.status(), StatusCode::OK, "100 characters, not bytes");
}

#[tokio::test]
async fn runtime_keys_cannot_administer() {
    let app = spawn_app().await;
    let runtime = app.setup_bot("acme").await;
    for (method, path, body) in [
        (Method::PUT, "/v1/bots/acme", Some(json!({"name": "x"}))),
        (Method::DELETE, "/v1/bots/acme", None),
        (Method::POST, "/v1/bots/acme/api-keys", Some(json!({}))),
        (Method::GET, "/v1/bots/acme/api-keys", None),
        (
            Method::PUT,
            "/v1/bots/acme/integrations/crm",
            Some(json!({"provider": "salesforce"})),
        ),
        (Method::DELETE, "/v1/bots/acme/integrations/crm", None),
    ] {
        let r = app.call(method.clone(), path, &runtime, body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    let bot: Value = app
        .call(Method::GET, "/v1/bots/acme", &runtime, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bot["name"], "acme assistant", "unchanged");
}

#[tokio::test]
async fn probes_answer() {
    let app = spawn_app().await;
    assert_eq!(
        app.api
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.api
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = app.api.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_revoked_key_stops_working_on_every_replica_at_once() {
    let a = spawn_app().await;
    let b = a.replica().await;
    a.put_bot("acme").await;
    let r = a
        .call(
            Method::POST,
            "/v1/bots/acme/api-keys",
            &a.operator_key,
            Some(json!({})),
        )
        .await;
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap();
    // B has the key cached now.
    assert_eq!(
        b.call(Method::GET, "/v1/bots/acme", key, None)
            .await
            .status(),
        StatusCode::OK
    );
    let id = created["id"].as_str().unwrap();
    let r = a
        .call(
            Method::DELETE,
            &format!("/v1/bots/acme/api-keys/{id}"),
            &a.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    crate::helpers::until_async(|| async {
        b.call(Method::GET, "/v1/bots/acme", key, None)
            .await
            .status()
            == StatusCode::UNAUTHORIZED
    })
    .await;
    // And a renamed bot is seen by B.
    let r = a
        .call(
            Method::PUT,
            "/v1/bots/acme",
            &a.operator_key,
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    crate::helpers::until_async(|| async {
        b.call(Method::GET, "/v1/bots/acme", &b.operator_key, None)
            .await
            .json::<Value>()
            .await
            .unwrap()["name"]
            == "Renamed"
    })
    .await;
}

/// Every bot-scoped route: another bot's admin key is answered 404 (as if the bot did not
/// exist), a runtime key on an admin route 403 — and nothing changes.
#[tokio::test]
async fn the_authorization_matrix_holds_for_every_bot_route() {
    let app = spawn_app().await;
    let runtime = app.setup_bot("acme").await;
    app.setup_bot("other").await;
    let r = app
        .call(
            Method::POST,
            "/v1/bots/other/api-keys",
            &app.operator_key,
            Some(json!({"role": "admin"})),
        )
        .await;
    let foreign_admin = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = app.new_session(&runtime, "acme", "u1").await;
    let sid = s["id"].as_str().unwrap();
    let before = app.redis_dump();

    let admin_routes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PUT,
            "/v1/bots/acme".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/v1/bots/acme".into(), None),
        (
            Method::POST,
            "/v1/bots/acme/api-keys".into(),
            Some(json!({})),
        ),
        (Method::GET, "/v1/bots/acme/api-keys".into(), None),
        (Method::DELETE, "/v1/bots/acme/api-keys/key_x".into(), None),
        (Method::GET, "/v1/bots/acme/integrations".into(), None),
        (
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections".into(),
            None,
        ),
        (
            Method::PUT,
            "/v1/bots/acme/integrations/crm".into(),
            Some(json!({"provider": "salesforce"})),
        ),
        (
            Method::DELETE,
            "/v1/bots/acme/integrations/crm".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/bots/acme/integrations/crm/pre-authorize".into(),
            None,
        ),
        (Method::POST, "/v1/bots/acme/webhook-secrets".into(), None),
        (Method::GET, "/v1/bots/acme/webhook-secrets".into(), None),
        (
            Method::DELETE,
            "/v1/bots/acme/webhook-secrets/whs_x".into(),
            None,
        ),
        (
            Method::GET,
            "/v1/bots/acme/webhook-deliveries?state=dead".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/bots/acme/webhook-deliveries/evt_x/replay".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/bots/acme/auth-profiles".into(),
            Some(json!({})),
        ),
        (Method::GET, "/v1/bots/acme/auth-profiles".into(), None),
        (
            Method::GET,
            "/v1/bots/acme/auth-profiles/prof_x".into(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/bots/acme/auth-profiles/prof_x".into(),
            None,
        ),
    ];
    let runtime_routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/bots/acme".into(), None),
        (Method::GET, "/v1/bots/acme/integrations/crm".into(), None),
        (
            Method::POST,
            "/v1/bots/acme/auth-sessions".into(),
            Some(json!({"integration": "crm", "user_id": "u2"})),
        ),
        (Method::GET, "/v1/bots/acme/auth-sessions".into(), None),
        (
            Method::GET,
            format!("/v1/bots/acme/auth-sessions/{sid}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/bots/acme/auth-sessions/{sid}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/bots/acme/auth-sessions/{sid}/events"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/bots/acme/auth-sessions/{sid}/verify"),
            Some(json!({"code": "000000"})),
        ),
        (
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token".into(),
            Some(json!({"user_id": "u1"})),
        ),
        (
            Method::GET,
            "/v1/bots/acme/integrations/crm/connections/u1".into(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/bots/acme/integrations/crm/connections/u1".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/bots/acme/integrations/crm/connections/u1/check".into(),
            None,
        ),
    ];
    for (method, path, body) in admin_routes.iter().chain(runtime_routes.iter()) {
        let r = app
            .call(method.clone(), path, &foreign_admin, body.clone())
            .await;
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "foreign admin key: {method} {path}"
        );
    }
    for (method, path, body) in &admin_routes {
        let r = app.call(method.clone(), path, &runtime, body.clone()).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "runtime key: {method} {path}"
        );
    }
    let mut after = app.redis_dump();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "nothing changed in the store");
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app().await;
    let r = app.api.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let spec: Value = r.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let expected = [
        ("get", "/v1/bots"),
        ("get", "/v1/bots/{bot}/integrations"),
        (
            "get",
            "/v1/bots/{bot}/integrations/{integration}/connections",
        ),
        ("get", "/v1/bots/{bot}/auth-sessions"),
        ("put", "/v1/bots/{bot}"),
        ("get", "/v1/bots/{bot}"),
        ("delete", "/v1/bots/{bot}"),
        ("post", "/v1/bots/{bot}/api-keys"),
        ("get", "/v1/bots/{bot}/api-keys"),
        ("delete", "/v1/bots/{bot}/api-keys/{key}"),
        ("put", "/v1/bots/{bot}/integrations/{integration}"),
        ("get", "/v1/bots/{bot}/integrations/{integration}"),
        ("delete", "/v1/bots/{bot}/integrations/{integration}"),
        (
            "post",
            "/v1/bots/{bot}/integrations/{integration}/pre-authorize",
        ),
        (
            "post",
            "/v1/bots/{bot}/integrations/{integration}/access-token",
        ),
        (
            "get",
            "/v1/bots/{bot}/integrations/{integration}/connections/{user}",
        ),
        (
            "delete",
            "/v1/bots/{bot}/integrations/{integration}/connections/{user}",
        ),
        (
            "post",
            "/v1/bots/{bot}/integrations/{integration}/connections/{user}/check",
        ),
        ("post", "/v1/bots/{bot}/webhook-secrets"),
        ("get", "/v1/bots/{bot}/webhook-secrets"),
        ("delete", "/v1/bots/{bot}/webhook-secrets/{id}"),
        ("get", "/v1/bots/{bot}/webhook-deliveries"),
        ("post", "/v1/bots/{bot}/webhook-deliveries/{id}/replay"),
        ("get", "/v1/bots/{bot}/channels"),
        ("post", "/channels/slack/{bot}/{name}/interactions"),
        ("put", "/v1/bots/{bot}/channels/{name}"),
        ("get", "/v1/bots/{bot}/channels/{name}"),
        ("delete", "/v1/bots/{bot}/channels/{name}"),
        ("post", "/v1/bots/{bot}/auth-profiles"),
        ("get", "/v1/bots/{bot}/auth-profiles"),
        ("get", "/v1/bots/{bot}/auth-profiles/{id}"),
        ("put", "/v1/bots/{bot}/auth-profiles/{id}"),
        ("delete", "/v1/bots/{bot}/auth-profiles/{id}"),
        ("post", "/v1/bots/{bot}/auth-sessions"),
        ("get", "/v1/bots/{bot}/auth-sessions/{id}"),
        ("delete", "/v1/bots/{bot}/auth-sessions/{id}"),
        ("get", "/v1/bots/{bot}/auth-sessions/{id}/events"),
        ("post", "/v1/bots/{bot}/auth-sessions/{id}/verify"),
        ("get", "/l/{link}"),
        ("post", "/l/{link}"),
        ("get", "/oauth/callback/{config}"),
        ("get", "/oauth/binding/{bot}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    let paths = spec["paths"].as_object().unwrap();
    let listed: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(listed, expected.len(), "exactly the served operations");
    for (method, path) in expected {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the spec");
        if path.starts_with("/v1/") {
            assert_eq!(
                op["security"][0]["bearer"],
                json!([]),
                "{method} {path} declares no auth"
            );
        }
    }
    let ids: std::collections::HashSet<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), expected.len(), "operation ids are unique");
    // Every link leads to an operation of the document; reading a bot (all an admin key may do
    // with it) leads on as creating it does.
    let ops = || paths.values().flat_map(|p| p.as_object().unwrap().values());
    for op in ops() {
        for response in op["responses"].as_object().unwrap().values() {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let to = link["operationId"].as_str().unwrap();
                assert!(
                    ids.contains(to),
                    "{}: link {name} to {to}",
                    op["operationId"]
                );
            }
        }
    }
    let links_of = |id: &str, status: &str| -> Vec<String> {
        let op = ops().find(|op| op["operationId"] == id).unwrap();
        let links = op["responses"][status]["links"].as_object().unwrap();
        links.keys().cloned().collect()
    };
    let from_get = links_of("admin_get_bot", "200");
    for name in links_of("admin_put_bot", "201") {
        assert!(
            from_get.contains(&name) || name == "GetBot" || name == "DeleteBot",
            "admin_get_bot has no link {name}"
        );
    }
    let create = &spec["paths"]["/v1/bots/{bot}/auth-sessions"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(create, "#/components/schemas/CreateBody");
    assert!(
        spec["components"]["schemas"]["CreateBody"]["properties"]["expected_identity"].is_object()
    );
    assert!(spec["components"]["schemas"]["CreateBody"]["properties"]["channel"].is_object());
    let channel = spec["components"]["schemas"]["ChannelBody"].to_string();
    for kind in [
        "slack", "teams", "telegram", "whatsapp", "matrix", "webhook",
    ] {
        assert!(
            channel.contains(&format!("\"{kind}\"")),
            "ChannelBody describes {kind}"
        );
    }
}
