//! The URL-safety rules for every URL the daemon will call: `webhook_url`
//! (`routes::admin::check_webhook_url`, and `webhook::names_private_host` when private networks
//! are denied), provider/issuer/channel URLs (`routes::admin::check_url`), and the bots'
//! allowed-host patterns (`domain::bot::host_allowed`). Invariants: no panic; an accepted URL has
//! the scheme the rule names, a host, and no credentials; a URL not flagged private names no
//! private address; what is validated is what is stored (the URL reads back to itself from its
//! text); a host pattern never matches outside its domain.
#![no_main]

use std::net::IpAddr;

use authlink::domain::bot::host_allowed;
use authlink::fuzzing::{check_url, check_webhook_url};
use authlink::webhook::{is_public, names_private_host};
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

#[path = "common.rs"]
mod common;

fn no_credentials(url: &Url) -> bool {
    url.username().is_empty() && url.password().is_none()
}

fn loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let f = common::fields(data, 2);
    let Ok(url) = Url::parse(&f[0]) else {
        return;
    };
    // Stored as text, read back at delivery: the same URL, so the same host.
    assert_eq!(Url::parse(url.as_str()).as_ref(), Ok(&url));

    if check_webhook_url(&url) {
        assert!(matches!(url.scheme(), "http" | "https"));
        assert!(url.host().is_some() && no_credentials(&url));
    }
    if check_url(true, &url) {
        assert!(url.scheme() == "https" && url.host().is_some() && no_credentials(&url));
    }
    if check_url(false, &url) {
        assert!(url.scheme() == "https" || (url.scheme() == "http" && loopback(&url)));
        assert!(url.host().is_some() && no_credentials(&url));
    }
    if !names_private_host(&url) {
        match url.host() {
            Some(Host::Ipv4(ip)) => assert!(is_public(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => {
                assert!(is_public(IpAddr::V6(ip)));
                if let Some(v4) = ip.to_ipv4_mapped() {
                    assert!(is_public(IpAddr::V4(v4)));
                }
            }
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                assert!(d != "localhost" && !d.ends_with(".localhost"));
            }
            None => panic!("a URL without a host is not public"),
        }
    }

    // Host patterns (`allowed_webhook_hosts`, `allowed_return_hosts`).
    let Some(host) = url.host_str() else {
        return;
    };
    let pattern = f.get(1).cloned().unwrap_or_default();
    if host_allowed(std::slice::from_ref(&pattern), host) {
        let (host, pattern) = (host.to_ascii_lowercase(), pattern.to_ascii_lowercase());
        match pattern.strip_prefix("*.") {
            Some(domain) => {
                let label = host.strip_suffix(domain).and_then(|h| h.strip_suffix('.'));
                assert!(label.is_some_and(|l| !l.is_empty()), "{host} ~ {pattern}");
            }
            None => assert_eq!(host, pattern),
        }
    }
    assert!(host_allowed(&[host.to_ascii_uppercase()], host));
});
