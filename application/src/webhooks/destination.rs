//! Where a webhook may deliver: its URL ([`WebhookUrl`]: `http` or `https`, with a host) and
//! the addresses it may never reach unless `webhooks.allow_private_destinations` is set
//! ([`refused_rule`]).
//!
//! A webhook makes the server send requests to an address a tenant chose, from inside the
//! server's network. Without these rules a tenant could reach what only the server can reach:
//! its own loopback services, the private network, a cloud metadata endpoint (`169.254.169.254`).
//! The rules apply to the address a request would really connect to: IP literals directly, and
//! every address a host name resolves to, both when a webhook is registered and again when each
//! connection is made (so a name that resolves to a public address at registration and to a
//! private one later — DNS rebinding — is still refused). One refused address refuses the name.
//!
//! | rule | IPv4 | IPv6 |
//! |---|---|---|
//! | `unspecified` | `0.0.0.0/8` | `::` |
//! | `loopback` | `127.0.0.0/8` | `::1` |
//! | `private` | `10/8`, `172.16/12`, `192.168/16`, `100.64/10` (shared, CGNAT) | `fec0::/10` (site-local), `64:ff9b:1::/48` (local NAT64) |
//! | `link_local` | `169.254/16` | `fe80::/10` |
//! | `unique_local` | — | `fc00::/7` |
//! | `multicast` | `224/4` | `ff00::/8` |
//! | `reserved` | `240/4` (broadcast included), `192.0.0/24`, `198.18/15` | `::/96` (IPv4-compatible), `100::/64` (discard) |
//!
//! IPv6 addresses that carry an IPv4 address are judged by it: IPv4-mapped `::ffff:a.b.c.d`,
//! NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::/48`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use allsource_domain::InvalidValue;

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook's destination: an absolute `http` or `https` URL with a host.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

/// The host part of a [`WebhookUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// An IP literal (`http://10.0.0.1/`, `http://[::1]/`); numeric forms such as
    /// `http://2130706433/` are read as the address they mean.
    Ip(IpAddr),
    /// A name to resolve.
    Domain(String),
}

