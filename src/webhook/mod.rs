//! Resuming the dialog: signed webhook deliveries (Standard Webhooks v1) taken from the outbox,
//! and the URL-safety rules for where they may go.

pub mod send;

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use url::Url;

/// A fresh signing secret as shown to the user once: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    format!(
        "whsec_{}",
        STANDARD.encode(crate::crypto::random_bytes::<32>())
    )
}

/// `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`; `None` for a malformed secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Addresses a webhook may reach when private networks are denied: globally routable only.
/// Checked against IANA's IPv4 and IPv6 Special-Purpose Address Registries; a block marked
/// globally reachable there but never a webhook endpoint (AMT, AS112, ORCHIDv2) is refused too.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240 // reserved (240.0.0.0/4)
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19))) // benchmarking
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
            // (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::) reach that IPv4 address.
            let embedded =
                |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0; 6] && !(v6.is_loopback() || v6.is_unspecified()) {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            let first = s[0];
            // Only 2000::/3 is global unicast (IANA's IPv6 Address Space registry): this alone
            // refuses ::/8 (loopback, unspecified, IPv4-translated ::ffff:0:a.b.c.d, local-use
            // NAT64 64:ff9b:1::/48), 100::/64 (discard), 100:0:0:1::/64 (dummy), 5f00::/16
            // (segment routing), fc00::/7 (unique local), fe80::/10 (link local), fec0::/10
            // (site local, deprecated), ff00::/8 (multicast) and the unassigned rest.
            let special = match first {
                // IETF protocol assignments (2001::/23): Teredo (2001::/32, which embeds the
                // server's and the client's IPv4 address), benchmarking (2001:2::/48), ORCHID
                // (2001:10::/28, 2001:20::/28), AMT, AS112 and what comes next; and
                // documentation (2001:db8::/32)
                0x2001 => s[1] < 0x200 || s[1] == 0xdb8,
                // documentation (3fff::/20)
                0x3fff => s[1] < 0x1000,
                _ => false,
            };
            (first & 0xe000) == 0x2000 && !special
        }
    }
}

/// Is this URL's host, as written, a non-public address (or `localhost`)? Names that resolve to
/// private addresses are caught at delivery time by the resolver.
pub fn names_private_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => true,
    }
}

/// A DNS resolver that only returns public addresses, so a webhook host cannot be pointed at
/// the internal network (including by DNS rebinding between validation and delivery).
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err("webhook host resolves only to non-public addresses".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let sig = sign(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(
            sig.as_deref(),
            Some("v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
        );
        assert!(sign("whsec_!!", "id", 1, "b").is_none());
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        // One or more addresses per IANA special-purpose block (IPv4, then IPv6), and the
        // IPv6 forms that carry an IPv4 address.
        for ip in [
            "0.1.2.3",                              // this network (0.0.0.0/8)
            "0.0.0.0",                              // unspecified
            "10.1.2.3",                             // private (10.0.0.0/8)
            "100.64.0.1",                           // shared address space (100.64.0.0/10)
            "100.127.255.254",                      // … its last address
            "127.0.0.1",                            // loopback
            "169.254.169.254",                      // link local (cloud metadata)
            "172.16.0.1",                           // private (172.16.0.0/12)
            "172.31.255.254",                       // … its last address
            "192.0.0.8",                            // IETF protocol assignments (192.0.0.0/24)
            "192.0.2.1",                            // documentation (TEST-NET-1)
            "192.88.99.1",                          // 6to4 relay anycast (deprecated)
            "192.168.1.1",                          // private (192.168.0.0/16)
            "198.18.0.1",                           // benchmarking (198.18.0.0/15)
            "198.19.255.254",                       // … its last address
            "198.51.100.1",                         // documentation (TEST-NET-2)
            "203.0.113.1",                          // documentation (TEST-NET-3)
            "224.0.0.1",                            // multicast
            "240.0.0.1",                            // reserved (240.0.0.0/4)
            "255.255.255.255",                      // limited broadcast
            "::",                                   // unspecified
            "::1",                                  // loopback
            "::ffff:10.0.0.1",                      // IPv4-mapped, private
            "::ffff:127.0.0.1",                     // IPv4-mapped, loopback
            "::127.0.0.1",                          // IPv4-compatible, loopback
            "::10.0.0.1",                           // IPv4-compatible, private
            "::ffff:0:10.0.0.1",                    // IPv4-translated, private
            "::ffff:0:93.184.216.34",               // IPv4-translated, even public: refused
            "64:ff9b::a9fe:a9fe",                   // NAT64, link local
            "64:ff9b::10.0.0.1",                    // NAT64, private
            "64:ff9b::127.0.0.1",                   // NAT64, loopback
            "64:ff9b:1::5db8:d822",                 // local-use NAT64 (64:ff9b:1::/48)
            "100::1",                               // discard-only (100::/64)
            "100:0:0:1::1",                         // dummy prefix (100:0:0:1::/64)
            "2001::1",                              // Teredo (2001::/32)
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo, RFC 4380's example
            "2001:1::1",                            // IETF protocol assignments (2001::/23)
            "2001:2::1",                            // benchmarking (2001:2::/48)
            "2001:10::1",                           // ORCHID (deprecated)
            "2001:20::1",                           // ORCHIDv2
            "2001:1ff::1",                          // … the end of 2001::/23
            "2001:db8::1",                          // documentation (2001:db8::/32)
            "3fff::1",                              // documentation (3fff::/20)
            "3fff:fff::1",                          // … its end
            "5f00::1",                              // segment routing (5f00::/16)
            "2002:7f00:1::",                        // 6to4, loopback
            "2002:a9fe:a9fe::1",                    // 6to4, link local
            "2002:0a00:0001::1",                    // 6to4, private
            "fc00::1",                              // unique local (fc00::/7)
            "fd00::1",                              // … its other half
            "fe80::1",                              // link local (fe80::/10)
            "febf::1",                              // … its end
            "fec0::1",                              // site local (fec0::/10, deprecated)
            "feff::1",                              // … its end
            "ff02::1",                              // multicast
            "4000::1",                              // unassigned (outside 2000::/3)
            "fbff::1",                              // unassigned, just below unique local
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "100.63.255.255", // just below shared address space
            "100.128.0.1",    // just above it
            "172.32.0.1",     // just above 172.16.0.0/12
            "198.20.0.1",     // just above benchmarking
            "2606:4700::1111",
            "2001:200::1", // just above 2001::/23 (WIDE)
            "2001:db9::1", // just above documentation
            "2a00:1450:4001::200e",
            "64:ff9b::5db8:d822",   // NAT64 of a public address
            "2002:5db8:d822::1",    // 6to4 of a public address
            "::ffff:93.184.216.34", // IPv4-mapped public address
            "3ffe:ffff::1",         // just below 3fff::/20
            "3fff:1000::1",         // just above it
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(names_private_host(
            &Url::parse("http://localhost:9/x").unwrap()
        ));
        assert!(names_private_host(&Url::parse("http://[::1]/x").unwrap()));
        assert!(names_private_host(
            &Url::parse("http://[fec0::1]/x").unwrap()
        ));
        assert!(names_private_host(
            &Url::parse("http://[2001::1]/x").unwrap()
        ));
        assert!(!names_private_host(
            &Url::parse("https://hooks.example.com/x").unwrap()
        ));
    }
}
