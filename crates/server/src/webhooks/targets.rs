//! Where webhooks may go: public `https` URLs by default, checked when a
//! URL is saved ([`check_url`]) and again at each delivery, when a name
//! resolves ([`PublicAddressesOnly`]), so that a key's webhook cannot reach
//! this server's own network (cloud metadata, databases, admin ports).

/// Whether `ip` is an address on the public internet: not loopback,
/// private, link-local (where cloud metadata services live), shared,
/// unique-local, multicast, documentation or unspecified.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18/15
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            // Forms that carry an IPv4 address reach that address: they are
            // judged by it (and by every one they carry).
            let embedded = embedded_ipv4(v6);
            if !embedded.is_empty() {
                return embedded.into_iter().all(|v4| is_public(IpAddr::V4(v4)));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed locally)
                || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only, 100::/64
                || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001) // local-use NAT64, 64:ff9b:1::/48
                || s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

/// The IPv4 addresses an IPv6 address carries, by the forms that route to
/// them: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::/96`), 6to4 (`2002::/16`) and Teredo (`2001::/32`: its server,
/// and its client, stored inverted).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Vec<std::net::Ipv4Addr> {
    use std::net::Ipv4Addr;
    let s = v6.segments();
    let from = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return vec![v4];
    }
    // IPv4-translated, `::ffff:0:a.b.c.d`.
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return vec![from(s[6], s[7])];
    }
    // `::` and `::1` are IPv6's own unspecified and loopback addresses.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return vec![from(s[6], s[7])];
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return vec![from(s[6], s[7])];
    }
    if s[0] == 0x2002 {
        return vec![from(s[1], s[2])];
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return vec![from(s[2], s[3]), from(!s[6], !s[7])];
    }
    Vec::new()
}

/// Which webhook targets are allowed beyond public `https` ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetRules {
    /// Loopback, private, link-local and unique-local addresses too.
    pub allow_private_targets: bool,
    /// Plain `http://` too.
    pub allow_plain_http: bool,
}

/// Checks a webhook URL against `rules`, as far as can be without
/// resolving its host: an absolute `https` URL (or `http` where allowed),
/// with no user name or password in it, and not naming a loopback,
/// private, link-local or otherwise non-public address (literally, or as
/// `localhost`). A name that resolves to such an address is refused again
/// at each delivery. The error says what is wrong, in a member's words.
pub fn check_url(url: &str, rules: TargetRules) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if rules.allow_plain_http => {}
        "http" => return Err("webhooks go over https only (webhook_allow_plain_http allows http)".into()),
        other => return Err(format!("a webhook URL must be https://, not {other}:")),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a webhook URL must not carry a user name or password; its requests are signed".into());
    }
    let private = |what: String| {
        Err(format!("{what} is not a public address (webhook_allow_private_targets allows it)"))
    };
    match parsed.host() {
        None => return Err("a webhook URL needs a host".into()),
        Some(url::Host::Ipv4(ip)) if !rules.allow_private_targets && !is_public(ip.into()) => {
            return private(ip.to_string());
        }
        Some(url::Host::Ipv6(ip)) if !rules.allow_private_targets && !is_public(ip.into()) => {
            return private(format!("[{ip}]"));
        }
        Some(url::Host::Domain(name)) if !rules.allow_private_targets => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return private(name);
            }
        }
        _ => {}
    }
    Ok(parsed)
}

/// A resolver that hands reqwest only public addresses.
#[derive(Debug)]
pub(super) struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> =
                found.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let message = format!(
                    "refused: {host} resolves only to addresses that are not public \
                     (webhook_allow_private_targets allows them)"
                );
                return Err(message.into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod target_tests {
    use super::is_public;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    /// IPv6 forms that carry an IPv4 address are judged by the address they carry.
    #[test]
    fn ipv6_forms_that_embed_ipv4_are_judged_by_the_embedded_address() {
        for private in [
            "::127.0.0.1",                          // IPv4-compatible
            "::10.0.0.1",                           // IPv4-compatible, private
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b::a9fe:a9fe",                   // NAT64 of 169.254.169.254
            "64:ff9b:1::808:808",                   // local-use NAT64, whatever it carries
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2002:c0a8:101::1",                     // 6to4 of 192.168.1.1
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1 (inverted)
            "2001:0:a00:1:8000:63bf:f7f7:f7f7",     // Teredo, server 10.0.0.1
            "fec0::1",                              // site-local
            "::ffff:0:7f00:1",                      // IPv4-translated 127.0.0.1
            "100::1",                               // discard-only
            "198.18.0.1",                           // benchmarking
            "198.19.255.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // Teredo, server 65.54.227.120, client 8.8.8.8
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    /// A name is judged by what it resolves to, at each delivery.
    #[tokio::test]
    async fn a_name_that_resolves_only_to_private_addresses_gets_no_connection() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let refused = match super::PublicAddressesOnly.resolve(name).await {
            Ok(addresses) => panic!("resolved to {:?}", addresses.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(refused.contains("resolves only to addresses that are not public"), "{refused}");
    }

    #[test]
    fn webhook_urls_are_checked_when_saved() {
        use super::{TargetRules, check_url};
        let strict = TargetRules::default();
        for (url, says) in [
            ("http://example.com/hook", "https only"),
            ("ftp://example.com/hook", "https://"),
            ("https://user:pass@example.com/hook", "user name or password"),
            ("https://token@example.com/hook", "user name or password"),
            ("https://127.0.0.1/hook", "127.0.0.1 is not a public address"),
            ("https://[::127.0.0.1]/hook", "not a public address"),
            ("https://[64:ff9b::7f00:1]/hook", "not a public address"),
            ("https://169.254.169.254/latest/meta-data", "not a public address"),
            ("https://localhost/hook", "localhost is not a public address"),
            ("https://api.localhost./hook", "not a public address"),
            ("not a url", "not a valid URL"),
        ] {
            let refused = check_url(url, strict).unwrap_err();
            assert!(refused.contains(says), "{url}: {refused}");
        }
        assert!(check_url("https://hooks.example.com/a?token=x", strict).is_ok());
        assert!(check_url("https://[2606:4700:4700::1111]/a", strict).is_ok());
        let loose = TargetRules { allow_private_targets: true, allow_plain_http: true };
        assert!(check_url("http://127.0.0.1:9000/hook", loose).is_ok());
        assert!(check_url("https://user:pass@example.com/", loose).is_err(), "credentials never");
    }
}
