//! Where a backend URL points: its hosts and ports, and whether they are on this machine.
//!
//! Used to find a local broker's process from the port it listens on (to sample its CPU
//! and memory) and by the adapters that need a plain `host:port`.

use crate::error::{AdapterError, ErrorKind};
use crate::kind::BackendKind;

/// One `host:port` a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host as written, without IPv6 brackets.
    pub host: String,
    /// The port, or the kind's standard port when the URL gives none.
    pub port: u16,
}

impl Endpoint {
    /// Whether the host names this machine: `localhost`, a loopback address or the
    /// unspecified address. (Addresses of this machine's other interfaces are not
    /// recognised.)
    pub fn is_loopback(&self) -> bool {
        let host = self.host.as_str();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    }

    /// `host:port`, with brackets around an IPv6 host.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `url` with the password of its user-info part replaced by `***`
/// (`amqp://guest:***@host/%2f`; a NATS token `nats://***@host`, `tls://***@host`), for
/// messages and run records. A bare `user:password@host:port` (no scheme) is redacted the
/// same way. A URL without a secret comes back unchanged.
///
/// ```
/// use brokerbench_adapters::endpoint::redact;
/// assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
/// assert_eq!(redact("tls://tok@h"), "tls://***@h");
/// assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// ```
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, hosts)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let prefix = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{prefix}{user}:***@{hosts}{tail}"),
        // A NATS URL's lone user-info part is a token: a secret.
        None if scheme.is_some_and(is_nats_scheme) => format!("{prefix}***@{hosts}{tail}"),
        None => url.to_owned(),
    }
}

/// Whether `scheme` is one of NATS's (`nats`, or `tls` for NATS over TLS), whose lone
/// user-info part is a token.
fn is_nats_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("nats") || scheme.eq_ignore_ascii_case("tls")
}

/// The standard port of each kind's protocol (`None` for the null backend).
pub fn default_port(kind: BackendKind) -> Option<u16> {
    match kind {
        BackendKind::Reference => Some(7000),
        BackendKind::Nats | BackendKind::Jetstream => Some(4222),
        BackendKind::Rabbitmq => Some(5672),
        BackendKind::Redis => Some(6379),
        BackendKind::Kafka => Some(9092),
        BackendKind::Null => None,
    }
}

/// The endpoints `url` names for a broker of `kind`: the authority part of
/// `scheme://[user[:password]@]host[:port][,host[:port]...][/path][?query]`, or a bare
/// `host:port` list. Missing ports take the kind's standard port.
///
/// ```
/// use brokerbench_adapters::BackendKind;
/// use brokerbench_adapters::endpoint::endpoints;
/// let e = endpoints(BackendKind::Rabbitmq, "amqp://guest:guest@127.0.0.1/%2f").unwrap();
/// assert_eq!((e[0].host.as_str(), e[0].port), ("127.0.0.1", 5672));
/// let e = endpoints(BackendKind::Kafka, "kafka://a:9092,[::1]:9093").unwrap();
/// assert_eq!(e[1].host_port(), "[::1]:9093");
/// ```
///
/// # Errors
///
/// [`ErrorKind::InvalidUrl`] naming the URL and what is wrong with it.
pub fn endpoints(kind: BackendKind, url: &str) -> Result<Vec<Endpoint>, AdapterError> {
    parse_endpoints(kind, url).map_err(|why| {
        AdapterError::new(
            ErrorKind::InvalidUrl,
            format!("invalid {kind} URL '{url}': {why}"),
        )
    })
}

/// [`endpoints`], with only what is wrong as the error (`port 'x' is not a number from 0
/// to 65535`), for adapters that word the message themselves (a redacted URL, the form
/// they expect).
pub(crate) fn parse_endpoints(kind: BackendKind, url: &str) -> Result<Vec<Endpoint>, String> {
    let Some(standard) = default_port(kind) else {
        return Ok(Vec::new());
    };
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest).trim();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    if hosts.is_empty() {
        return Err("no host".into());
    }
    hosts
        .split(',')
        .map(|part| parse_host_port(part.trim(), standard))
        .collect()
}

