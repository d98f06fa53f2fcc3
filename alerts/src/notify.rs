//! Notifications: the firing verdicts of a run (warning and critical) posted to an
//! Alertmanager (`POST <base>/api/v2/alerts`, a JSON array of postable alerts) or to any
//! webhook in the shape Alertmanager's own webhook receiver sends (`version` "4").
//!
//! Each alert carries the labels `alertname` (as the Prometheus export names the rule,
//! `BrokerbenchEndToEndLatency`), `severity`, `scenario`, `backend`, `run_id`, `signal`,
//! `rule` and the rule's own labels; the annotations `summary`, `description` (the
//! verdict's message) and the rule's `runbook_url` and others. `startsAt` is the run's
//! start; `endsAt` is left out, so Alertmanager resolves the alert after its
//! `resolve_timeout` unless a later check fires it again.
//!
//! The HTTP client is a small HTTP/1.1 POST over a blocking [`TcpStream`] with every wait
//! bounded by the notifier's timeout (default 10 s): `http://` only — https is not
//! supported; put a TLS-terminating proxy in front. Credentials never come from the URL
//! (refused) but from the caller, normally the environment
//! (`BROKERBENCH_NOTIFY_BEARER_TOKEN`), and never appear in messages. Call it from a
//! blocking context (e.g. `tokio::task::spawn_blocking`).
//!
//! ```text
//! POST /api/v2/alerts HTTP/1.1
//! Host: 127.0.0.1:9093
//! Content-Type: application/json
//! Authorization: Bearer <token>          (only with a token)
//!
//! [{"labels":{"alertname":"BrokerbenchEndToEndLatency","severity":"critical",...},
//!   "annotations":{"summary":"...","description":"e2e.p99 12ms > critical 10ms ..."},
//!   "startsAt":"2026-11-22T10:15:00.123Z"}]
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use brokerbench_results::RunRecord;
use serde_json::{Value, json};

use crate::evaluate::{Severity, Verdict};
use crate::prometheus::alert_name_of;

/// The default bound on connecting, writing and each read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a response kept (status line, headers and the start of the body).
const MAX_RESPONSE: usize = 64 * 1024;
/// How much of an error response's body an error message quotes.
const QUOTED_BODY: usize = 300;

/// Where and how notifications go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NotifyFormat {
    /// An Alertmanager: the URL is its base (`http://host:9093`), the alerts are posted
    /// to `/api/v2/alerts` as a JSON array.
    #[default]
    Alertmanager,
    /// Any webhook: the URL is posted as given, with Alertmanager's webhook payload.
    Webhook,
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The URL is not usable.
    #[error("notification URL {url:?}: {message}")]
    Url {
        /// The URL as given (credentials are refused before they could be kept).
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The receiver could not be reached or the exchange failed.
    #[error("cannot notify {url}: {message}")]
    Io {
        /// The URL posted to.
        url: String,
        /// What failed (connect, write, read, timeout).
        message: String,
    },
    /// The receiver answered with a status other than 2xx.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL posted to.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

/// An `http://` URL split for a request.
#[derive(Clone, Debug, PartialEq)]
struct HttpUrl {
    host: String,
    port: u16,
    path: String,
}

impl HttpUrl {
    fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.starts_with("https://") {
            return Err(
                "https is not supported (brokerbench posts plain HTTP/1.1); use an http:// URL, e.g. a local Alertmanager or a TLS-terminating proxy".into(),
            );
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or("expected an http:// URL, e.g. http://127.0.0.1:9093")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not accepted; set BROKERBENCH_NOTIFY_BEARER_TOKEN instead".into(),
            );
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            None | Some("") => 80,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))?,
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            path,
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn display(&self) -> String {
        format!("http://{}{}", self.host_header(), self.path)
    }
}

/// Posts firing verdicts to one receiver.
#[derive(Clone)]
pub struct Notifier {
    url: HttpUrl,
    format: NotifyFormat,
    bearer: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say whether there is one, never what it is.
        f.debug_struct("Notifier")
            .field("url", &self.url.display())
            .field("format", &self.format)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a successful notification did.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    /// The URL posted to.
    pub url: String,
    /// Alerts posted.
    pub alerts: usize,
    /// The HTTP status (2xx).
    pub status: u16,
}

