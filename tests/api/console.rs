//! The settings console (`/console`) over plain HTTP, as a browser without JavaScript uses it:
//! sign-in trades a key for a `HttpOnly; SameSite=Strict` session cookie, every form carries the
//! session's token, and each action goes through the API's own handler — so the API sees every
//! change, and the API's errors appear next to the fields they concern.

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Browser, TestApp, spawn_app, until_async};

/// A browser signed in to the console with `key`.
async fn signed_in(app: &TestApp, key: &str) -> Browser {
    let mut b = Browser::new();
    let r = b
        .submit(&app.url("/console/sign-in"), &[("key", key)], &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(key),
        "the key itself is never in the cookie"
    );
    b
}

/// GET a console page: (status, HTML).
async fn page(b: &mut Browser, app: &TestApp, path: &str) -> (StatusCode, String) {
    let r = b.get(&app.url(path)).await;
    (r.status(), r.text().await.unwrap())
}

/// The form token in a page.
fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Submit a console form with the page's token: (status, Location or body).
async fn post(
    b: &mut Browser,
    app: &TestApp,
    path: &str,
    token: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut all = vec![("csrf", token)];
    all.extend_from_slice(fields);
    let r = b.submit(&app.url(path), &all, &[]).await;
    let status = r.status();
    let out = match r.headers().get(LOCATION) {
        Some(l) => l.to_str().unwrap().to_owned(),
        None => r.text().await.unwrap(),
    };
    (status, out)
}

