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
//! The HTTP client is reqwest over rustls (the `ring` provider, the same TLS stack as the
//! broker clients): `http://` and `https://` URLs, the system's root certificates plus an
//! optional CA file ([`Notifier::ca_file`]) for a receiver with a private or self-signed
//! certificate, one timeout bounding the whole exchange (default 10 s). Redirects are not
//! followed (a redirected POST would silently become a GET or lose its body): a 3xx answer
//! is an error naming the `Location`, so the user can fix the URL. Credentials never come
//! from the URL (refused) but from the caller, normally the environment
//! (`BROKERBENCH_NOTIFY_BEARER_TOKEN`), and never appear in messages.
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
use std::path::{Path, PathBuf};
use std::time::Duration;

use brokerbench_results::RunRecord;
use reqwest::Url;
use serde_json::{Value, json};

use crate::evaluate::{Severity, Verdict};
use crate::prometheus::alert_name_of;

/// The default bound on the whole exchange: connecting, the TLS handshake, sending the
/// request and reading the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The CA file given for the receiver's certificate cannot be used.
    #[error("CA file {}: {message}", path.display())]
    CaFile {
        /// The file as given.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The receiver could not be reached or the exchange failed.
    #[error("cannot notify {url}: {message}")]
    Io {
        /// The URL posted to.
        url: String,
        /// What failed (connect, TLS, write, read, timeout), with its causes.
        message: String,
    },
    /// The receiver answered with a redirect, which is not followed.
    #[error(
        "{url} answered {status} and redirects to {location}; redirects are not followed for a POST: notify that URL instead"
    )]
    Redirect {
        /// The URL posted to.
        url: String,
        /// The HTTP status (3xx).
        status: u16,
        /// The `Location` header, or `(no Location header)`.
        location: String,
    },
    /// The receiver answered with a status other than 2xx or 3xx.
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

/// Parses a notification URL: `http://` or `https://`, a host, no credentials.
fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.trim()).map_err(|e| {
        format!("{e}; expected http://host[:port][/path] or https://host[:port][/path]")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {}:// is not supported; expected http:// or https://, e.g. http://127.0.0.1:9093",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "credentials in the URL are not accepted; set BROKERBENCH_NOTIFY_BEARER_TOKEN instead"
                .into(),
        );
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(parsed)
}