impl Notifier {
    /// A notifier for `url` (`http://` only). For [`NotifyFormat::Alertmanager`] the URL
    /// is the Alertmanager's base and `/api/v2/alerts` is appended to its path.
    ///
    /// # Errors
    /// [`NotifyError::Url`] for an https URL, a URL with credentials, or one that is not
    /// `http://host[:port][/path]`.
    pub fn new(url: &str, format: NotifyFormat) -> Result<Self, NotifyError> {
        let mut parsed = HttpUrl::parse(url).map_err(|message| NotifyError::Url {
            url: if url.contains('@') {
                "<a URL with credentials>".into()
            } else {
                url.to_owned()
            },
            message,
        })?;
        if format == NotifyFormat::Alertmanager {
            let base = parsed.path.split('?').next().unwrap_or("/");
            parsed.path = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
        }
        Ok(Self {
            url: parsed,
            format,
            bearer: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sends `Authorization: Bearer <token>` (an empty token is ignored).
    pub fn bearer_token(mut self, token: Option<String>) -> Self {
        self.bearer = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// Bounds connecting, writing and each read (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL the notifier posts to.
    pub fn url(&self) -> String {
        self.url.display()
    }

    /// The request body for the firing verdicts of `record`; `None` when none fires.
    pub fn payload(&self, record: &RunRecord, verdicts: &[Verdict]) -> Option<Value> {
        let alerts = firing_alerts(record, verdicts);
        if alerts.is_empty() {
            return None;
        }
        Some(match self.format {
            NotifyFormat::Alertmanager => Value::Array(alerts),
            NotifyFormat::Webhook => webhook(record, alerts),
        })
    }

    /// Posts the firing verdicts; `Ok(None)` when nothing fires (nothing is sent).
    ///
    /// # Errors
    /// [`NotifyError::Io`] when the receiver cannot be reached or does not answer in
    /// time; [`NotifyError::Status`] for a non-2xx answer.
    pub fn send(
        &self,
        record: &RunRecord,
        verdicts: &[Verdict],
    ) -> Result<Option<Delivered>, NotifyError> {
        let Some(payload) = self.payload(record, verdicts) else {
            return Ok(None);
        };
        let count = firing(verdicts).count();
        let body = payload.to_string();
        let status = self.post(body.as_bytes())?;
        Ok(Some(Delivered {
            url: self.url(),
            alerts: count,
            status,
        }))
    }

    fn post(&self, body: &[u8]) -> Result<u16, NotifyError> {
        let url = self.url();
        let io = |message: String| NotifyError::Io {
            url: url.clone(),
            message,
        };
        let addrs: Vec<_> = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(|e| io(format!("cannot resolve {}: {e}", self.url.host)))?
            .collect();
        let mut last = format!("{} resolves to no address", self.url.host);
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        let mut stream = stream.ok_or_else(|| io(last))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| io(format!("cannot set socket timeouts: {e}")))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: brokerbench/{}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.url.path,
            self.url.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(token) = &self.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.flush())
            .map_err(|e| io(format!("cannot send the request: {e}")))?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.len() >= MAX_RESPONSE || complete(&response) {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if response.is_empty() => {
                    return Err(io(format!("no answer within {:?}: {e}", self.timeout)));
                }
                Err(_) => break,
            }
        }
        let text = String::from_utf8_lossy(&response);
        let status = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| io(format!("not an HTTP response: {:?}", excerpt(&text))))?;
        if (200..300).contains(&status) {
            return Ok(status);
        }
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Err(NotifyError::Status {
            url,
            status,
            body: excerpt(body.trim()),
        })
    }
}

/// Whether `response` holds the headers and a body of the announced `Content-Length`.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(QUOTED_BODY).collect();
    if text.chars().count() > QUOTED_BODY {
        out.push_str("...");
    }
    out
}

