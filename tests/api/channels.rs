//! The link sender: a bot's chat channels are configured (secrets write-only and sealed), a
//! session created with a `channel` has its link posted there by the outbox (retried on the
//! channel's own rate-limit signal, failed at once on a permanent error, without failing the
//! session), and the message is updated when the session settles. Slack, Teams, Telegram and
//! WhatsApp against loopback fakes of their documented APIs; Matrix against a real Synapse.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::fakes::slack::SlackFake;
use crate::fakes::teams::TeamsFake;
use crate::fakes::telegram::TelegramFake;
use crate::fakes::whatsapp::WhatsAppFake;
use crate::helpers::{Browser, TestApp, cancel, spawn_app, until_async_within};
use crate::receiver::Receiver;
use crate::synapse::Synapse;
use lossy::LossyProxy;

const SLACK_TOKEN: &str = "xoxb-1111-2222-secretslacktoken";
const TELEGRAM_TOKEN: &str = "123456789:AAHsecretTelegramTokenValue_abc";
const TEAMS_APP: &str = "0b5f5e1a-1111-4c2d-9d6e-5a6b7c8d9e0f";
const TEAMS_SECRET: &str = "teams-app-secret-Zq8~value";
const WHATSAPP_TOKEN: &str = "EAAGsecretWhatsAppToken123";
const PHONE_ID: &str = "106540352242922";

async fn put_channel(app: &TestApp, name: &str, body: Value) -> reqwest::Response {
    app.call(
        Method::PUT,
        &format!("/v1/bots/acme/channels/{name}"),
        &app.operator_key,
        Some(body),
    )
    .await
}

async fn created(app: &TestApp, name: &str, body: Value) {
    let r = put_channel(app, name, body).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
}

async fn session_to(app: &TestApp, key: &str, user: &str, channel: Value) -> Value {
    let r = app
        .create_session(
            key,
            "acme",
            json!({"integration": "crm", "user_id": user, "conversation_id": "conv-1", "channel": channel}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    r.json().await.unwrap()
}

/// The session's `delivery` once it has left `queued` (and, with `updated`, once the message was
/// changed too).
async fn delivery(app: &TestApp, key: &str, id: &str, updated: bool) -> Value {
    let done = |d: &Value| d["status"] != "queued" && (!updated || d["updated"] == true);
    until_async_within(Duration::from_secs(20), || async {
        let (_, s) = app.session(key, "acme", id, None).await;
        done(&s["delivery"])
    })
    .await;
    app.session(key, "acme", id, None).await.1["delivery"].clone()
}

#[tokio::test]
async fn channels_are_validated_and_their_secrets_are_write_only_sealed_and_admin_only() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    let invalid = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let no_token = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "api_base_url": slack.api_base_url}),
    )
    .await;
    assert!(invalid(no_token).await.contains("bot_token is required"));
    let bad = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": "hunter2"}),
    )
    .await;
    assert!(invalid(bad).await.contains("xoxb"));
    let unknown = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "colour": "red"}),
    )
    .await;
    assert!(unknown.status().is_client_error());
    let bad_type = put_channel(&app, "x", json!({"type": "fax"})).await;
    assert!(bad_type.status().is_client_error());
    let bad_tg = put_channel(
        &app,
        "tg",
        json!({"type": "telegram", "bot_token": "not-a-token"}),
    )
    .await;
    assert!(invalid(bad_tg).await.contains("BotFather"));
    let reserved = put_channel(
        &app,
        "webchat",
        json!({"type": "webhook", "url": "https://gw.example.com/x"}),
    )
    .await;
    assert!(invalid(reserved).await.contains("built in"));
    let creds = put_channel(
        &app,
        "gw",
        json!({"type": "webhook", "url": "https://u:p@gw.example.com/x"}),
    )
    .await;
    assert!(invalid(creds).await.contains("credentials"));

    created(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
    )
    .await;
    let got: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/channels/slack",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["type"], "slack");
    assert_eq!(got["secret_set"], true);
    assert_eq!(got["api_base_url"], slack.api_base_url.as_str());
    assert!(!got.to_string().contains(SLACK_TOKEN));
    // Updating without the token keeps it.
    let again = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "api_base_url": slack.api_base_url}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["secret_set"], true);
    let list: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/channels",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["channels"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(SLACK_TOKEN));

    // A runtime key may not manage channels; another bot's admin key does not see them.
    let r = app
        .call(Method::GET, "/v1/bots/acme/channels", &key, None)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    app.setup_bot("other").await;
    let other_admin: Value = app
        .call(
            Method::POST,
            "/v1/bots/other/api-keys",
            &app.operator_key,
            Some(json!({"role": "admin"})),
        )
        .await
        .json()
        .await
        .unwrap();
    let other = other_admin["key"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, "/v1/bots/acme/channels/slack"),
        (Method::GET, "/v1/bots/acme/channels"),
        (Method::DELETE, "/v1/bots/acme/channels/slack"),
    ] {
        let r = app.call(method, path, other, None).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = app
        .call(
            Method::PUT,
            "/v1/bots/acme/channels/evil",
            other,
            Some(json!({"type": "webhook", "url": "https://gw.example.com/x"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Sealed at rest: the token is nowhere in Redis.
    for (k, v) in app.redis_dump() {
        assert!(
            !v.contains(SLACK_TOKEN),
            "the Slack token is readable in {k}"
        );
    }

    // A session for a channel that is not configured, or an address that does not fit, is refused.
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "channel": {"name": "nope", "to": "C1"}}),
        )
        .await;
    assert!(invalid(r).await.contains("not configured"));
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u1", "channel": {"name": "slack", "to": "#general"}}))
        .await;
    assert!(invalid(r).await.contains("Slack channel id"));
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "channel": {"name": "slack"}}),
        )
        .await;
    assert!(invalid(r).await.contains("channel.to is required"));

    let r = app
        .call(
            Method::DELETE,
            "/v1/bots/acme/channels/slack",
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .call(
            Method::GET,
            "/v1/bots/acme/channels/slack",
            &app.operator_key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn telegram_refuses_link_hosts_without_a_dot_at_configuration_time() {
    let app = spawn_app().await;
    app.setup_bot("acme").await;
    let tg = TelegramFake::spawn(TELEGRAM_TOKEN).await;
    let dotless = app
        .replica_with(|c| {
            let port = c.public_url.port().unwrap();
            c.public_url = format!("http://localhost:{port}").parse().unwrap();
        })
        .await;
    let r = put_channel(
        &dotless,
        "tg",
        json!({"type": "telegram", "bot_token": TELEGRAM_TOKEN, "api_base_url": tg.api_base_url}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let detail = r.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("no dot") && detail.contains("localhost"),
        "{detail}"
    );
    // 127.0.0.1 has dots: fine.
    created(
        &app,
        "tg",
        json!({"type": "telegram", "bot_token": TELEGRAM_TOKEN, "api_base_url": tg.api_base_url}),
    )
    .await;
}

#[tokio::test]
async fn slack_gets_one_button_message_rate_limited_or_not_and_it_is_updated_on_completion() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel("C0CONV1", &["U0ALICE"]);
    created(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
    )
    .await;
    slack.rate_limit_next(1, 1);
    let s = session_to(&app, &key, "u1", json!({"name": "slack", "to": "C0CONV1"})).await;
    assert_eq!(s["delivery"]["status"], "queued");
    let id = s["id"].as_str().unwrap();
    let link = s["link"].as_str().unwrap();
    let d = delivery(&app, &key, id, false).await;
    assert_eq!(d["status"], "sent", "{d}");
    let messages = slack.messages("C0CONV1");
    assert_eq!(messages.len(), 1, "rate limited once, posted once");
    let requests = slack.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method == "chat.postMessage")
            .count(),
        2
    );
    assert_eq!(requests[0].status, 429);
    let m = &messages[0];
    assert_eq!(d["message_ref"], format!("C0CONV1:{}", m.ts).as_str());
    assert_eq!(m.unfurl_links, Some(false));
    assert_eq!(m.unfurl_media, Some(false));
    let text = m.text.clone().unwrap();
    assert!(
        text.contains("acme assistant") && text.contains("Salesforce"),
        "{text}"
    );
    assert!(
        !text.contains("http"),
        "no URL in the text (Slack fetches those)"
    );
    let blocks = m.blocks.clone().unwrap();
    let button = &blocks[1]["elements"][0];
    assert_eq!(button["url"], link);
    assert_eq!(button["text"]["text"], "Connect Salesforce");
    let events = app.receiver.wait_for(id, 1).await;
    assert_eq!(events[0].kind, "auth_link.delivered");
    assert_eq!(events[0].body["data"]["delivery"]["status"], "sent");

    // The person connects: the message loses its button and says as whom.
    let landing = Browser::new().authorize(link).await;
    assert_eq!(landing.status, StatusCode::OK);
    let d = delivery(&app, &key, id, true).await;
    assert_eq!(d["updated"], true);
    let m = &slack.messages("C0CONV1")[0];
    let text = m.text.clone().unwrap();
    assert!(text.starts_with("Connected to Salesforce as "), "{text}");
    assert!(!m.blocks.as_ref().unwrap().to_string().contains("button"));
}

