//! What OAuth providers answer: the token response (`oauth::TokenSet::from_response` over the
//! oauth2 crate's parser) and Salesforce's additions (`oauth::salesforce::check_response`: the
//! signature over `id` + `issued_at`, and the hosts tokens will be sent to). Invariants: no
//! panic on any body; an access token never expires before it was issued; a response passes the
//! Salesforce checks only when its signature is ours and both URLs are Salesforce's (or the
//! configured login host's) over https; a signature verifies exactly for its own fields.
#![no_main]

use authlink::config::AppConfig;
use authlink::fuzzing::token_response;
use authlink::oauth::ExtraFields;
use authlink::oauth::salesforce::{check_response, trusted_host, verify_signature};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use url::Url;

#[path = "common.rs"]
mod common;

fn app() -> AppConfig {
    AppConfig {
        client_id: "client".into(),
        client_secret: SecretString::from("fuzz-secret"),
        authorize_url: Url::parse("https://login.salesforce.com/services/oauth2/authorize")
            .unwrap(),
        token_url: Url::parse("https://login.salesforce.com/services/oauth2/token").unwrap(),
        userinfo_url: None,
        revoke_url: None,
        scopes: vec![],
        client_auth_in_body: false,
        introspect_url: None,
        assumed_lifetime: None,
        extra_authorize_params: vec![],
        refresh_url: None,
    }
}

fn sign(id: &str, issued_at: &str) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"fuzz-secret").unwrap();
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fuzz_target!(|data: &[u8]| {
    let now = common::now();
    if let Some(set) = token_response(data, now)
        && let Some(at) = set.access_expires_at
    {
        assert!(at >= now);
    }

    let app = app();
    let Ok(mut extra) = serde_json::from_slice::<ExtraFields>(data) else {
        return;
    };
    let https_trusted = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| Url::parse(s).ok())
            .is_some_and(|u| u.scheme() == "https" && trusted_host(&app, &u))
    };
    if check_response(&app, &extra).is_ok() {
        assert!(https_trusted(&extra.instance_url) && https_trusted(&extra.id));
    }
    // Signed by the app's secret: only the hosts decide.
    let (id, issued_at) = (
        extra.id.clone().unwrap_or_default(),
        extra.issued_at.clone().unwrap_or_default(),
    );
    let signature = sign(&id, &issued_at);
    let secret = SecretString::from("fuzz-secret");
    assert!(verify_signature(&secret, &id, &issued_at, &signature));
    assert!(!verify_signature(
        &secret,
        &id,
        &format!("{issued_at}0"),
        &signature
    ));
    extra.id = Some(id);
    extra.issued_at = Some(issued_at);
    extra.signature = Some(signature);
    if extra.instance_url.is_some() {
        assert_eq!(
            check_response(&app, &extra).is_ok(),
            https_trusted(&extra.instance_url) && https_trusted(&extra.id)
        );
    }
});