fn firing(verdicts: &[Verdict]) -> impl Iterator<Item = &Verdict> {
    verdicts.iter().filter(|v| v.severity >= Severity::Warning)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The firing verdicts (warning and critical) as Alertmanager postable alerts.
pub fn firing_alerts(record: &RunRecord, verdicts: &[Verdict]) -> Vec<Value> {
    firing(verdicts)
        .map(|v| {
            let mut labels: BTreeMap<String, String> = v.labels.clone();
            labels.insert("alertname".into(), alert_name_of(&v.rule));
            labels.insert("severity".into(), v.severity.to_string());
            labels.insert("scenario".into(), record.scenario_name.clone());
            labels.insert("backend".into(), record.backend.name.clone());
            labels.insert("run_id".into(), record.run_id.clone());
            labels.insert("signal".into(), v.signal.clone());
            labels.insert("rule".into(), v.rule.clone());
            let mut annotations = v.annotations.clone();
            annotations.entry("summary".into()).or_insert_with(|| {
                format!(
                    "{} {} on {} ({})",
                    v.rule, v.severity, record.backend.name, record.scenario_name
                )
            });
            annotations.insert("description".into(), v.message.clone());
            json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(record.started_at),
            })
        })
        .collect()
}

/// FNV-1a of the sorted labels: the fingerprint a webhook alert carries.
fn fingerprint(labels: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    if let Some(map) = labels.as_object() {
        let mut pairs: Vec<_> = map.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in pairs {
            for byte in k
                .bytes()
                .chain([0xff])
                .chain(v.as_str().unwrap_or_default().bytes())
                .chain([0xff])
            {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    format!("{hash:016x}")
}

/// Labels every alert has in common.
fn common(alerts: &[Value], key: &str) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(first) = alerts.first().and_then(|a| a[key].as_object()) {
        for (k, v) in first {
            if alerts.iter().all(|a| a[key].get(k) == Some(v)) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The Alertmanager webhook payload (`version` "4") around `alerts`.
fn webhook(record: &RunRecord, alerts: Vec<Value>) -> Value {
    let alerts: Vec<Value> = alerts
        .into_iter()
        .map(|mut a| {
            let fp = fingerprint(&a["labels"]);
            if let Some(o) = a.as_object_mut() {
                o.insert("status".into(), json!("firing"));
                o.insert("endsAt".into(), json!("0001-01-01T00:00:00Z"));
                o.insert("generatorURL".into(), json!(""));
                o.insert("fingerprint".into(), json!(fp));
            }
            a
        })
        .collect();
    let group_labels = json!({
        "scenario": record.scenario_name,
        "backend": record.backend.name,
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{backend=\"{}\", scenario=\"{}\"}}", record.backend.name, record.scenario_name),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "brokerbench",
        "groupLabels": group_labels,
        "commonLabels": common(&alerts, "labels"),
        "commonAnnotations": common(&alerts, "annotations"),
        "externalURL": "",
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://127.0.0.1:9093").expect("url");
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9093, "/")
        );
        let u = HttpUrl::parse("http://example.org/hook?x=1").expect("url");
        assert_eq!((u.port, u.path.as_str()), (80, "/hook?x=1"));
        let u = HttpUrl::parse("http://[::1]:8080/a").expect("url");
        assert_eq!(
            (u.host.as_str(), u.host_header().as_str()),
            ("::1", "[::1]:8080")
        );
        assert!(
            HttpUrl::parse("https://x")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(
            HttpUrl::parse("http://u:secret@x")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(HttpUrl::parse("ftp://x").is_err());
        assert!(HttpUrl::parse("http://x:99999").is_err());
        let n = Notifier::new("http://127.0.0.1:9093/am/", NotifyFormat::Alertmanager)
            .expect("notifier");
        assert_eq!(n.url(), "http://127.0.0.1:9093/am/api/v2/alerts");
        let e = Notifier::new("http://u:secret@x", NotifyFormat::Webhook).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        let n = Notifier::new("http://x", NotifyFormat::Webhook)
            .expect("notifier")
            .bearer_token(Some("hunter2".into()));
        assert!(!format!("{n:?}").contains("hunter2"));
    }

    #[test]
    fn fingerprints_are_stable() {
        let a = json!({"b": "2", "a": "1"});
        let b = json!({"a": "1", "b": "2"});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"a": "1"})));
    }
}