#[tokio::test]
async fn a_permanent_channel_error_fails_the_delivery_at_once_but_not_the_session() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel_without_bot("C0NOBOT");
    created(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
    )
    .await;
    for (to, code) in [
        ("C0NOBOT", "not_in_channel"),
        ("C0GONE", "channel_not_found"),
    ] {
        let s = session_to(
            &app,
            &key,
            &format!("u-{to}"),
            json!({"name": "slack", "to": to}),
        )
        .await;
        let id = s["id"].as_str().unwrap();
        let d = delivery(&app, &key, id, false).await;
        assert_eq!(d["status"], "failed");
        assert_eq!(d["error"]["code"], code);
        let failed = app.receiver.wait_for(id, 1).await;
        assert_eq!(failed[0].kind, "auth_link.delivery_failed");
        assert_eq!(failed[0].body["data"]["delivery"]["error"]["code"], code);
        let (_, s) = app.session(&key, "acme", id, None).await;
        assert_eq!(s["status"], "pending", "the session goes on");
    }
    assert_eq!(
        slack
            .requests()
            .iter()
            .filter(|r| r.method == "chat.postMessage")
            .count(),
        2,
        "one attempt each, no retries"
    );
    // A revoked token is permanent too.
    slack.add_channel("C0OK", &[]);
    slack.fail_next("token_revoked");
    let s = session_to(
        &app,
        &key,
        "u-revoked",
        json!({"name": "slack", "to": "C0OK"}),
    )
    .await;
    let d = delivery(&app, &key, s["id"].as_str().unwrap(), false).await;
    assert_eq!(d["error"]["code"], "token_revoked");
}

