//! ② The link: the interstitial changes nothing; tampered and expired links are rejected before
//! any store access; Continue starts a PKCE attempt with a binding cookie.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Browser, Options, spawn_app, spawn_with};

#[tokio::test]
async fn the_interstitial_changes_nothing_and_names_bot_and_provider() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let link = s["link"].as_str().unwrap();
    let path = link.strip_prefix(&app.base).unwrap();
    assert!(path.len() < 100, "link path is {} characters", path.len());

    let token = path.rsplit('/').next().unwrap();

    let mut unfurler = Browser::new();
    let mut form_cookie = None;
    for _ in 0..3 {
        let page = unfurler.land(link).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("acme assistant"));
        assert!(page.body.contains("Salesforce"));
        // The host of the provider's authorize URL (the fake Salesforce is on loopback).
        assert!(
            page.body.contains("You will sign in at 127.0.0.1;"),
            "{}",
            page.body
        );
        assert!(
            !page.body.replace(token, "").contains("crm"),
            "the integration's internal name is not shown: {}",
            page.body
        );
        assert!(page.body.contains("og:title"));
        assert!(page.body.contains("<form method=\"post\""));
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["cache-control"], "no-store");
        // The one cookie: the Continue form's random value (nothing stored on our side), the
        // same across reloads.
        let cookie = page.headers["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("authlink-form-"), "{cookie}");
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/;"),
            "{cookie}"
        );
        let value = cookie.split(';').next().unwrap().to_owned();
        assert_eq!(form_cookie.get_or_insert(value.clone()), &value);
        assert!(
            !page.body.contains("http://") && !page.body.contains("https://"),
            "no external resources"
        );
    }
    let (_, now) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(now["status"], "pending");
    assert_eq!(now["updated_at"], s["updated_at"]);
    assert!(app.provider.last_authorize_query().is_none());
}

#[tokio::test]
async fn continue_redirects_to_the_provider_with_pkce_and_a_binding_cookie() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let mut browser = Browser::new();
    let r = browser.post(s["link"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("authlink-"),
        "plain name over http: {cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/")
    );
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(&app.provider.base_url));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["client_id"], crate::helpers::CLIENT_ID);
    assert_eq!(
        q["redirect_uri"],
        format!("{}/oauth/callback/salesforce", app.base)
    );
    assert_eq!(q["scope"], "api refresh_token id");
    let (_, now) = app
        .session(&key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(now["status"], "in_progress");
}