fn parse_host_port(part: &str, standard: u16) -> Result<Endpoint, String> {
    if part.is_empty() {
        return Err("an empty host in the host list".into());
    }
    let (host, port) = if let Some(v6) = part.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unbalanced brackets in '{part}'"))?;
        match after {
            "" => (host, None),
            p if p.starts_with(':') => (host, Some(&p[1..])),
            _ => return Err(format!("unexpected text after ']' in '{part}'")),
        }
    } else {
        match part.matches(':').count() {
            0 => (part, None),
            1 => {
                let (h, p) = part.split_once(':').unwrap_or((part, ""));
                (h, Some(p))
            }
            _ => return Err(format!("an IPv6 address must be in brackets: '{part}'")),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in '{part}'"));
    }
    let port = match port {
        None => standard,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("port '{p}' is not a number from 0 to 65535"))?,
    };
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: BackendKind, url: &str) -> (String, u16) {
        let e = endpoints(kind, url).unwrap();
        assert_eq!(e.len(), 1, "{url}");
        (e[0].host.clone(), e[0].port)
    }

    #[test]
    fn each_kind_default_url_parses_to_its_standard_port() {
        for kind in BackendKind::ALL {
            let e = endpoints(kind, kind.default_url()).unwrap();
            match default_port(kind) {
                Some(port) => {
                    assert_eq!(e.len(), 1);
                    assert_eq!(e[0].port, port);
                    assert!(e[0].is_loopback());
                }
                None => assert!(e.is_empty()),
            }
        }
    }

    #[test]
    fn credentials_paths_and_queries_are_skipped() {
        assert_eq!(
            one(BackendKind::Redis, "redis://:secret@cache.local:6380/2?x=y"),
            ("cache.local".into(), 6380)
        );
        assert_eq!(
            one(BackendKind::Nats, "nats://u:p@[::1]"),
            ("::1".into(), 4222)
        );
        assert_eq!(
            one(BackendKind::Kafka, "broker:19092"),
            ("broker".into(), 19092)
        );
        assert_eq!(
            endpoints(BackendKind::Kafka, "kafka://a,b:1")
                .unwrap()
                .iter()
                .map(Endpoint::host_port)
                .collect::<Vec<_>>(),
            ["a:9092", "b:1"]
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = endpoints(BackendKind::Redis, "redis://h:99999").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert_eq!(
            err.to_string(),
            "invalid redis URL 'redis://h:99999': port '99999' is not a number from 0 to 65535"
        );
        assert!(endpoints(BackendKind::Nats, "nats://").is_err());
        assert!(endpoints(BackendKind::Kafka, "kafka://a,,b").is_err());
        assert!(endpoints(BackendKind::Nats, "nats://::1:4222").is_err());
    }

    #[test]
    fn passwords_are_redacted_everywhere_they_can_be() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("nats://tok@h"), "nats://***@h");
        assert_eq!(redact("TLS://tok@h:4443"), "TLS://***@h:4443");
        assert_eq!(redact("u:p@h:1"), "u:***@h:1");
        assert_eq!(redact("user@h:1"), "user@h:1");
        assert_eq!(redact("amqp://user@h"), "amqp://user@h");
        assert_eq!(redact("kafka://a:1,b:2"), "kafka://a:1,b:2");
        assert_eq!(redact("h:1"), "h:1");
        assert_eq!(redact("redis://u:p@h?x=a@b"), "redis://u:***@h?x=a@b");
    }

    #[test]
    fn loopback_detection() {
        let at = |host: &str| Endpoint {
            host: host.into(),
            port: 1,
        };
        assert!(at("localhost").is_loopback());
        assert!(at("127.0.0.1").is_loopback());
        assert!(at("::1").is_loopback());
        assert!(!at("10.0.0.1").is_loopback());
        assert!(!at("example.com").is_loopback());
    }
}