impl WebhookUrl {
    /// # Errors
    /// Empty, longer than [`MAX_URL_LEN`], not a URL, another scheme than `http`/`https`, or no
    /// host.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        if raw.trim().is_empty() {
            return Err(InvalidValue("must not be empty".into()));
        }
        if raw.len() > MAX_URL_LEN {
            return Err(InvalidValue(format!(
                "must be at most {MAX_URL_LEN} characters long"
            )));
        }
        let url = url::Url::parse(raw)
            .map_err(|e| InvalidValue(format!("is not an absolute URL: {e}")))?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(InvalidValue(format!(
                    "must be an http or https URL, not '{other}'"
                )));
            }
        }
        if url.host().is_none() {
            return Err(InvalidValue("must name a host".into()));
        }
        Ok(Self(url))
    }

    /// The URL as parsed (normalized: `http://Example.com` reads back `http://example.com/`).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The host to connect to.
    pub fn host(&self) -> UrlHost {
        match self.0.host() {
            Some(url::Host::Ipv4(ip)) => UrlHost::Ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => UrlHost::Ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => UrlHost::Domain(name.to_owned()),
            // `parse` refuses URLs without a host.
            None => UrlHost::Domain(String::new()),
        }
    }

    /// The host as written in the URL (`example.com`, `10.0.0.1`, `[::1]`).
    pub fn host_str(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The port (the scheme's default when the URL names none).
    pub fn port(&self) -> u16 {
        self.0.port_or_known_default().unwrap_or(80)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.0)
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Why an address is refused as a destination (see the module docs for the ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressRule {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    UniqueLocal,
    Multicast,
    Reserved,
}

impl AddressRule {
    /// The rule's name in problem documents (`rule` member).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::UniqueLocal => "unique_local",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
        }
    }

    fn described(self) -> &'static str {
        match self {
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::LinkLocal => "a link-local address",
            Self::UniqueLocal => "a unique-local address",
            Self::Multicast => "a multicast address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// A destination refused by a rule: the host as written, the address it is (or resolves to),
/// and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub host: String,
    pub address: IpAddr,
    pub rule: AddressRule,
}

impl Refusal {
    /// Checks one address of `host`.
    ///
    /// # Errors
    /// The refusal when `address` falls under a rule.
    pub fn check(host: &str, address: IpAddr) -> Result<(), Refusal> {
        match refused_rule(address) {
            None => Ok(()),
            Some(rule) => Err(Self {
                host: host.to_owned(),
                address,
                rule,
            }),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host == self.address.to_string() {
            write!(
                f,
                "the destination {} is {}",
                self.address,
                self.rule.described()
            )?;
        } else {
            write!(
                f,
                "the destination '{}' resolves to {}, {}",
                self.host,
                self.address,
                self.rule.described()
            )?;
        }
        write!(
            f,
            " (rule '{}'): webhooks may not deliver to loopback, private, link-local, \
             unique-local, unspecified, multicast or reserved addresses unless \
             webhooks.allow_private_destinations is true",
            self.rule.as_str()
        )
    }
}

impl std::error::Error for Refusal {}

/// The rule that refuses `address` as a destination, if any.
pub fn refused_rule(address: IpAddr) -> Option<AddressRule> {
    match address {
        IpAddr::V4(v4) => v4_rule(v4),
        IpAddr::V6(v6) => v6_rule(v6),
    }
}

fn v4_rule(ip: Ipv4Addr) -> Option<AddressRule> {
    let [a, b, c, _] = ip.octets();
    if a == 0 {
        Some(AddressRule::Unspecified)
    } else if ip.is_loopback() {
        Some(AddressRule::Loopback)
    } else if ip.is_private() || (a == 100 && (b & 0xc0) == 64) {
        Some(AddressRule::Private)
    } else if ip.is_link_local() {
        Some(AddressRule::LinkLocal)
    } else if ip.is_multicast() {
        Some(AddressRule::Multicast)
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
        Some(AddressRule::Reserved)
    } else {
        None
    }
}

fn v6_rule(ip: Ipv6Addr) -> Option<AddressRule> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_rule(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_unspecified() {
        Some(AddressRule::Unspecified)
    } else if ip.is_loopback() {
        Some(AddressRule::Loopback)
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated): never a public destination.
        Some(AddressRule::Reserved)
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64: the gateway connects to the embedded IPv4 address.
        v4_rule(embedded(s[6], s[7]))
    } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        Some(AddressRule::Private)
    } else if s[0] == 0x2002 {
        // 6to4: the relay reaches the embedded IPv4 network.
        v4_rule(embedded(s[1], s[2]))
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some(AddressRule::UniqueLocal)
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(AddressRule::LinkLocal)
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some(AddressRule::Private)
    } else if (s[0] & 0xff00) == 0xff00 {
        Some(AddressRule::Multicast)
    } else if s[0] == 0x100 && s[1..4] == [0; 3] {
        Some(AddressRule::Reserved)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(raw: &str) -> Option<&'static str> {
        refused_rule(raw.parse().expect("an address in the test")).map(AddressRule::as_str)
    }

    #[test]
    fn every_refused_ipv4_range_names_its_rule() {
        for (address, expected) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("100.127.255.255", "private"),
            ("169.254.169.254", "link_local"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.255", "multicast"),
            ("255.255.255.255", "reserved"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "reserved"),
            ("198.18.0.1", "reserved"),
            ("198.19.255.255", "reserved"),
        ] {
            assert_eq!(rule(address), Some(expected), "{address}");
        }
    }

    #[test]
    fn public_ipv4_addresses_pass_including_the_edges_of_the_ranges() {
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.0",
        ] {
            assert_eq!(rule(address), None, "{address}");
        }
    }

    #[test]
    fn every_refused_ipv6_range_names_its_rule_and_embedded_ipv4_is_judged_by_it() {
        for (address, expected) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link_local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::127.0.0.1", "reserved"),
            ("::8.8.8.8", "reserved"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b:1::1", "private"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:c0a8:101::1", "private"),
            ("fc00::1", "unique_local"),
            ("fd12:3456::1", "unique_local"),
            ("fe80::1", "link_local"),
            ("febf::1", "link_local"),
            ("fec0::1", "private"),
            ("ff02::1", "multicast"),
            ("100::1", "reserved"),
        ] {
            assert_eq!(rule(address), Some(expected), "{address}");
        }
        for address in [
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fbff::1",
            "100:0:0:1::1",
        ] {
            assert_eq!(rule(address), None, "{address}");
        }
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        for ok in [
            "http://example.com/hook",
            "https://example.com:8443/a?b=c",
            "http://10.0.0.1/",
            "http://[::1]:9000/",
        ] {
            assert!(WebhookUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "  ",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://",
            "gopher://example.com/",
            "unix:/var/run/docker.sock",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    #[test]
    fn numeric_host_forms_are_read_as_the_address_they_mean() {
        for (raw, address) in [
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.0.0.1/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ] {
            let url = WebhookUrl::parse(raw).expect("parses");
            assert_eq!(
                url.host(),
                UrlHost::Ip(address.parse().expect("address")),
                "{raw}"
            );
        }
        let named = WebhookUrl::parse("https://Hooks.Example.com/x").expect("parses");
        assert_eq!(named.host(), UrlHost::Domain("hooks.example.com".into()));
        assert_eq!(named.port(), 443);
        assert_eq!(named.as_str(), "https://hooks.example.com/x");
    }

    #[test]
    fn a_refusal_names_the_host_the_address_and_the_rule() {
        let refusal = Refusal::check("localhost", "127.0.0.1".parse().expect("address"))
            .expect_err("refused");
        let text = refusal.to_string();
        assert!(
            text.contains("'localhost' resolves to 127.0.0.1")
                && text.contains("rule 'loopback'")
                && text.contains("webhooks.allow_private_destinations"),
            "{text}"
        );
        let literal =
            Refusal::check("[::1]", "::1".parse().expect("address")).expect_err("refused");
        assert!(
            literal
                .to_string()
                .starts_with("the destination ::1 is a loopback"),
            "{literal}"
        );
        assert!(Refusal::check("example.com", "93.184.216.34".parse().expect("address")).is_ok());
    }
}