async fn api_get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let r = app.call(Method::GET, path, &app.operator_key, None).await;
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_operator_signs_in_creates_a_bot_sees_api_errors_by_their_field_and_signs_out() {
    let app = spawn_app().await;
    let mut anon = Browser::new();
    let (status, html) = page(&mut anon, &app, "/console").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<label for=\"f-key\">"), "{html}");
    // A wrong key: the sign-in page again, the error tied to the field.
    let r = anon
        .submit(&app.url("/console/sign-in"), &[("key", "nope")], &[])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("aria-invalid=\"true\""));

    let mut b = signed_in(&app, &app.operator_key).await;
    let r = b.get(&app.url("/console")).await;
    assert_eq!(r.headers()[LOCATION], "/console/bots");
    let (status, html) = page(&mut b, &app, "/console/bots").await;
    assert_eq!(status, StatusCode::OK);
    let token = csrf(&html);

    // The API's own validation, shown next to the field; nothing created.
    let (status, html) = post(
        &mut b,
        &app,
        "/console/bots",
        &token,
        &[
            ("bot", "acme"),
            ("name", "Acme"),
            ("webhook_url", "ftp://x"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"f-webhook_url\" name=\"webhook_url\" type=\"url\" value=\"ftp://x\" aria-invalid=\"true\""), "{html}");
    assert_eq!(
        api_get(&app, "/v1/bots/acme").await.0,
        StatusCode::NOT_FOUND
    );

    let (status, to) = post(
        &mut b,
        &app,
        "/console/bots",
        &token,
        &[
            ("bot", "acme"),
            ("name", "Acme assistant"),
            ("allowed_return_hosts", "chat.example.com"),
        ],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/console/bots/acme?done=saved")
    );
    let (_, bot) = api_get(&app, "/v1/bots/acme").await;
    assert_eq!(bot["name"], "Acme assistant");
    assert!(
        page(&mut b, &app, "/console/bots")
            .await
            .1
            .contains("<a href=\"/console/bots/acme\">acme</a>")
    );
    assert_eq!(bot["allowed_return_hosts"][0], "chat.example.com");
    let (status, html) = page(&mut b, &app, "/console/bots/acme?done=saved").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("role=\"status\">Saved.</p>"));

    // Signing out ends the session in the store: the old cookie is worth nothing.
    let old = b.cookie_string();
    let (status, to) = post(&mut b, &app, "/console/sign-out", &token, &[]).await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/console?signed-out")
    );
    let r = reqwest::Client::new()
        .get(app.url("/console/bots"))
        .header(reqwest::header::COOKIE, old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forms_without_the_token_or_from_another_site_change_nothing() {
    let app = spawn_app().await;
    let mut b = signed_in(&app, &app.operator_key).await;
    let (_, html) = page(&mut b, &app, "/console/bots").await;
    let token = csrf(&html);
    let fields = [("bot", "acme"), ("name", "Acme")];
    let r = b.submit(&app.url("/console/bots"), &fields, &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .submit(
            &app.url("/console/bots"),
            &[("csrf", "forged"), fields[0], fields[1]],
            &[],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let with_token = [("csrf", token.as_str()), fields[0], fields[1]];
    for cross in [
        [("origin", "https://evil.example")],
        [("sec-fetch-site", "cross-site")],
    ] {
        let r = b
            .submit(&app.url("/console/bots"), &with_token, &cross)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    // Under the pages' `Referrer-Policy: no-referrer` a browser posts our own forms with
    // `Origin: null`; its `Sec-Fetch-Site` says they are ours. Without that header, `null` is not.
    let r = b
        .submit(
            &app.url("/console/bots"),
            &with_token,
            &[("origin", "null")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        api_get(&app, "/v1/bots/acme").await.0,
        StatusCode::NOT_FOUND
    );
    let r = Browser::new()
        .submit(
            &app.url("/console/sign-in"),
            &[("key", &app.operator_key)],
            &[("origin", "null"), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "our own sign-in form");
    // Sign-in from another site is refused too (login CSRF).
    let r = Browser::new()
        .submit(
            &app.url("/console/sign-in"),
            &[("key", &app.operator_key)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(
        api_get(&app, "/v1/bots/acme").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_admin_key_sees_only_its_own_bot_and_its_revocation_ends_the_session() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    app.setup_bot("other").await;
    let r = app
        .call(
            Method::POST,
            "/v1/bots/other/api-keys",
            &app.operator_key,
            Some(serde_json::json!({"role": "admin"})),
        )
        .await;
    let created: Value = r.json().await.unwrap();
    let admin = created["key"].as_str().unwrap();
    // A runtime key cannot sign in.
    let runtime = app.new_key("other").await;
    let r = Browser::new()
        .submit(&app.url("/console/sign-in"), &[("key", &runtime)], &[])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let mut b = signed_in(&app, admin).await;
    let r = b.get(&app.url("/console")).await;
    assert_eq!(r.headers()[LOCATION], "/console/bots/other");
    let (status, html) = page(&mut b, &app, "/console/bots/other").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let token = csrf(&html);
    // Another bot does not exist for this key, to read or to change.
    assert_eq!(
        page(&mut b, &app, "/console/bots/acme").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        page(&mut b, &app, "/console/bots/acme/integrations/crm")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, keys) = api_get(&app, "/v1/bots/acme/api-keys").await;
    let acme_key = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = post(
        &mut b,
        &app,
        &format!("/console/bots/acme/keys/{acme_key}/revoke"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, after) = api_get(&app, "/v1/bots/acme/api-keys").await;
    assert_eq!(after, keys);
    // The bots list and bot settings are the operator's.
    assert_eq!(
        page(&mut b, &app, "/console/bots").await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = post(
        &mut b,
        &app,
        "/console/bots/other",
        &token,
        &[("name", "Renamed")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Revoking the admin key (here, through the API) ends its console session at once.
    let id = created["id"].as_str().unwrap();
    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/bots/other/api-keys/{id}"),
            &app.operator_key,
            None,
        )
        .await;
    assert!(r.status().is_success());
    assert_eq!(
        page(&mut b, &app, "/console/bots/other").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn new_keys_and_webhook_secrets_are_shown_once_and_work() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    let mut b = signed_in(&app, &app.operator_key).await;
    let (_, html) = page(&mut b, &app, "/console/bots/acme").await;
    let token = csrf(&html);
    let (status, html) = post(
        &mut b,
        &app,
        "/console/bots/acme/keys",
        &token,
        &[("name", "dialog engine"), ("role", "runtime")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let at = html.find("<p class=\"secret\">").expect("the new key") + 18;
    let key = html[at..].split('<').next().unwrap().to_owned();
    assert!(key.starts_with("alk_"));
    let r = app
        .call(Method::GET, "/v1/bots/acme/integrations/crm", &key, None)
        .await;
    assert_eq!(r.status(), StatusCode::OK, "the new key works");
    let (_, again) = page(&mut b, &app, "/console/bots/acme").await;
    assert!(!again.contains(&key), "shown once");
    assert!(again.contains("dialog engine"));

    let (status, html) = post(&mut b, &app, "/console/bots/acme/secrets", &token, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let at = html.find("<p class=\"secret\">").expect("the new secret") + 18;
    let secret = html[at..].split('<').next().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(
        !page(&mut b, &app, "/console/bots/acme")
            .await
            .1
            .contains(&secret)
    );
}

#[tokio::test]
async fn the_integration_page_pre_authorizes_in_the_same_browser_and_shows_who_signed_in() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    let mut b = signed_in(&app, &app.operator_key).await;
    let path = "/console/bots/acme/integrations/crm";
    let (status, html) = page(&mut b, &app, path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Each user gets a sign-in link"));
    assert!(
        html.contains("<legend>Who authorizes</legend>")
            && html.contains("<legend>OAuth app</legend>")
    );
    assert!(html.contains("id=\"callback-url\""));
    let token = csrf(&html);

    let (status, to) = post(
        &mut b,
        &app,
        path,
        &token,
        &[
            ("mode", "pre_authorized"),
            ("app", "system"),
            ("scopes", ""),
        ],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/console/bots/acme/integrations/crm?done=saved"
        )
    );
    let (_, integration) = api_get(&app, "/v1/bots/acme/integrations/crm").await;
    assert_eq!(integration["mode"], "pre_authorized");
    let (_, html) = page(&mut b, &app, path).await;
    assert!(html.contains("Nobody has authorized yet"));

    // Authorize: the pre-authorize link, walked in this browser, back to the console.
    let (status, link) = post(&mut b, &app, &format!("{path}/authorize"), &token, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(link.contains("/l/"), "{link}");
    let landing = b.authorize(&link).await;
    assert_eq!(landing.status, StatusCode::OK);
    assert!(
        landing.body.contains(&format!("{path}?done=authorized")),
        "the way back: {}",
        landing.body
    );
    let (_, html) = page(&mut b, &app, &format!("{path}?done=authorized")).await;
    assert!(html.contains("Every user acts as"), "{html}");
    assert!(html.contains("Signed in as"));
    // The connection is listed, and the bot's page shows the session and the integration.
    assert!(html.contains("/connections/_bot/test"), "{html}");
    let (_, bot_page) = page(&mut b, &app, "/console/bots/acme").await;
    assert!(bot_page.contains("href=\"/console/bots/acme/integrations/crm\""));
    assert!(bot_page.contains("<td>completed</td>"), "{bot_page}");

    // Test the bot-wide connection.
    let (status, html) = post(
        &mut b,
        &app,
        &format!("{path}/connections/_bot/test"),
        &token,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("The connection works."), "{html}");
}

#[tokio::test]
async fn a_custom_profile_starts_from_salesforces_urls_and_becomes_the_integrations_app() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    let mut b = signed_in(&app, &app.operator_key).await;
    let path = "/console/bots/acme/integrations/crm";
    let (_, html) = page(&mut b, &app, path).await;
    if app.config.salesforce.is_some() {
        assert!(html.contains("value=\"https://login.salesforce.com/services/oauth2/authorize\""));
        assert!(html.contains("value=\"full refresh_token offline_access\""));
    }
    let token = csrf(&html);
    let profile = [
        ("name", "Acme connected app"),
        ("client_id", ""),
        ("client_secret", "s3cret-value"),
        (
            "authorization_url",
            "https://login.salesforce.com/services/oauth2/authorize",
        ),
        (
            "token_url",
            "https://login.salesforce.com/services/oauth2/token",
        ),
        (
            "refresh_token_url",
            "https://login.salesforce.com/services/oauth2/token",
        ),
        ("scopes", "full refresh_token offline_access"),
    ];
    let (status, html) = post(&mut b, &app, &format!("{path}/profiles"), &token, &profile).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"f-client_id-error\""), "{html}");
    assert!(!html.contains("s3cret-value"), "the secret is never echoed");
    assert_eq!(
        api_get(&app, "/v1/bots/acme/auth-profiles").await.1["profiles"],
        serde_json::json!([])
    );

    let mut good = profile;
    good[1] = ("client_id", "3MVG9.acme");
    let (status, to) = post(&mut b, &app, &format!("{path}/profiles"), &token, &good).await;
    assert_eq!(
        (status, to.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/console/bots/acme/integrations/crm?done=saved"
        )
    );
    let (_, profiles) = api_get(&app, "/v1/bots/acme/auth-profiles").await;
    let id = profiles["profiles"][0]["id"].as_str().unwrap().to_owned();
    let (_, integration) = api_get(&app, "/v1/bots/acme/integrations/crm").await;
    assert_eq!(integration["profile"], id.as_str());
    let (_, html) = page(&mut b, &app, path).await;
    assert!(html.contains(profiles["profiles"][0]["callback_url"].as_str().unwrap()));
    assert!(!html.contains("s3cret-value"));
}

#[tokio::test]
async fn a_dead_letter_is_replayed_from_the_bots_page() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    app.receiver.always(Some(500));
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    crate::helpers::cancel(&app, &key, id).await;
    let dead = || async {
        api_get(&app, "/v1/bots/acme/webhook-deliveries?state=dead")
            .await
            .1["deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    until_async(|| async { dead().await.len() == 1 }).await;
    let event = dead().await[0]["id"].as_str().unwrap().to_owned();
    let mut b = signed_in(&app, &app.operator_key).await;
    let (_, html) = page(&mut b, &app, "/console/bots/acme").await;
    assert!(html.contains(&format!("/console/bots/acme/dead-letters/{event}/replay")));
    app.receiver.always(None);
    let (status, to) = post(
        &mut b,
        &app,
        &format!("/console/bots/acme/dead-letters/{event}/replay"),
        &csrf(&html),
        &[],
    )
    .await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/console/bots/acme?done=replayed")
    );
    let delivered = app.receiver.wait_for(id, 1).await;
    assert_eq!(delivered[0].id, event);
}

#[tokio::test]
async fn disable_stops_new_links_and_tokens_until_enabled_again() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mut b = signed_in(&app, &app.operator_key).await;
    let path = "/console/bots/acme/integrations/crm";
    let (_, html) = page(&mut b, &app, path).await;
    let token = csrf(&html);
    let (status, _) = post(&mut b, &app, &format!("{path}/disable"), &token, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = page(&mut b, &app, path).await;
    assert!(html.contains("Disabled: no new links or tokens are given out."));
    let r = app
        .create_session(
            &key,
            "acme",
            serde_json::json!({"integration": "crm", "user_id": "u1"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = app
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            &key,
            Some(serde_json::json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // An API update that does not mention `enabled` leaves it off.
    let r = app
        .put_integration("acme", "crm", serde_json::json!({"provider": "salesforce"}))
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["enabled"], false);

    let (status, _) = post(&mut b, &app, &format!("{path}/enable"), &token, &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let r = app
        .create_session(
            &key,
            "acme",
            serde_json::json!({"integration": "crm", "user_id": "u1"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn try_it_creates_a_session_link_that_signs_a_user_in_and_lists_the_connection() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    let mut b = signed_in(&app, &app.operator_key).await;
    let path = "/console/bots/acme/integrations/crm";
    let (_, html) = page(&mut b, &app, path).await;
    let (status, html) = post(
        &mut b,
        &app,
        &format!("{path}/links"),
        &csrf(&html),
        &[("user_id", "ada")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let at = html.find("/l/").expect("the new link on the page");
    let start = html[..at].rfind('"').unwrap() + 1;
    let link = html[start..].split('"').next().unwrap().to_owned();
    assert_eq!(Browser::new().authorize(&link).await.status, StatusCode::OK);
    let (_, html) = page(&mut b, &app, path).await;
    assert!(html.contains("<td>ada</td>"), "{html}");
    let (status, _) = api_get(&app, "/v1/bots/acme/integrations/crm/connections/ada").await;
    assert_eq!(status, StatusCode::OK);
}