/// Ephemeral messages (`user`): only the person sees them, and Slack lets an app change them
/// only through the `response_url` of that person's click — so with the app's signing secret
/// configured, authlink takes the click at its Interactivity Request URL (signature checked) and
/// updates the message on settle; without a click (or a secret), the message is left as it is.
#[tokio::test]
async fn slack_ephemerals_are_updated_through_the_clicks_response_url() {
    const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel("C0SHARED", &["U0BOB", "U0EVE"]);
    let r = put_channel(&app, "slack", json!({"type": "slack", "bot_token": SLACK_TOKEN, "signing_secret": SIGNING, "api_base_url": slack.api_base_url})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["signing_secret_set"], true);
    assert!(!view.to_string().contains(SIGNING));
    let interactions = view["interactions_url"].as_str().unwrap().to_owned();
    assert_eq!(
        interactions,
        app.url("/channels/slack/acme/slack/interactions")
    );

    let s = session_to(
        &app,
        &key,
        "bob",
        json!({"name": "slack", "to": "C0SHARED", "user": "U0BOB"}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    let d = delivery(&app, &key, id, false).await;
    assert_eq!(d["status"], "sent");
    let m = slack.messages("C0SHARED")[0].clone();
    assert!(m.ephemeral);
    assert_eq!(m.user.as_deref(), Some("U0BOB"));
    // Forged (another secret) and other people's clicks change nothing.
    assert_eq!(
        slack
            .click("C0SHARED", &m.ts, "U0BOB", &interactions, "not-the-secret")
            .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        slack
            .click("C0SHARED", &m.ts, "U0EVE", &interactions, SIGNING)
            .await,
        StatusCode::OK
    );
    let other = session_to(
        &app,
        &key,
        "eve",
        json!({"name": "slack", "to": "C0SHARED", "user": "U0EVE"}),
    )
    .await;
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(
        delivery(&app, &key, other_id, false).await["status"],
        "sent"
    );
    // Bob clicks: the reply URL is kept (sealed, never shown).
    assert_eq!(
        slack
            .click("C0SHARED", &m.ts, "U0BOB", &interactions, SIGNING)
            .await,
        StatusCode::OK
    );
    let (_, view) = app.session(&key, "acme", id, None).await;
    assert!(view["delivery"].get("reply_sealed").is_none());
    cancel(&app, &key, id).await;
    assert_eq!(delivery(&app, &key, id, true).await["updated"], true);
    let m = slack
        .messages("C0SHARED")
        .into_iter()
        .find(|x| x.ts == m.ts)
        .unwrap();
    assert_eq!(m.text.as_deref(), Some("Cancelled."));
    assert!(!m.blocks.unwrap().to_string().contains("button"));
    // Eve never clicked: her ephemeral stays as it was.
    cancel(&app, &key, other_id).await;
    until_async_within(Duration::from_secs(10), || async {
        app.store.backlog().await.unwrap() == 0
    })
    .await;
    let (_, view) = app.session(&key, "acme", other_id, None).await;
    assert_eq!(view["delivery"]["updated"], Value::Null);
    assert!(slack.requests().iter().all(|r| r.method != "chat.update"));
    for (k, v) in app.redis_dump() {
        assert!(
            !v.contains(SIGNING),
            "the signing secret is readable in {k}"
        );
        assert!(
            !v.contains("/actions/"),
            "a response_url is readable in {k}"
        );
    }
}

/// Issue 24, finding 10: whoever holds the app's signing secret (the bot's admin) can sign a
/// click whose `response_url` points anywhere, and authlink POSTs to it when the session
/// settles. Only Slack's hooks host (here: the fake's own host, the channel's API host) is kept;
/// a forged one is acknowledged, ignored, and never called.
#[tokio::test]
async fn a_forged_slack_response_url_is_refused_and_never_called() {
    const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    // Another server on loopback, standing for anywhere that is not Slack.
    let elsewhere = SlackFake::spawn("xoxb-someone-else").await;
    slack.add_channel("C0SHARED", &["U0BOB"]);
    let r = put_channel(&app, "slack", json!({"type": "slack", "bot_token": SLACK_TOKEN, "signing_secret": SIGNING, "api_base_url": slack.api_base_url})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let interactions = r.json::<Value>().await.unwrap()["interactions_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = session_to(
        &app,
        &key,
        "bob",
        json!({"name": "slack", "to": "C0SHARED", "user": "U0BOB"}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(delivery(&app, &key, id, false).await["status"], "sent");
    let m = slack.messages("C0SHARED")[0].clone();
    let forged = format!("{}/actions/forged", elsewhere.base_url);
    assert_eq!(
        slack
            .click_with_response_url(
                "C0SHARED",
                &m.ts,
                "U0BOB",
                &interactions,
                SIGNING,
                Some(&forged)
            )
            .await,
        StatusCode::OK
    );
    cancel(&app, &key, id).await;
    until_async_within(Duration::from_secs(10), || async {
        app.store.backlog().await.unwrap() == 0
    })
    .await;
    assert_eq!(elsewhere.replies(), Vec::new(), "the forged URL was called");
    assert!(slack.replies().is_empty());
    let (_, view) = app.session(&key, "acme", id, None).await;
    assert_eq!(view["delivery"]["updated"], Value::Null);
}

/// Issue 24, item 7: a channel's secret goes to its API URLs. Moving one to another host (scheme,
/// host, port) without the secret in the same update is a 422 naming the field, and changes
/// nothing: the next delivery still goes to the old host with the old token. A new path on the
/// same host keeps the secret; with the secret, the channel moves.
#[tokio::test]
async fn a_channels_urls_move_to_another_host_only_with_its_secret() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel("C0OK", &[]);
    let elsewhere = SlackFake::spawn("xoxb-someone-else").await;
    elsewhere.add_channel("C0OK", &[]);
    created(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
    )
    .await;
    let before: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/channels/slack",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let refused = |r: reqwest::Response, field: &'static str, secret: &'static str| async move {
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let detail = r.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            detail.contains(field) && detail.contains(secret),
            "{detail}"
        );
    };
    let r = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "api_base_url": elsewhere.api_base_url}),
    )
    .await;
    refused(r, "api_base_url", "bot_token").await;
    // Omitting the URL moves it too (to Slack's default host).
    let r = put_channel(&app, "slack", json!({"type": "slack"})).await;
    refused(r, "api_base_url", "bot_token").await;
    let after: Value = app
        .call(
            Method::GET,
            "/v1/bots/acme/channels/slack",
            &app.operator_key,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(after, before, "nothing changed");
    let s = session_to(&app, &key, "u1", json!({"name": "slack", "to": "C0OK"})).await;
    let d = delivery(&app, &key, s["id"].as_str().unwrap(), false).await;
    assert_eq!(d["status"], "sent");
    assert!(elsewhere.requests().is_empty(), "the token went elsewhere");

    // A path change on the same host keeps the token.
    let r = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "api_base_url": format!("{}/", slack.api_base_url)}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Teams: both the Connector and the login endpoint get the app's credentials.
    let teams = TeamsFake::spawn(TEAMS_APP, TEAMS_SECRET).await;
    let other = TeamsFake::spawn(TEAMS_APP, TEAMS_SECRET).await;
    let teams_body = |service: &TeamsFake, login: &TeamsFake, secret: Option<&str>| {
        let mut body = json!({
            "type": "teams", "app_id": TEAMS_APP,
            "service_url": service.service_url, "login_base_url": login.login_base_url,
        });
        if let Some(s) = secret {
            body["app_secret"] = json!(s);
        }
        body
    };
    created(
        &app,
        "teams",
        teams_body(&teams, &teams, Some(TEAMS_SECRET)),
    )
    .await;
    let r = put_channel(&app, "teams", teams_body(&other, &teams, None)).await;
    refused(r, "service_url", "app_secret").await;
    let r = put_channel(&app, "teams", teams_body(&teams, &other, None)).await;
    refused(r, "login_base_url", "app_secret").await;
    let r = put_channel(
        &app,
        "teams",
        teams_body(&other, &other, Some(TEAMS_SECRET)),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // With the token, the Slack channel moves, and its deliveries go to the new host.
    let r = put_channel(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": "xoxb-someone-else", "api_base_url": elsewhere.api_base_url}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let s = session_to(&app, &key, "u2", json!({"name": "slack", "to": "C0OK"})).await;
    let d = delivery(&app, &key, s["id"].as_str().unwrap(), false).await;
    assert_eq!(d["status"], "sent");
    assert_eq!(elsewhere.requests().len(), 1);
}

#[tokio::test]
async fn telegram_gets_an_inline_url_button_with_previews_off_and_an_edit_when_the_link_expires() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let tg = TelegramFake::spawn(TELEGRAM_TOKEN).await;
    tg.add_chat(424242);
    tg.add_chat(777);
    tg.block_bot(777);
    created(
        &app,
        "tg",
        json!({"type": "telegram", "bot_token": TELEGRAM_TOKEN, "api_base_url": tg.api_base_url}),
    )
    .await;
    tg.rate_limit_next(1, 1);
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "locale": "de", "ttl_seconds": 60, "channel": {"name": "tg", "to": "424242"}}),
        )
        .await;
    let s: Value = r.json().await.unwrap();
    let id = s["id"].as_str().unwrap();
    let d = delivery(&app, &key, id, false).await;
    assert_eq!(d["status"], "sent");
    let messages = tg.messages(424242);
    assert_eq!(
        messages.len(),
        1,
        "rate limited once (parameters.retry_after), posted once"
    );
    let m = &messages[0];
    assert_eq!(
        m.text,
        "acme assistant bittet Sie, Ihr Salesforce-Konto zu verbinden."
    );
    assert_eq!(
        m.link_preview_options.as_ref().unwrap()["is_disabled"],
        true
    );
    let button = &m.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0];
    assert_eq!(button["url"], s["link"]);
    assert_eq!(button["text"], "Salesforce verbinden");
    assert_eq!(
        d["message_ref"],
        format!("424242:{}", m.message_id).as_str()
    );

    // The link expires (the clock moves past it): the message says so and loses its button.
    app.state.clock.advance(Duration::from_secs(61));
    let d = delivery(&app, &key, id, true).await;
    assert_eq!(d["updated"], true);
    let m = &tg.messages(424242)[0];
    assert_eq!(m.text, "Dieser Link ist abgelaufen.");
    assert!(m.reply_markup.is_none(), "{:?}", m.reply_markup);

    // A chat that blocked the bot: 403, at once.
    let blocked = session_to(&app, &key, "u2", json!({"name": "tg", "to": "777"})).await;
    let d = delivery(&app, &key, blocked["id"].as_str().unwrap(), false).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"]["code"], "403");
}

