//! Where a Redis server is and how to log in: the URL, parsed.

use std::sync::Arc;

use ::redis::{ConnectionAddr, IntoConnectionInfo};

use crate::endpoint::{self, Endpoint};
use crate::error::{AdapterError, ErrorKind};

/// The URL form this adapter accepts, for error messages.
pub(in crate::redis_streams) const URL_FORM: &str = "redis://[[user]:password@]host[:port][/db]";

/// Where a Redis server is and how to log in, parsed from a URL.
#[derive(Clone)]
pub(in crate::redis_streams) struct Target {
    /// The URL with any password replaced by `***`: what messages show.
    pub(in crate::redis_streams) shown: Arc<str>,
    /// `host:port` to dial (brackets around an IPv6 host).
    pub(in crate::redis_streams) host_port: String,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: i64,
}

impl std::fmt::Debug for Target {
    /// Shows the redacted URL only: the password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.shown)
            .field("host_port", &self.host_port)
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `redis://[[user]:password@]host[:port][/db]` (also `valkey://`, or a bare
    /// `host:port`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a malformed URL or another scheme;
    /// [`ErrorKind::Unsupported`] for TLS (`rediss://`) and Unix sockets, which this build
    /// does not speak.
    pub(in crate::redis_streams) fn parse(url: &str) -> Result<Target, AdapterError> {
        let shown = endpoint::redact(url);
        let invalid = |why: &str| {
            AdapterError::new(
                ErrorKind::InvalidUrl,
                format!("invalid redis URL '{shown}': {why} (expected {URL_FORM})"),
            )
        };
        let full = if url.contains("://") {
            url.trim().to_owned()
        } else {
            format!("redis://{}", url.trim())
        };
        let scheme = full
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "redis" | "valkey" => {}
            "rediss" | "valkeys" => {
                return Err(AdapterError::unsupported(format!(
                    "cannot connect to redis at {shown}: TLS ({scheme}://) is not supported by this build (use {URL_FORM})"
                )));
            }
            "unix" | "redis+unix" | "valkey+unix" => {
                return Err(AdapterError::unsupported(format!(
                    "cannot connect to redis at {shown}: Unix sockets are not supported by this adapter (use {URL_FORM})"
                )));
            }
            other => return Err(invalid(&format!("unsupported scheme '{other}'"))),
        }
        let info = full.as_str().into_connection_info().map_err(|e| {
            invalid(
                e.detail()
                    .map_or_else(|| e.to_string(), |detail| format!("{e}: {detail}"))
                    .as_str(),
            )
        })?;
        let host_port = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Endpoint {
                host: host.clone(),
                port: *port,
            }
            .host_port(),
            other => return Err(invalid(&format!("not a TCP address: {other}"))),
        };
        let settings = info.redis_settings();
        Ok(Target {
            shown: shown.into(),
            host_port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
        })
    }

    /// The user the login is for, as messages name it.
    pub(super) fn user(&self) -> &str {
        self.username.as_deref().unwrap_or("default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::redact;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@h:6379/2"),
            "redis://user:***@h:6379/2"
        );
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact("redis://user@h"), "redis://user@h");
        assert_eq!(redact("u:p@h:1"), "u:***@h:1");
    }

    #[test]
    fn urls_parse_into_targets() {
        let t = Target::parse("redis://127.0.0.1:6380/3").unwrap();
        assert_eq!(t.host_port, "127.0.0.1:6380");
        assert_eq!(t.db, 3);
        assert_eq!(t.user(), "default");
        let t = Target::parse("redis://bob:pw@[::1]").unwrap();
        assert_eq!(t.host_port, "[::1]:6379");
        assert_eq!(t.user(), "bob");
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(&*t.shown, "redis://bob:***@[::1]");
        let t = Target::parse("localhost:7000").unwrap();
        assert_eq!(t.host_port, "localhost:7000");
    }

    #[test]
    fn bad_urls_say_what_is_expected() {
        for url in [
            "redis://",
            "redis://h:notaport",
            "redis://h/notadb",
            "http://h",
        ] {
            let err = Target::parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidUrl, "{url}: {err}");
            assert!(err.to_string().contains(URL_FORM), "{err}");
        }
        let err = Target::parse("redis://u:secret@h:x").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let err = Target::parse("rediss://h").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
    }
}
