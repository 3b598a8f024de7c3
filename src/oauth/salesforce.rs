//! Salesforce specifics (reference/PROTOCOLS.md §1): login hosts, the `signature` check, the
//! `instance_url`/identity host allow-list, and the identity URL.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use url::Url;

use super::{ExchangeError, ExtraFields, get_json};
use crate::config::{AppConfig, secure_or_loopback};
use crate::domain::grant::Identity;

pub const PRODUCTION: &str = "https://login.salesforce.com";
pub const SANDBOX: &str = "https://test.salesforce.com";

/// Domains Salesforce serves orgs, sites and login from.
const SALESFORCE_SUFFIXES: [&str; 4] =
    ["salesforce.com", "force.com", "site.com", "cloudforce.com"];

/// Point the app's endpoints at another login host (sandbox, My Domain).
pub fn with_host(app: &mut AppConfig, host: &Url) {
    for (url, path) in [
        (&mut app.authorize_url, "/services/oauth2/authorize"),
        (&mut app.token_url, "/services/oauth2/token"),
    ] {
        if let Ok(u) = host.join(path) {
            *url = u;
        }
    }
    app.userinfo_url = host.join("/services/oauth2/userinfo").ok();
    app.revoke_url = host.join("/services/oauth2/revoke").ok();
    if app.introspect_url.is_some() {
        app.introspect_url = host.join("/services/oauth2/introspect").ok();
    }
}

/// Is `host` a Salesforce My Domain host (`<name>.my.salesforce.com`, sandbox variants included)?
pub fn is_my_domain(url: &Url) -> bool {
    url.scheme() == "https"
        && url.host_str().is_some_and(|h| {
            h.ends_with(".my.salesforce.com") && h.len() > ".my.salesforce.com".len()
        })
}

/// May we send a bearer token to `url`? Salesforce's own domains over https, or the configured
/// login host itself (custom domains, and a provider on loopback in tests).
pub fn trusted_host(app: &AppConfig, url: &Url) -> bool {
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    if url.host_str() == app.token_url.host_str() && url.port() == app.token_url.port() {
        return secure_or_loopback(url);
    }
    url.scheme() == "https"
        && SALESFORCE_SUFFIXES
            .iter()
            .any(|s| host == *s || host.ends_with(&format!(".{s}")))
}

/// `signature` = base64(HMAC-SHA256(client_secret, id + issued_at)), and the hosts we will send
/// tokens to must be Salesforce's.
pub fn check_response(app: &AppConfig, extra: &ExtraFields) -> Result<(), ExchangeError> {
    let (Some(id), Some(issued_at), Some(signature), Some(instance)) = (
        &extra.id,
        &extra.issued_at,
        &extra.signature,
        &extra.instance_url,
    ) else {
        return Err(ExchangeError::Untrusted(
            "token response lacks id, issued_at, signature or instance_url".into(),
        ));
    };
    if !verify_signature(&app.client_secret, id, issued_at, signature) {
        return Err(ExchangeError::Untrusted(
            "signature does not match id and issued_at (wrong or rotated client secret?)".into(),
        ));
    }
    for (what, value) in [("instance_url", instance), ("id", id)] {
        let ok = Url::parse(value).is_ok_and(|u| trusted_host(app, &u));
        if !ok {
            return Err(ExchangeError::Untrusted(format!(
                "{what} is not a Salesforce host"
            )));
        }
    }
    Ok(())
}

pub fn verify_signature(secret: &SecretString, id: &str, issued_at: &str, signature: &str) -> bool {
    let Ok(expected) = STANDARD.decode(signature) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

/// Call the identity URL (the `id` of the token response).
pub async fn fetch_identity(
    http: &crate::outbound::HttpClient,
    app: &AppConfig,
    extra: &ExtraFields,
    access_token: &SecretString,
) -> Result<Identity, ExchangeError> {
    #[derive(Deserialize)]
    struct IdentityDoc {
        user_id: Option<String>,
        organization_id: Option<String>,
        username: Option<String>,
        email: Option<String>,
        display_name: Option<String>,
    }
    let url = extra
        .id
        .as_deref()
        .and_then(|s| Url::parse(s).ok())
        .filter(|u| trusted_host(app, u))
        .ok_or_else(|| ExchangeError::Untrusted("identity URL is not a Salesforce host".into()))?;
    let doc: IdentityDoc = get_json(http, url, access_token).await?;
    Ok(Identity {
        user_id: doc.user_id,
        org_id: doc.organization_id,
        username: doc.username,
        email: doc.email,
        display_name: doc.display_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppConfig {
        let mut settings = crate::config::AppSettings {
            client_id: "cid".into(),
            client_secret: Some("secret".into()),
            ..Default::default()
        };
        settings.login_host = None;
        let s = crate::config::Settings {
            system_apps: crate::config::SystemApps {
                salesforce: Some(settings),
                oauth2: None,
            },
            ..Default::default()
        };
        let mut s = s;
        crate::config::GeneratedKeys::new().apply(&mut s);
        s.validate().unwrap().salesforce.unwrap()
    }

    #[test]
    fn signature_is_hmac_of_id_and_issued_at() {
        let secret: SecretString = "secret".to_string().into();
        let id = "https://login.salesforce.com/id/00D/005";
        let issued = "1278448384422";
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"secret").unwrap();
        mac.update(format!("{id}{issued}").as_bytes());
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        assert!(verify_signature(&secret, id, issued, &sig));
        assert!(!verify_signature(&secret, id, "1278448384423", &sig));
        assert!(!verify_signature(&secret, id, issued, "not base64!"));
    }

    #[test]
    fn only_salesforce_hosts_are_trusted() {
        let app = app();
        for ok in [
            "https://acme.my.salesforce.com",
            "https://na1.salesforce.com",
            "https://acme--dev.sandbox.my.salesforce.com",
            "https://login.salesforce.com/id/00D/005",
        ] {
            assert!(trusted_host(&app, &Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "https://evil.example.com",
            "https://salesforce.com.evil.example",
            "http://acme.my.salesforce.com",
            "https://evilsalesforce.com",
        ] {
            assert!(!trusted_host(&app, &Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn my_domain_hosts_are_recognised() {
        assert!(is_my_domain(
            &Url::parse("https://acme.my.salesforce.com").unwrap()
        ));
        assert!(!is_my_domain(
            &Url::parse("https://acme.example.com").unwrap()
        ));
        assert!(!is_my_domain(
            &Url::parse("https://.my.salesforce.com")
                .unwrap_or_else(|_| Url::parse("https://my.salesforce.com").unwrap())
        ));
    }
}