#[tokio::test]
async fn teams_posts_an_adaptive_card_with_a_cached_token_refreshes_it_on_401_and_updates_on_cancel()
 {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let teams = TeamsFake::spawn(TEAMS_APP, TEAMS_SECRET).await;
    teams.add_conversation("a:1conv");
    created(
        &app,
        "teams",
        json!({
            "type": "teams", "app_id": TEAMS_APP, "app_secret": TEAMS_SECRET,
            "service_url": format!("{}/teams/", teams.base_url), "login_base_url": teams.base_url,
        }),
    )
    .await;
    teams.throttle_next(1, 1);
    let s = session_to(&app, &key, "u1", json!({"name": "teams", "to": "a:1conv"})).await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(delivery(&app, &key, id, false).await["status"], "sent");
    let second = session_to(&app, &key, "u2", json!({"name": "teams", "to": "a:1conv"})).await;
    assert_eq!(
        delivery(&app, &key, second["id"].as_str().unwrap(), false).await["status"],
        "sent"
    );
    let activities = teams.activities("a:1conv");
    assert_eq!(activities.len(), 2, "throttled once, each posted once");
    assert_eq!(
        teams.token_requests().len(),
        1,
        "one token for both (cached)"
    );
    let card = &activities[0].activity["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["actions"][0]["type"], "Action.OpenUrl");
    assert_eq!(card["content"]["actions"][0]["url"], s["link"]);

    // The token is refused early: a fresh one is fetched and the post goes through.
    teams.expire_tokens();
    let third = session_to(&app, &key, "u3", json!({"name": "teams", "to": "a:1conv"})).await;
    assert_eq!(
        delivery(&app, &key, third["id"].as_str().unwrap(), false).await["status"],
        "sent"
    );
    assert_eq!(teams.token_requests().len(), 2);

    cancel(&app, &key, id).await;
    assert_eq!(delivery(&app, &key, id, true).await["updated"], true);
    let updated = teams
        .activities("a:1conv")
        .into_iter()
        .find(|a| a.updates == 1)
        .unwrap();
    assert_eq!(updated.activity["text"], "Cancelled.");

    let gone = session_to(
        &app,
        &key,
        "u4",
        json!({"name": "teams", "to": "a:nowhere"}),
    )
    .await;
    let d = delivery(&app, &key, gone["id"].as_str().unwrap(), false).await;
    assert_eq!(d["error"]["code"], "ConversationNotFound");
}

/// Issue 24, finding 1: a Teams app id is public. Another bot configuring the victim's app id
/// with any secret and a Connector of its own must not be handed the victim's cached Bot
/// Framework token: tokens are cached per channel and per credential, so the wrong secret goes
/// to the login endpoint, is refused, and the delivery fails without any call to the
/// attacker's Connector. A third bot that really holds the app's secret gets a token of its own.
#[tokio::test]
async fn two_bots_sharing_a_teams_app_id_never_share_a_token() {
    let app = spawn_app().await;
    let victim_key = app.setup_bot("acme").await;
    let evil_key = app.setup_bot("evil").await;
    let twin_key = app.setup_bot("twin").await;
    let victim = TeamsFake::spawn(TEAMS_APP, TEAMS_SECRET).await;
    victim.add_conversation("a:1conv");
    // The attacker's own server, posing as a Connector: it records every bearer it is sent.
    let attacker = TeamsFake::spawn("attacker-app", "attacker-secret").await;
    attacker.add_conversation("a:1conv");
    let teams = |bot: &str, secret: &str, service_url: &str| {
        let body = json!({
            "type": "teams", "app_id": TEAMS_APP, "app_secret": secret,
            "service_url": service_url, "login_base_url": victim.login_base_url,
        });
        let path = format!("/v1/bots/{bot}/channels/teams");
        let app = &app;
        async move {
            let r = app
                .call(Method::PUT, &path, &app.operator_key, Some(body))
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    };
    teams("acme", TEAMS_SECRET, &victim.service_url).await;
    teams("evil", "any-secret-at-all", &attacker.service_url).await;
    teams("twin", TEAMS_SECRET, &victim.service_url).await;
    let deliver = |bot: &'static str, key: String| {
        let app = &app;
        async move {
            let r = app
                .create_session(
                    &key,
                    bot,
                    json!({"integration": "crm", "user_id": "u1", "channel": {"name": "teams", "to": "a:1conv"}}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            until_async_within(Duration::from_secs(20), || async {
                app.session(&key, bot, &id, None).await.1["delivery"]["status"] != "queued"
            })
            .await;
            app.session(&key, bot, &id, None).await.1["delivery"].clone()
        }
    };

    // The victim's delivery caches its token.
    assert_eq!(deliver("acme", victim_key).await["status"], "sent");
    let victim_token = victim.requests()[0].bearer.clone().unwrap();
    assert_eq!(
        victim.token_requests()[0].access_token.as_deref(),
        Some(victim_token.as_str())
    );

    // The attacker's delivery: its own (wrong) secret is tried at the login endpoint and refused.
    let d = deliver("evil", evil_key).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"]["code"], "invalid_client");
    assert!(
        attacker.requests().is_empty(),
        "the attacker's Connector was called: {:?}",
        attacker
            .requests()
            .iter()
            .map(|r| r.bearer.as_deref() == Some(victim_token.as_str()))
            .collect::<Vec<_>>()
    );
    let refused = victim.token_requests();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[1].form["client_secret"], "any-secret-at-all");
    assert_eq!(refused[1].error.as_deref(), Some("invalid_client"));

    // A bot with the app's real secret is another owner: it fetches a token of its own.
    assert_eq!(deliver("twin", twin_key).await["status"], "sent");
    let twin_token = victim.requests().last().unwrap().bearer.clone().unwrap();
    assert_ne!(twin_token, victim_token);
    assert_eq!(victim.token_requests().len(), 3);
}

#[tokio::test]
async fn whatsapp_sends_a_cta_url_inside_the_window_and_the_template_outside_it() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let wa = WhatsAppFake::spawn(WHATSAPP_TOKEN, PHONE_ID).await;
    wa.open_window("+16505550001");
    created(
        &app,
        "wa",
        json!({
            "type": "whatsapp", "access_token": WHATSAPP_TOKEN, "phone_number_id": PHONE_ID,
            "api_base_url": format!("{}/v23.0", wa.base_url),
        }),
    )
    .await;
    wa.rate_limit_next(1, 130429);
    let s = session_to(
        &app,
        &key,
        "u1",
        json!({"name": "wa", "to": "+16505550001"}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(delivery(&app, &key, id, false).await["status"], "sent");
    let m = wa.messages("+16505550001");
    assert_eq!(m.len(), 1, "rate limited (130429) once, sent once");
    assert_eq!(m[0].kind, "interactive");
    assert_eq!(m[0].body["interactive"]["type"], "cta_url");
    assert_eq!(
        m[0].body["interactive"]["action"]["parameters"]["url"],
        s["link"]
    );

    // Outside the 24-hour window without a template: 131047, at once.
    let out = session_to(
        &app,
        &key,
        "u2",
        json!({"name": "wa", "to": "+16505550002"}),
    )
    .await;
    let d = delivery(&app, &key, out["id"].as_str().unwrap(), false).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["error"]["code"], "131047");
    // With a template configured, it goes out as the template.
    wa.register_template("auth_link");
    let r = put_channel(&app, "wa", json!({
        "type": "whatsapp", "phone_number_id": PHONE_ID, "template": {"name": "auth_link", "language": "en_US"},
        "api_base_url": format!("{}/v23.0", wa.base_url),
    }))
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let templated = session_to(
        &app,
        &key,
        "u3",
        json!({"name": "wa", "to": "+16505550003"}),
    )
    .await;
    assert_eq!(
        delivery(&app, &key, templated["id"].as_str().unwrap(), false).await["status"],
        "sent"
    );
    let m = wa.messages("+16505550003");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, "template");
    let link = templated["link"].as_str().unwrap();
    let suffix = &m[0].body["template"]["components"][0]["parameters"][0]["text"];
    assert!(link.ends_with(suffix.as_str().unwrap()));

    // WhatsApp cannot edit: the settled session changes nothing there.
    cancel(&app, &key, id).await;
    until_async_within(Duration::from_secs(10), || async {
        app.store.backlog().await.unwrap() == 0
    })
    .await;
    assert_eq!(wa.messages("+16505550001").len(), 1);
}

#[tokio::test]
async fn a_webhook_gateway_gets_signed_issued_and_updated_events_and_webchat_needs_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let gateway = Receiver::spawn().await;
    let secret: Value = app.webhook_secret("acme").await;
    gateway.trust(secret["secret"].as_str().unwrap());
    created(&app, "gw", json!({"type": "webhook", "url": gateway.url})).await;
    let s = session_to(
        &app,
        &key,
        "u1",
        json!({"name": "gw", "to": "room-7", "thread": "t-1"}),
    )
    .await;
    let id = s["id"].as_str().unwrap();
    assert_eq!(delivery(&app, &key, id, false).await["status"], "sent");
    let issued = gateway.wait_for(id, 1).await;
    assert_eq!(issued[0].kind, "auth_link.issued");
    assert!(
        issued[0].verified.iter().any(|v| *v),
        "signed with the bot's secret"
    );
    let data = &issued[0].body["data"];
    assert_eq!(data["message"]["button"]["url"], s["link"]);
    assert_eq!(data["channel"]["to"], "room-7");
    cancel(&app, &key, id).await;
    let both = gateway.wait_for(id, 2).await;
    assert_eq!(both[1].kind, "auth_link.updated");
    assert_eq!(both[1].body["data"]["status"], "cancelled");

    let chat = session_to(&app, &key, "u2", json!({"name": "webchat"})).await;
    assert_eq!(chat["webchat"]["button"]["url"], chat["link"]);
    assert_eq!(chat["webchat"]["button"]["label"], "Connect Salesforce");
    assert!(
        chat["webchat"]["text"]
            .as_str()
            .unwrap()
            .contains("acme assistant")
    );
    assert!(chat.get("delivery").is_none());
    let r = app
        .create_session(&key, "acme", json!({"integration": "crm", "user_id": "u3", "channel": {"name": "webchat", "to": "x"}}))
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// Matrix against a real Synapse: the link message appears in the room once — also when the
/// answer to the first send is lost and the send is retried (the deterministic txnId makes the
/// homeserver recognise it) — and is edited (`m.replace`) when the person has connected.
#[tokio::test]
async fn matrix_rooms_get_the_link_once_even_after_a_lost_answer_and_an_edit_on_completion() {
    let synapse = Synapse::shared();
    let bot = synapse.register("authlink-bot").await;
    let alice = synapse.register("alice").await;
    let room = synapse.create_room(&alice).await;
    synapse.invite_and_join(&room, &alice, &bot).await;
    let proxy = LossyProxy::spawn(&synapse.base_url).await;

    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    created(
        &app,
        "mx",
        json!({"type": "matrix", "homeserver_url": proxy.url, "access_token": bot.access_token}),
    )
    .await;
    proxy.lose_next_send();
    let started = std::time::Instant::now();
    let s = session_to(&app, &key, "alice", json!({"name": "mx", "to": room})).await;
    let id = s["id"].as_str().unwrap();
    let d = delivery(&app, &key, id, false).await;
    eprintln!(
        "session created → message in the room: {:?}",
        started.elapsed()
    );
    assert_eq!(d["status"], "sent", "{d}");
    assert_eq!(
        proxy.sends(),
        2,
        "the first answer was lost, the send retried"
    );
    let notices: Vec<Value> = synapse
        .messages(&alice, &room)
        .await
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.notice")
        .collect();
    assert_eq!(notices.len(), 1, "posted once: {notices:?}");
    assert_eq!(notices[0]["event_id"], d["message_ref"]);
    let html = notices[0]["content"]["formatted_body"].as_str().unwrap();
    assert!(
        html.contains(&format!("href=\"{}\"", s["link"].as_str().unwrap())),
        "{html}"
    );

    let landing = Browser::new().authorize(s["link"].as_str().unwrap()).await;
    assert_eq!(landing.status, StatusCode::OK);
    assert_eq!(delivery(&app, &key, id, true).await["updated"], true);
    let edit = synapse
        .messages(&alice, &room)
        .await
        .into_iter()
        .find(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .expect("an edit");
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        d["message_ref"]
    );
    let new = edit["content"]["m.new_content"]["body"].as_str().unwrap();
    assert!(new.starts_with("Connected to Salesforce as "), "{new}");
    // A room the bot is not in: M_FORBIDDEN, at once.
    let other = synapse.create_room(&alice).await;
    let s = session_to(&app, &key, "alice2", json!({"name": "mx", "to": other})).await;
    let d = delivery(&app, &key, s["id"].as_str().unwrap(), false).await;
    assert_eq!(d["error"]["code"], "M_FORBIDDEN");
}

/// Channel secrets never leave the daemon: not in API answers, webhooks, channel messages of
/// other channels, logs or Redis.
#[tokio::test]
async fn channel_secrets_are_in_no_response_log_webhook_or_redis_value() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel("C0SEC", &[]);
    let tg = TelegramFake::spawn(TELEGRAM_TOKEN).await;
    tg.add_chat(99);
    let teams = TeamsFake::spawn(TEAMS_APP, TEAMS_SECRET).await;
    teams.add_conversation("a:sec");
    let wa = WhatsAppFake::spawn(WHATSAPP_TOKEN, PHONE_ID).await;
    wa.open_window("+16505550009");
    let mut answers = String::new();
    for (name, body) in [
        (
            "slack",
            json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
        ),
        (
            "tg",
            json!({"type": "telegram", "bot_token": TELEGRAM_TOKEN, "api_base_url": tg.api_base_url}),
        ),
        (
            "teams",
            json!({"type": "teams", "app_id": TEAMS_APP, "app_secret": TEAMS_SECRET, "service_url": format!("{}/teams/", teams.base_url), "login_base_url": teams.base_url}),
        ),
        (
            "wa",
            json!({"type": "whatsapp", "access_token": WHATSAPP_TOKEN, "phone_number_id": PHONE_ID, "api_base_url": format!("{}/v23.0", wa.base_url)}),
        ),
    ] {
        let r = put_channel(&app, name, body).await;
        answers.push_str(&r.text().await.unwrap());
    }
    let mut ids = Vec::new();
    for (user, channel) in [
        ("s1", json!({"name": "slack", "to": "C0SEC"})),
        ("s2", json!({"name": "tg", "to": "99"})),
        ("s3", json!({"name": "teams", "to": "a:sec"})),
        ("s4", json!({"name": "wa", "to": "+16505550009"})),
    ] {
        let s = session_to(&app, &key, user, channel).await;
        answers.push_str(&s.to_string());
        ids.push(s["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let d = delivery(&app, &key, id, false).await;
        assert_eq!(d["status"], "sent", "{d}");
        let (_, s) = app.session(&key, "acme", id, None).await;
        answers.push_str(&s.to_string());
    }
    let list = app
        .call(
            Method::GET,
            "/v1/bots/acme/channels",
            &app.operator_key,
            None,
        )
        .await;
    answers.push_str(&list.text().await.unwrap());
    let webhooks: String = app
        .receiver
        .log()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    let logs = crate::helpers::logs();
    let redis: String = app.redis_dump().into_iter().map(|(k, v)| k + &v).collect();
    for secret in [SLACK_TOKEN, TELEGRAM_TOKEN, TEAMS_SECRET, WHATSAPP_TOKEN] {
        assert!(!answers.contains(secret), "{secret} in an API answer");
        assert!(!webhooks.contains(secret), "{secret} in a webhook");
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!redis.contains(secret), "{secret} in Redis");
    }
}

mod lossy {
    //! A pass-through proxy in front of Synapse that can lose the answer to one message send:
    //! Synapse gets the request and posts the message, the client gets a 502 instead of the
    //! answer — the case an idempotency key exists for.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};

    #[derive(Clone)]
    pub struct LossyProxy {
        pub url: String,
        inner: Arc<Inner>,
    }

    struct Inner {
        upstream: String,
        lose_next: AtomicBool,
        sends: AtomicUsize,
    }

    impl LossyProxy {
        pub async fn spawn(upstream: &str) -> Self {
            let inner = Arc::new(Inner {
                upstream: upstream.trim_end_matches('/').to_owned(),
                lose_next: AtomicBool::new(false),
                sends: AtomicUsize::new(0),
            });
            let app = axum::Router::new()
                .fallback(forward)
                .with_state(inner.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self { url, inner }
        }
        pub fn lose_next_send(&self) {
            self.inner.lose_next.store(true, Ordering::SeqCst);
        }
        /// `PUT …/send/…` requests seen.
        pub fn sends(&self) -> usize {
            self.inner.sends.load(Ordering::SeqCst)
        }
    }

    async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let is_send = parts.method == axum::http::Method::PUT && path.contains("/send/");
        let mut out = reqwest::Client::new().request(
            reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
            format!("{}{path}", inner.upstream),
        );
        for name in ["authorization", "content-type"] {
            if let Some(v) = parts.headers.get(name) {
                out = out.header(name, v.to_str().unwrap());
            }
        }
        let answer = out.body(body).send().await.unwrap();
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
        let mut headers = HeaderMap::new();
        if let Some(v) = answer.headers().get("retry-after") {
            headers.insert("retry-after", v.to_str().unwrap().parse().unwrap());
        }
        let bytes = answer.bytes().await.unwrap();
        if is_send {
            inner.sends.fetch_add(1, Ordering::SeqCst);
            if inner.lose_next.swap(false, Ordering::SeqCst) {
                return (StatusCode::BAD_GATEWAY, "upstream answer lost").into_response();
            }
        }
        (status, headers, bytes).into_response()
    }
}

/// Every channel that can change a posted message does so on completion and on expiry: the
/// button goes, the text says how it ended.
#[tokio::test]
async fn every_editable_channel_updates_its_message_on_completion_and_on_expiry() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel("C0LIFE", &[]);
    let tg = TelegramFake::spawn(TELEGRAM_TOKEN).await;
    tg.add_chat(5150);
    let teams = TeamsFake::spawn(TEAMS_APP, TEAMS_SECRET).await;
    teams.add_conversation("a:life");
    let synapse = Synapse::shared();
    let bot = synapse.register("life-bot").await;
    let owner = synapse.register("life-owner").await;
    let room = synapse.create_room(&owner).await;
    synapse.invite_and_join(&room, &owner, &bot).await;
    created(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
    )
    .await;
    created(
        &app,
        "tg",
        json!({"type": "telegram", "bot_token": TELEGRAM_TOKEN, "api_base_url": tg.api_base_url}),
    )
    .await;
    created(&app, "teams", json!({"type": "teams", "app_id": TEAMS_APP, "app_secret": TEAMS_SECRET, "service_url": format!("{}/teams/", teams.base_url), "login_base_url": teams.base_url})).await;
    created(&app, "mx", json!({"type": "matrix", "homeserver_url": synapse.base_url, "access_token": bot.access_token})).await;
    let targets = [
        json!({"name": "slack", "to": "C0LIFE"}),
        json!({"name": "tg", "to": "5150"}),
        json!({"name": "teams", "to": "a:life"}),
        json!({"name": "mx", "to": room}),
    ];
    // The current text of the message each channel shows for a session.
    let shown = |n: usize, message_ref: String| {
        let (slack, tg, teams) = (slack.clone(), tg.clone(), teams.clone());
        let (owner, room) = (owner.clone(), room.clone());
        async move {
            match n {
                0 => {
                    let ts = message_ref.split_once(':').unwrap().1;
                    let m = slack
                        .messages("C0LIFE")
                        .into_iter()
                        .find(|m| m.ts == ts)
                        .unwrap();
                    (
                        m.text.unwrap(),
                        m.blocks.unwrap().to_string().contains("button"),
                    )
                }
                1 => {
                    let id: i64 = message_ref.split_once(':').unwrap().1.parse().unwrap();
                    let m = tg
                        .messages(5150)
                        .into_iter()
                        .find(|m| m.message_id == id)
                        .unwrap();
                    (m.text, m.reply_markup.is_some())
                }
                2 => {
                    let id = message_ref.rsplit_once('|').unwrap().1;
                    let a = teams
                        .activities("a:life")
                        .into_iter()
                        .find(|a| a.id == id)
                        .unwrap();
                    let card = a.activity["attachments"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty());
                    (a.activity["text"].as_str().unwrap().to_owned(), card)
                }
                _ => {
                    let c = synapse.current_content(&owner, &room, &message_ref).await;
                    let body = c["body"].as_str().unwrap().to_owned();
                    (body.clone(), body.contains("http"))
                }
            }
        }
    };
    // Completed: one session per channel, each signed in.
    let mut completed = Vec::new();
    for (n, t) in targets.iter().enumerate() {
        let s = session_to(&app, &key, &format!("done-{n}"), t.clone()).await;
        let d = delivery(&app, &key, s["id"].as_str().unwrap(), false).await;
        assert_eq!(d["status"], "sent", "{t}: {d}");
        let (text, button) = shown(n, d["message_ref"].as_str().unwrap().to_owned()).await;
        assert!(button && !text.contains("Connected"), "{t}: {text}");
        let landing = Browser::new().authorize(s["link"].as_str().unwrap()).await;
        assert_eq!(landing.status, StatusCode::OK);
        completed.push(s["id"].as_str().unwrap().to_owned());
    }
    for (n, id) in completed.iter().enumerate() {
        let d = delivery(&app, &key, id, true).await;
        let (text, button) = shown(n, d["message_ref"].as_str().unwrap().to_owned()).await;
        assert!(
            text.contains("Connected to Salesforce as "),
            "{}: {text}",
            targets[n]
        );
        assert!(!button, "{}: the button is gone", targets[n]);
    }
    // Expired: the clock moves past the links' end.
    let mut expiring = Vec::new();
    for (n, t) in targets.iter().enumerate() {
        let r = app
            .create_session(&key, "acme", json!({"integration": "crm", "user_id": format!("late-{n}"), "ttl_seconds": 60, "channel": t}))
            .await;
        let s: Value = r.json().await.unwrap();
        let d = delivery(&app, &key, s["id"].as_str().unwrap(), false).await;
        assert_eq!(d["status"], "sent");
        expiring.push(s["id"].as_str().unwrap().to_owned());
    }
    app.state.clock.advance(Duration::from_secs(61));
    for (n, id) in expiring.iter().enumerate() {
        let d = delivery(&app, &key, id, true).await;
        let (text, button) = shown(n, d["message_ref"].as_str().unwrap().to_owned()).await;
        assert_eq!(text, "This link expired.", "{}", targets[n]);
        assert!(!button);
    }
}

