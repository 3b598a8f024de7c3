//! Key rotation without downtime: a daemon configured with a new key first and the old one after
//! still opens links and states signed with the old key and decrypts grants sealed with it, while
//! everything new is signed and sealed with the new key.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use authlink::config::GeneratedKeys;
use authlink::crypto::{EncryptionKeys, KeyEntry, SigningKeys};

use crate::helpers::{Browser, on, spawn_app};

fn entry(line: &str) -> KeyEntry {
    let (id, key) = line.split_once(':').unwrap();
    KeyEntry::parse(id, key).unwrap()
}

#[tokio::test]
async fn old_links_states_and_grants_survive_a_key_rotation() {
    let old = spawn_app().await;
    let key = old.setup_bot("acme").await;
    // Before the rotation: a connected user, a link and a sign-in in flight.
    let s1 = old.new_session(&key, "acme", "u1").await;
    assert_eq!(
        Browser::new()
            .authorize(s1["link"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    let pending = old.new_session(&key, "acme", "u2").await;
    let mut browser = Browser::new();
    let authorize = browser.start(pending["link"].as_str().unwrap()).await;
    let callback = browser.sign_in(&authorize).await;
    let waiting = old.new_session(&key, "acme", "u3").await;

    // The rotated replica: new keys first, the old ones after.
    let fresh = GeneratedKeys::new();
    let (old_signing, old_encryption) = (old.config.signing.clone(), old.config.encryption.clone());
    let new_signing = entry(&fresh.signing);
    let new_encryption = entry(&fresh.encryption);
    let (new_sid, new_eid) = (new_signing.id.clone(), new_encryption.id.clone());
    let rotated = old
        .replica_with(|c| {
            c.signing = SigningKeys::new(vec![new_signing, old_signing.current().clone()]).unwrap();
            c.encryption =
                EncryptionKeys::new(vec![new_encryption, old_encryption.current().clone()])
                    .unwrap();
        })
        .await;

    // The old grant decrypts: the token is served.
    let r = rotated
        .call(
            Method::POST,
            "/v1/bots/acme/integrations/crm/access-token",
            &key,
            Some(json!({"user_id": "u1"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The sign-in in flight completes on the rotated replica (state signed with the old key).
    assert_eq!(
        browser.land(&on(&rotated.base, &callback)).await.status,
        StatusCode::OK
    );
    // The old link still opens there.
    let link = on(
        &rotated.base,
        &url::Url::parse(waiting["link"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(Browser::new().land(&link).await.status, StatusCode::OK);
    // New links are signed with the new key, new grants sealed with it.
    let s4: Value = rotated.new_session(&key, "acme", "u4").await;
    let token = s4["link"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(token.starts_with(&format!("{new_sid}.")));
    let link4 = s4["link"].as_str().unwrap().to_owned();
    // (Every replica of a real deployment has the new key; here only `rotated` does, so the
    // provider's redirect is sent there.)
    let mut b4 = Browser::new();
    let authorize = b4
        .start(&on(&rotated.base, &url::Url::parse(&link4).unwrap()))
        .await;
    let callback4 = b4.sign_in(&authorize).await;
    assert_eq!(
        b4.land(&on(&rotated.base, &callback4)).await.status,
        StatusCode::OK
    );
    let grant = rotated
        .store
        .get_grant(
            &authlink::domain::BotId::parse("acme").unwrap(),
            &authlink::domain::IntegrationName::parse("crm").unwrap(),
            &authlink::domain::Subject::parse("u4").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(grant.sealed_tokens.starts_with(&format!("{new_eid}.")));
}