/// Posts firing verdicts to one receiver.
#[derive(Clone)]
pub struct Notifier {
    url: Url,
    format: NotifyFormat,
    bearer: Option<String>,
    ca_file: Option<PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say whether there is one, never what it is.
        f.debug_struct("Notifier")
            .field("url", &self.url.as_str())
            .field("format", &self.format)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
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
    /// A notifier for `url` (`http://` or `https://`). For
    /// [`NotifyFormat::Alertmanager`] the URL is the Alertmanager's base and
    /// `/api/v2/alerts` is appended to its path.
    ///
    /// # Errors
    /// [`NotifyError::Url`] for another scheme, a URL with credentials, or one that is not
    /// `http[s]://host[:port][/path]`.
    pub fn new(url: &str, format: NotifyFormat) -> Result<Self, NotifyError> {
        let mut parsed = parse_url(url).map_err(|message| NotifyError::Url {
            url: if url.contains('@') {
                "<a URL with credentials>".into()
            } else {
                url.to_owned()
            },
            message,
        })?;
        if format == NotifyFormat::Alertmanager {
            let path = format!("{}/api/v2/alerts", parsed.path().trim_end_matches('/'));
            parsed.set_path(&path);
            parsed.set_query(None);
        }
        Ok(Self {
            url: parsed,
            format,
            bearer: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sends `Authorization: Bearer <token>` (an empty token is ignored).
    pub fn bearer_token(mut self, token: Option<String>) -> Self {
        self.bearer = token.filter(|t| !t.trim().is_empty());
        self
    }

    /// Also trusts the CA certificates of this PEM file (beside the system's roots): for
    /// a receiver whose certificate is self-signed or issued by a private CA.
    pub fn ca_file(mut self, path: Option<PathBuf>) -> Self {
        self.ca_file = path;
        self
    }

    /// Bounds the whole exchange (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL the notifier posts to.
    pub fn url(&self) -> String {
        self.url.to_string()
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
    /// [`NotifyError::CaFile`] for an unreadable CA file; [`NotifyError::Io`] when the
    /// receiver cannot be reached, the TLS handshake fails or no answer comes in time;
    /// [`NotifyError::Redirect`] for a 3xx answer; [`NotifyError::Status`] for any other
    /// non-2xx answer.
    pub async fn send(
        &self,
        record: &RunRecord,
        verdicts: &[Verdict],
    ) -> Result<Option<Delivered>, NotifyError> {
        let Some(payload) = self.payload(record, verdicts) else {
            return Ok(None);
        };
        let count = firing(verdicts).count();
        let status = self.post(payload.to_string()).await?;
        Ok(Some(Delivered {
            url: self.url(),
            alerts: count,
            status,
        }))
    }

    fn client(&self) -> Result<reqwest::Client, NotifyError> {
        // rustls is built with `ring` only; make it the process's provider (an error
        // only means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("brokerbench/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeout)
            .timeout(self.timeout);
        if let Some(path) = &self.ca_file {
            for cert in read_ca_file(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map_err(|e| NotifyError::Io {
            url: self.url(),
            message: format!("cannot set up the HTTP client: {}", causes(&e)),
        })
    }

    async fn post(&self, body: String) -> Result<u16, NotifyError> {
        let url = self.url();
        let client = self.client()?;
        let mut request = client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            // The URL is already in the error's own text.
            let e = e.without_url();
            NotifyError::Io {
                url: url.clone(),
                message: if e.is_timeout() {
                    format!("no answer within {:?} ({})", self.timeout, causes(&e))
                } else {
                    causes(&e)
                },
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("(no Location header)")
                .to_owned();
            return Err(NotifyError::Redirect {
                url,
                status: status.as_u16(),
                location,
            });
        }
        // The body only explains the error: a failure to read it leaves it empty.
        let body = response.text().await.unwrap_or_default();
        Err(NotifyError::Status {
            url,
            status: status.as_u16(),
            body: excerpt(body.trim()),
        })
    }
}

/// The certificates of a PEM file, as roots for the receiver's certificate.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, NotifyError> {
    let error = |message: String| NotifyError::CaFile {
        path: path.to_owned(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| error(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| error(format!("not a PEM certificate bundle: {}", causes(&e))))?;
    if certs.is_empty() {
        return Err(error(
            "holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    Ok(certs)
}

/// An error and its sources, `outer: inner: innermost`, as reqwest wraps the
/// connection, TLS and I/O errors that say what really went wrong.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
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
        let n =
            Notifier::new("http://127.0.0.1:9093", NotifyFormat::Alertmanager).expect("notifier");
        assert_eq!(n.url(), "http://127.0.0.1:9093/api/v2/alerts");
        let n = Notifier::new("http://127.0.0.1:9093/am/", NotifyFormat::Alertmanager)
            .expect("notifier");
        assert_eq!(n.url(), "http://127.0.0.1:9093/am/api/v2/alerts");
        let n =
            Notifier::new("https://example.org/hook?x=1", NotifyFormat::Webhook).expect("notifier");
        assert_eq!(n.url(), "https://example.org/hook?x=1");
        let n = Notifier::new("http://[::1]:8080/a", NotifyFormat::Webhook).expect("notifier");
        assert_eq!(n.url(), "http://[::1]:8080/a");
        for bad in ["ftp://x", "http://x:99999", "127.0.0.1:9093", "http://"] {
            assert!(
                matches!(
                    Notifier::new(bad, NotifyFormat::Webhook),
                    Err(NotifyError::Url { .. })
                ),
                "{bad}"
            );
        }
        let e = Notifier::new("http://u:secret@x", NotifyFormat::Webhook).unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let n = Notifier::new("http://x", NotifyFormat::Webhook)
            .expect("notifier")
            .bearer_token(Some("hunter2".into()));
        assert!(!format!("{n:?}").contains("hunter2"));
    }

    #[test]
    fn ca_files_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let err = read_ca_file(&missing).unwrap_err();
        assert!(err.to_string().contains("cannot read it"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = read_ca_file(&empty).unwrap_err();
        assert!(
            err.to_string().contains("holds no certificate")
                || err.to_string().contains("not a PEM"),
            "{err}"
        );
    }

    #[test]
    fn fingerprints_are_stable() {
        let a = json!({"b": "2", "a": "1"});
        let b = json!({"a": "1", "b": "2"});
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"a": "1"})));
    }
}
