//! The settings console and the end user's pages in a real browser (Chromium, driven by
//! Playwright from `tests/browser/console.mjs`), with JavaScript on and off: sign in, create a
//! bot, a webhook secret, an integration and a custom profile, pre-authorize through the whole
//! sign-in at the real OpenID provider (tests/oidc), Test, replay the dead letter the completion
//! left, refuse a cross-site form, sign out; another bot's admin key sees nothing of the bot.
//! Every page is screenshotted at desktop and phone widths (`target/screenshots/`) and checked
//! with axe-core: no violation of serious or critical impact. And the link's Continue
//! (`tests/browser/link.mjs`): the person's click reaches the provider, another site's form does
//! not. Needs `npm ci` in tests/browser and tests/oidc and Debian's `chromium` (all done by
//! `.ci/test`).

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::child::LineChild;
use crate::helpers::{OidcOptions, Options, TestApp, spawn_with, until_async_within};

const LOGIN: &str = "alice";
const CHROMIUM: &str = "/usr/bin/chromium";

async fn api_get(app: &TestApp, path: &str) -> Value {
    let r = app.call(Method::GET, path, &app.operator_key, None).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.json().await.unwrap()
}

async fn dead_letters(app: &TestApp, bot: &str) -> Vec<Value> {
    api_get(
        app,
        &format!("/v1/bots/{bot}/webhook-deliveries?state=dead"),
    )
    .await["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_console_and_the_end_user_pages_work_in_chromium_with_and_without_javascript() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for package in ["playwright-core", "axe-core"] {
        assert!(
            root.join("tests/browser/node_modules")
                .join(package)
                .is_dir(),
            "tests/browser/node_modules/{package} is missing: run `npm ci --prefix tests/browser` (.ci/test does)"
        );
    }
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/test does)"
    );
    let app = spawn_with(Options {
        oidc: Some(OidcOptions {
            access_token_ttl: 300,
            refresh_margin: 30,
            proactive_refresh: false,
        }),
        ..Options::default()
    })
    .await;
    // Another bot, and its admin key.
    app.setup_bot("other").await;
    let r = app
        .call(
            Method::POST,
            "/v1/bots/other/api-keys",
            &app.operator_key,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let other_admin = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The completion's webhook is refused until the test says otherwise: a dead letter.
    app.receiver.always(Some(500));

    let shots = root.join("target/screenshots");
    let mut command = Command::new("node");
    command
        .arg("console.mjs")
        .current_dir(root.join("tests/browser"))
        .env("AUTHLINK_URL", &app.base)
        .env("AUTHLINK_OPERATOR_KEY", &app.operator_key)
        .env("OTHER_BOT", "other")
        .env("OTHER_ADMIN_KEY", &other_admin)
        .env("RECEIVER_URL", &app.receiver.url)
        .env("OIDC_ISSUER", &app.oidc.as_ref().unwrap().issuer)
        .env("OIDC_LOGIN", LOGIN)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", CHROMIUM);
    let mut browser = LineChild::spawn(command);

    let mut scenarios = Vec::new();
    let mut screenshots = Vec::new();
    // axe's findings: page → violations.
    let mut axe: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut dead_event = None;
    loop {
        let event = browser.next_json().await;
        match event["event"].as_str().unwrap_or("") {
            "ready" | "copied" => {}
            "screenshot" => screenshots.push(event["file"].as_str().unwrap().to_owned()),
            "axe" => {
                let page = event["page"].as_str().unwrap().to_owned();
                axe.insert(page, event["violations"].as_array().unwrap().clone());
            }
            "webhook_secret" => {
                app.receiver.trust(event["secret"].as_str().unwrap());
                browser.send("ok").await;
            }
            "await_dead_letter" => {
                let bot = event["bot"].as_str().unwrap();
                until_async_within(std::time::Duration::from_secs(30), || async {
                    dead_letters(&app, bot).await.len() == 1
                })
                .await;
                let dead = dead_letters(&app, bot).await.remove(0);
                assert_eq!(dead["type"], "auth_session.completed", "{dead}");
                dead_event = Some(dead);
                app.receiver.always(None);
                browser.send("ok").await;
            }
            "replayed" => {
                let dead = dead_event.take().expect("a dead letter before the replay");
                let delivered = app
                    .receiver
                    .wait_for(dead["session_id"].as_str().unwrap(), 1)
                    .await;
                assert_eq!(delivered[0].id, dead["id"], "the same event, delivered");
                assert_eq!(
                    delivered[0].verified.last(),
                    Some(&true),
                    "signed with the secret the console showed (the last one trusted)"
                );
                let bot = event["bot"].as_str().unwrap();
                assert!(dead_letters(&app, bot).await.is_empty());
                // The next scenario's completion is refused again.
                app.receiver.always(Some(500));
                browser.send("ok").await;
            }
            "scenario_done" => scenarios.push(event["bot"].as_str().unwrap().to_owned()),
            "done" => break,
            other => panic!("unexpected event {other:?}: {event}"),
        }
    }
    let stderr = browser.stderr();
    browser.finish().await;
    assert_eq!(scenarios, ["acme-js", "acme-nojs"], "{stderr}");

    // Through the API: what the browser did, and what it could not do.
    for bot in &scenarios {
        let b = api_get(&app, &format!("/v1/bots/{bot}")).await;
        assert_eq!(b["webhook_url"], app.receiver.url.as_str());
        assert_ne!(b["name"], "Hacked", "the cross-site form changed nothing");
        let i = api_get(&app, &format!("/v1/bots/{bot}/integrations/crm")).await;
        assert_eq!(
            i["mode"], "pre_authorized",
            "the other bot's admin changed nothing"
        );
        assert_eq!(i["profile"], "system");
        let c = api_get(
            &app,
            &format!("/v1/bots/{bot}/integrations/crm/connections/_bot"),
        )
        .await;
        assert_eq!(
            c["identity"]["email"],
            format!("{LOGIN}@example.com"),
            "{c}"
        );
        let profiles = api_get(&app, &format!("/v1/bots/{bot}/auth-profiles")).await;
        assert_eq!(profiles["profiles"][0]["client_id"], "acme-custom-client");
    }

    // axe: every finding is printed; serious and critical ones fail the test.
    let mut serious = Vec::new();
    println!("axe-core on {} pages:", axe.len());
    for (page, violations) in &axe {
        if violations.is_empty() {
            println!("  {page}: none");
        }
        for v in violations {
            println!(
                "  {page}: {} ({}) {}: {}",
                v["id"].as_str().unwrap_or(""),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or(""),
                v["targets"]
            );
            if matches!(v["impact"].as_str(), Some("serious" | "critical")) {
                serious.push(format!("{page}: {v}"));
            }
        }
    }
    println!("{} screenshots in {}", screenshots.len(), shots.display());
    assert!(
        serious.is_empty(),
        "axe found serious or critical violations:\n{}",
        serious.join("\n")
    );
}

