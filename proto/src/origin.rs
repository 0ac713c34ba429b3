//! Origins (scheme, host, port) an app may send outbound HTTP requests to, as
//! `fog publish --allow-outbound URL` names them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most origins one app may list.
pub const MAX_ORIGINS: usize = 64;

/// One destination an app may call: `http` or `https`, a host name or address, and a port (the
/// scheme's default when the URL names none). Written and read as `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    https: bool,
    /// Lower-case host name, or an IP address (IPv6 without brackets).
    host: String,
    port: u16,
}

/// Why a URL is not an origin an app may be allowed to call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not an outbound origin: {reason}")]
pub struct OriginError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Origin {
    /// Parse `http[s]://host[:port][/]`. Paths, queries, fragments and user names are refused
    /// rather than ignored, so nobody believes an allow-list entry narrower than it is.
    pub fn parse(given: &str) -> Result<Origin, OriginError> {
        let fail = |reason: &str| OriginError {
            given: given.to_string(),
            reason: reason.to_string(),
        };
        if !given.contains("://") {
            return Err(fail("give a scheme, as in https://api.example.com"));
        }
        let url = url::Url::parse(given).map_err(|e| fail(&e.to_string()))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(fail("the scheme must be http or https")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("an origin has no user name or password"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(fail(
                "an origin has no path, query or fragment: the whole host is allowed",
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(fail("no host")),
        };
        if host.is_empty() {
            return Err(fail("no host"));
        }
        let port = url.port_or_known_default().ok_or_else(|| fail("no port"))?;
        Ok(Origin { https, host, port })
    }

    /// Whether a request to `scheme` (`http`/`https`), `host` and `port` (the scheme's default
    /// if `None`) goes to this origin. Host names compare without case and trailing dot; IPv6
    /// addresses with or without brackets.
    pub fn matches(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let https = match scheme {
            "https" => true,
            "http" => false,
            _ => return false,
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .trim_end_matches('.');
        let port = port.unwrap_or(if https { 443 } else { 80 });
        let same_host = match (
            host.parse::<std::net::IpAddr>(),
            self.host.parse::<std::net::IpAddr>(),
        ) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => host.eq_ignore_ascii_case(&self.host),
            _ => false,
        };
        https == self.https && port == self.port && same_host
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Origin {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Origin::parse(s)
    }
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Origin::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_take_the_schemes_default_port_and_match_exactly() {
        let api = Origin::parse("https://API.example.com").unwrap();
        assert_eq!(api.to_string(), "https://api.example.com:443");
        assert!(api.matches("https", "api.example.com", None));
        assert!(api.matches("https", "api.example.com.", Some(443)));
        assert!(!api.matches("http", "api.example.com", None));
        assert!(!api.matches("https", "api.example.com", Some(8443)));
        assert!(!api.matches("https", "evil.example.com", None));
        assert!(!api.matches("https", "api.example.com.evil.net", None));
        let local = Origin::parse("http://127.0.0.1:8080/").unwrap();
        assert!(local.matches("http", "127.0.0.1", Some(8080)));
        assert!(!local.matches("http", "127.0.0.1", Some(8081)));
        assert!(!local.matches("http", "localhost", Some(8080)));
        let v6 = Origin::parse("http://[::1]:9000").unwrap();
        assert_eq!(v6.to_string(), "http://[::1]:9000");
        assert!(v6.matches("http", "[::1]", Some(9000)));
        assert_eq!(v6.to_string().parse::<Origin>().unwrap(), v6);
    }

    #[test]
    fn anything_but_a_bare_http_origin_is_refused() {
        for bad in [
            "api.example.com",
            "127.0.0.1:8080",
            "ftp://example.com",
            "https://",
            "https://example.com/path",
            "https://example.com/?q=1",
            "https://user:pw@example.com",
            "http://example.com:99999",
            "",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