/// A homeserver that rate-limits the bot (429 `M_LIMIT_EXCEEDED`, `Retry-After`): the second
/// link waits as long as told and is then posted once.
#[tokio::test]
async fn a_rate_limited_matrix_bot_waits_as_told_and_posts_once() {
    let synapse = Synapse::start_tight();
    let bot = synapse.register("tight-bot").await;
    let owner = synapse.register("tight-owner").await;
    let room = synapse.create_room(&owner).await;
    synapse.invite_and_join(&room, &owner, &bot).await;
    synapse.limit_messages(&bot).await;
    let proxy = LossyProxy::spawn(&synapse.base_url).await;
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    created(
        &app,
        "mx",
        json!({"type": "matrix", "homeserver_url": proxy.url, "access_token": bot.access_token}),
    )
    .await;
    let first = session_to(&app, &key, "r1", json!({"name": "mx", "to": room})).await;
    assert_eq!(
        delivery(&app, &key, first["id"].as_str().unwrap(), false).await["status"],
        "sent"
    );
    let second = session_to(&app, &key, "r2", json!({"name": "mx", "to": room})).await;
    let d = delivery(&app, &key, second["id"].as_str().unwrap(), false).await;
    assert_eq!(d["status"], "sent", "{d}");
    assert!(
        proxy.sends() >= 3,
        "the second send was refused (429) first"
    );
    let notices = synapse
        .messages(&owner, &room)
        .await
        .into_iter()
        .filter(|e| e["content"]["msgtype"] == "m.notice")
        .count();
    assert_eq!(notices, 2);
}