/// The link's Continue in Chromium (`tests/browser/link.mjs`), which sets `Sec-Fetch-Site` and
/// `Origin` itself: the person's own click reaches the provider's authorize URL and completes;
/// another site's auto-submitted form is refused with authlink's page, leaves no cookie, and the
/// session stays pending.
#[tokio::test]
async fn continue_in_chromium_is_same_origin_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "tests/browser/node_modules/playwright-core is missing: run `npm ci --prefix tests/browser` (.ci/test does)"
    );
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (.ci/test does)"
    );
    let app = crate::helpers::spawn_app().await;
    let key = app.setup_bot("acme").await;
    let mine = app.new_session(&key, "acme", "u-mine").await;
    let foreign = app.new_session(&key, "acme", "u-foreign").await;
    let authorize = format!("{}/services/oauth2/authorize?", app.provider.base_url);

    let mut command = Command::new("node");
    command
        .arg("link.mjs")
        .current_dir(root.join("tests/browser"))
        .env("LINK", mine["link"].as_str().unwrap())
        .env("FOREIGN_LINK", foreign["link"].as_str().unwrap())
        .env("PROVIDER_AUTHORIZE_URL", &authorize)
        .env("CHROMIUM", CHROMIUM);
    let mut browser = LineChild::spawn(command);
    let mut continued = None;
    let mut refused = None;
    loop {
        let event = browser.next_json().await;
        match event["event"].as_str().unwrap_or("") {
            "ready" => {}
            "continued" => continued = Some(event),
            "refused" => refused = Some(event),
            "done" => break,
            other => panic!("unexpected event {other:?}: {event}"),
        }
    }
    let stderr = browser.stderr();
    browser.finish().await;

    // The person's click: Chromium says same-origin, and the sign-in completes.
    let continued = continued.unwrap_or_else(|| panic!("no Continue: {stderr}"));
    assert_eq!(continued["post"]["status"], 303, "{continued}");
    assert_eq!(
        continued["post"]["sec_fetch_site"], "same-origin",
        "{continued}"
    );
    assert!(
        continued["authorize_url"]
            .as_str()
            .unwrap()
            .starts_with(&authorize),
        "{continued}"
    );
    assert_eq!(
        continued["heading"], "Salesforce is connected",
        "{continued}"
    );
    let (_, s) = app
        .session(&key, "acme", mine["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(s["status"], "completed");

    // Another site's form: Chromium says cross-site; nothing started, no cookie.
    let refused = refused.unwrap_or_else(|| panic!("no refusal: {stderr}"));
    assert_eq!(refused["post"]["status"], 403, "{refused}");
    assert_eq!(refused["landed"], foreign["link"], "{refused}");
    // Chromium says so by `Origin` (it sends no `Sec-Fetch-Site` from a plain-http site) or by
    // `Sec-Fetch-Site: cross-site`.
    assert!(
        refused["post"]["origin"] == "http://evil.example"
            || refused["post"]["sec_fetch_site"] == "cross-site",
        "{refused}"
    );
    assert_eq!(
        refused["heading"], "This came from another website",
        "{refused}"
    );
    assert_eq!(refused["cookies"], json!([]), "{refused}");
    let (_, s) = app
        .session(&key, "acme", foreign["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(s["status"], "pending");
}