#[tokio::test]
async fn tampered_and_foreign_links_are_rejected_without_the_store() {
    // The store is a Redis that is not running: any store access would answer 503.
    let app = spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    let other = spawn_with(Options {
        backend: Backend::Memory,
        ..Options::default()
    })
    .await;
    let key = other.setup_bot("acme").await;
    let s = other.new_session(&key, "acme", "u1").await;
    let token = s["link"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();

    let mut browser = Browser::new();
    // Signed with another deployment's key.
    let page = browser.land(&app.url(&format!("/l/{token}"))).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("not valid"));
    // One character changed.
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 3;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let page = browser.land(&other.url(&format!("/l/{tampered}"))).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let r = browser.post(&app.url(&format!("/l/{tampered}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Garbage and oversized.
    for junk in ["x", "a.b.c", &"A".repeat(300)] {
        assert_eq!(
            browser.land(&app.url(&format!("/l/{junk}"))).await.status,
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn an_expired_link_says_so_before_any_store_access() {
    let app = spawn_with(Options {
        redis_url: Some("redis://127.0.0.1:1".into()),
        ..Options::default()
    })
    .await;
    let id = authlink::domain::SessionId::new(authlink::domain::Partition::all().next().unwrap());
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let token = authlink::domain::link::encode(&app.config.signing, id, past);
    let page = Browser::new().land(&app.url(&format!("/l/{token}"))).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("expired"));
}

#[tokio::test]
async fn a_cancelled_session_link_is_no_longer_valid() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let s = app.new_session(&key, "acme", "u1").await;
    let id = s["id"].as_str().unwrap();
    let r = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    let mut browser = Browser::new();
    let page = browser.land(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("not valid"));
    assert_eq!(
        browser.post(s["link"].as_str().unwrap()).await.status(),
        StatusCode::GONE
    );
    let again = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/bots/acme/auth-sessions/{id}"),
            &key,
            None,
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn pages_are_localized() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .create_session(
            &key,
            "acme",
            serde_json::json!({"integration": "crm", "user_id": "u1", "locale": "de-DE"}),
        )
        .await;
    let s: Value = r.json().await.unwrap();
    let page = Browser::new().land(s["link"].as_str().unwrap()).await;
    assert!(page.body.contains("lang=\"de\""));
    assert!(page.body.contains("Weiter zu Salesforce"));
}

#[tokio::test]
async fn the_interstitial_names_the_display_name_and_the_salesforce_login_host() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    for (settings, host) in [
        (json!({"environment": "sandbox"}), "test.salesforce.com"),
        (
            json!({"environment": "my_domain", "host": "https://acme-corp.my.salesforce.com"}),
            "acme-corp.my.salesforce.com",
        ),
    ] {
        let r = app
            .put_integration(
                "acme",
                "crm",
                json!({"provider": "salesforce", "display_name": "Acme <Sales>", "salesforce": settings}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        for (locale, sign_in) in [
            ("en", format!("You will sign in at {host};")),
            ("de", format!("Sie melden sich bei {host} an")),
        ] {
            let r = app
                .create_session(
                    &key,
                    "acme",
                    json!({"integration": "crm", "user_id": format!("u-{host}-{locale}"), "locale": locale}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let s: Value = r.json().await.unwrap();
            let link = s["link"].as_str().unwrap();
            let token = link.rsplit('/').next().unwrap();
            let page = Browser::new().land(link).await;
            assert_eq!(page.status, StatusCode::OK);
            let body = page.body.replace(token, "");
            assert!(body.contains(&sign_in), "{body}");
            assert!(body.contains("Acme &lt;Sales&gt;"), "escaped: {body}");
            assert!(!body.contains("<Sales>") && !body.contains("crm"), "{body}");
        }
    }
}

/// A Continue as a browser sends it: (what it is, its headers, whether the form carries this
/// browser's own valid token).
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);

/// The Continue form's hidden token on an interstitial page.
fn form_token(page: &str) -> String {
    let at = page
        .find("name=\"form\" value=\"")
        .expect("the Continue form carries a token");
    let rest = &page[at + "name=\"form\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Open `s`'s link in `browser` (the interstitial sets its form cookie) and return the form's
/// token.
async fn open_link(browser: &mut Browser, s: &Value) -> String {
    let page = browser.land(s["link"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    form_token(&page.body)
}

async fn status_of(app: &crate::helpers::TestApp, key: &str, s: &Value) -> String {
    let (_, now) = app
        .session(key, "acme", s["id"].as_str().unwrap(), None)
        .await;
    now["status"].as_str().unwrap().to_owned()
}

/// Login CSRF: a page the victim visits auto-submits the attacker's link. Every way a browser can
/// say (or fail to say) that a POST came from elsewhere is refused with a page: no attempt, no
/// cookie, the session still pending, the provider never asked.
#[tokio::test]
async fn continue_from_another_site_starts_nothing() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let ours = app.base.clone();
    let cases: Vec<Case> = vec![
        (
            "cross-site, even with the token",
            vec![("sec-fetch-site", "cross-site")],
            true,
        ),
        (
            "cross-site with our Origin",
            vec![("sec-fetch-site", "cross-site"), ("origin", &ours)],
            true,
        ),
        (
            "same-site (a sibling subdomain)",
            vec![("sec-fetch-site", "same-site")],
            false,
        ),
        (
            "none (typed or bookmarked)",
            vec![("sec-fetch-site", "none")],
            false,
        ),
        (
            "an unknown Sec-Fetch-Site",
            vec![("sec-fetch-site", "nearby")],
            false,
        ),
        (
            "a foreign Origin, even with the token",
            vec![("origin", "https://evil.example")],
            true,
        ),
        (
            "a foreign Origin claiming same-origin",
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ],
            false,
        ),
        (
            "our host on another port",
            vec![("origin", "http://127.0.0.1:1")],
            false,
        ),
        ("Origin: null", vec![("origin", "null")], false),
        ("no headers, no token", vec![], false),
    ];
    for (i, (case, headers, with_token)) in cases.into_iter().enumerate() {
        let s = app.new_session(&key, "acme", &format!("u{i}")).await;
        let link = s["link"].as_str().unwrap();
        let mut browser = Browser::new();
        let token = open_link(&mut browser, &s).await;
        let fields: Vec<(&str, &str)> = if with_token {
            vec![("form", &token)]
        } else {
            vec![]
        };
        let r = browser.submit(link, &fields, &headers).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{case}");
        assert!(r.headers().get("set-cookie").is_none(), "{case}: no cookie");
        assert!(r.headers().get("location").is_none(), "{case}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("This came from another website"),
            "{case}: {body}"
        );
        assert!(body.contains("Nothing was started."), "{case}: {body}");
        assert_eq!(status_of(&app, &key, &s).await, "pending", "{case}");
    }
    assert!(app.provider.last_authorize_query().is_none());

    // Tokens that are not this browser's for this link.
    let s = app.new_session(&key, "acme", "v1").await;
    let other = app.new_session(&key, "acme", "v2").await;
    let mut browser = Browser::new();
    open_link(&mut browser, &s).await;
    let others = open_link(&mut browser, &other).await;
    let link = s["link"].as_str().unwrap();
    // Another link's token, with both links' cookies in this browser.
    let r = browser.submit(link, &[("form", &others)], &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another link's token");
    // The attacker's own token for this link (from their browser), without their cookie.
    let attackers = open_link(&mut Browser::new(), &s).await;
    let r = browser.submit(link, &[("form", &attackers)], &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another browser's token");
    // The token without any cookie, and a forged one.
    let own = open_link(&mut browser, &s).await;
    let r = Browser::new().submit(link, &[("form", &own)], &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no cookie");
    let (kid, _) = own.split_once('.').unwrap();
    let forged = format!("{kid}.AAAAAAAAAAAAAAAAAAAAAA");
    let r = browser.submit(link, &[("form", &forged)], &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a forged token");
    assert_eq!(status_of(&app, &key, &s).await, "pending");
    assert_eq!(status_of(&app, &key, &other).await, "pending");
    assert!(app.provider.last_authorize_query().is_none());
}

#[tokio::test]
async fn the_refusal_is_localized() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let r = app
        .create_session(
            &key,
            "acme",
            json!({"integration": "crm", "user_id": "u1", "locale": "de"}),
        )
        .await;
    let s: Value = r.json().await.unwrap();
    let r = Browser::new()
        .submit(
            s["link"].as_str().unwrap(),
            &[],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert!(body.contains("lang=\"de\""), "{body}");
    assert!(body.contains("Das kam von einer anderen Website"), "{body}");
}

/// What a browser sends from our own interstitial: `Sec-Fetch-Site: same-origin` (with `Origin:
/// null` under the page's no-referrer policy), or our Origin, or — when it says neither — the
/// form's token with its cookie.
#[tokio::test]
async fn continue_from_our_own_page_starts_the_attempt() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let ours = app.base.clone();
    let cases: Vec<Case> = vec![
        (
            "same-origin with Origin: null (Chromium under no-referrer)",
            vec![("sec-fetch-site", "same-origin"), ("origin", "null")],
            false,
        ),
        (
            "same-origin",
            vec![("sec-fetch-site", "same-origin")],
            false,
        ),
        (
            "our Origin, no Sec-Fetch-Site",
            vec![("origin", &ours)],
            false,
        ),
        ("no headers, the form's token", vec![], true),
        (
            "Origin: null, the form's token",
            vec![("origin", "null")],
            true,
        ),
        (
            "none, the form's token",
            vec![("sec-fetch-site", "none")],
            true,
        ),
        (
            "same-site, the form's token",
            vec![("sec-fetch-site", "same-site")],
            true,
        ),
    ];
    for (i, (case, headers, with_token)) in cases.into_iter().enumerate() {
        let s = app.new_session(&key, "acme", &format!("u{i}")).await;
        let mut browser = Browser::new();
        let token = open_link(&mut browser, &s).await;
        let fields: Vec<(&str, &str)> = if with_token {
            vec![("form", &token)]
        } else {
            vec![]
        };
        let r = browser
            .submit(s["link"].as_str().unwrap(), &fields, &headers)
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{case}");
        let location = r.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with(&app.provider.base_url),
            "{case}: {location}"
        );
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with("authlink-") && cookie.contains("SameSite=Lax"),
            "{case}: {cookie}"
        );
        assert_eq!(status_of(&app, &key, &s).await, "in_progress", "{case}");
    }
}

#[tokio::test]
async fn a_display_name_is_shown_as_written() {
    let app = spawn_app().await;
    let key = app.setup_bot("acme").await;
    let name = "Acme {host} {bot} {provider} {issuer}";
    let r = app
        .put_integration(
            "acme",
            "crm",
            json!({"provider": "salesforce", "display_name": name}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let s = app.new_session(&key, "acme", "u1").await;
    let page = Browser::new().land(s["link"].as_str().unwrap()).await;
    assert!(
        page.body
            .contains(&format!("access to your {name} account")),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("<title>Connect {name}</title>")),
        "{}",
        page.body
    );
}