/// A measurement aid, not a test: how many links one replica posts per second to a local Slack
/// fake (default concurrency: 8 per bot). `cargo test --release --test api -- --ignored
/// measure_channel_deliveries --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_channel_deliveries() {
    let n: usize = std::env::var("BENCH_SESSIONS").map_or(2000, |v| v.parse().unwrap());
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let slack = SlackFake::spawn(SLACK_TOKEN).await;
    slack.add_channel("C0BENCH", &[]);
    created(
        &app,
        "slack",
        json!({"type": "slack", "bot_token": SLACK_TOKEN, "api_base_url": slack.api_base_url}),
    )
    .await;
    let started = std::time::Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let users: Vec<String> = chunk.iter().map(|i| format!("b{i}")).collect();
        futures_util::future::join_all(
            users
                .iter()
                .map(|u| session_to(&app, &key, u, json!({"name": "slack", "to": "C0BENCH"}))),
        )
        .await;
    }
    let queued = started.elapsed();
    until_async_within(Duration::from_secs(600), || async {
        slack.messages("C0BENCH").len() >= n
    })
    .await;
    let all = started.elapsed();
    eprintln!(
        "{n} sessions created in {queued:?}; all {n} links posted after {all:?}: {:.0} deliveries/s",
        n as f64 / all.as_secs_f64()
    );
}

/// A measurement aid, not a test: the time from session creation to the link message being
/// readable in a Synapse room (median of 20). `cargo test --release --test api -- --ignored
/// measure_matrix_latency --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_matrix_latency() {
    let synapse = Synapse::shared();
    let bot = synapse.register("bench-bot").await;
    let owner = synapse.register("bench-owner").await;
    let room = synapse.create_room(&owner).await;
    synapse.invite_and_join(&room, &owner, &bot).await;
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    created(&app, "mx", json!({"type": "matrix", "homeserver_url": synapse.base_url, "access_token": bot.access_token})).await;
    let mut times = Vec::new();
    for i in 0..20 {
        let started = std::time::Instant::now();
        let s = session_to(
            &app,
            &key,
            &format!("lat{i}"),
            json!({"name": "mx", "to": room}),
        )
        .await;
        let link = s["link"].as_str().unwrap().to_owned();
        until_async_within(Duration::from_secs(20), || async {
            synapse.messages(&owner, &room).await.iter().any(|e| {
                e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.ends_with(&link))
            })
        })
        .await;
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "session created → message readable in the Synapse room: median {:?}, min {:?}, max {:?}",
        times[10], times[0], times[19]
    );
}
