//! `--notify`: firing alerts posted by `brokerbench run` and `brokerbench check` to a
//! local HTTP receiver (webhook shape, bearer token, error answers) and to a real
//! Alertmanager (Debian's `prometheus-alertmanager`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

mod common;

use common::{text, tool_required};

const TOKEN: &str = "s3cret-token-for-the-test";

fn brokerbench(args: &[&str], dir: &Path) -> Output {
    common::command(dir)
        .args(args)
        .env("BROKERBENCH_NOTIFY_BEARER_TOKEN", TOKEN)
        .output()
        .expect("brokerbench runs")
}

/// A 1 s scenario with one rule that always fires critical and one that passes.
fn scenario(dir: &Path) -> String {
    let path = dir.join("notify.toml");
    std::fs::write(
        &path,
        "name = \"notify-test\"\ndescription = \"notify test\"\nwarmup = \"1s\"\nduration = \"1s\"\ndrain = \"1s\"\n\n\
         [[workload]]\nname = \"w\"\ntopics = 1\nproducers_per_topic = 1\nsubscribers_per_topic = 1\n\
         delivery = \"all\"\nsize = 100\nrate = 100\n\n\
         [[alerts]]\nname = \"median latency\"\nsignal = \"e2e.p50\"\ndirection = \"upper\"\ncritical = \"1us\"\n\
         runbook_url = \"https://runbooks.example/latency\"\nlabels = { team = \"chat\" }\n\n\
         [[alerts]]\nname = \"no loss\"\nsignal = \"lost\"\ndirection = \"upper\"\ncritical = 0\n",
    )
    .expect("write scenario");
    path.to_str().expect("utf-8 path").to_owned()
}

/// One HTTP request as the receiver saw it.
#[derive(Debug)]
struct Request {
    head: String,
    body: serde_json::Value,
}

/// How the test receiver answers each request.
#[derive(Clone)]
enum Answer {
    /// This status with a short text body.
    Status(u16),
    /// 307 to this location.
    Redirect(String),
}

/// Accepts `count` requests on a free port, answers each with `status`, and sends what
/// it read on the channel.
fn receiver(status: u16, count: usize) -> (u16, mpsc::Receiver<Request>) {
    serve(Answer::Status(status), count, None)
}

/// Accepts `count` requests on a free port, over TLS when `tls` is given, answers each
/// as `answer` says and sends what it read on the channel.
fn serve(
    answer: Answer,
    count: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (u16, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let request = match &tls {
                Some(config) => {
                    let connection =
                        rustls::ServerConnection::new(Arc::clone(config)).expect("tls session");
                    exchange(rustls::StreamOwned::new(connection, stream), &answer)
                }
                None => exchange(stream, &answer),
            };
            // A client that gave up (e.g. refused our certificate) sends nothing.
            if let Some(request) = request {
                let _ = tx.send(request);
            }
        }
    });
    (port, rx)
}

/// Reads one request from `stream` and answers it; `None` when the client went away.
fn exchange(mut stream: impl Read + Write, answer: &Answer) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let s = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = s.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("length"))
                })
                .expect("content-length header");
            if body.len() >= len {
                break (head.to_owned(), body.to_owned());
            }
        }
    };
    let response = match answer {
        Answer::Status(status) => format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nreceived ok"
        ),
        Answer::Redirect(location) => format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    };
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    let body = serde_json::from_str(&body).expect("the body is JSON");
    Some(Request { head, body })
}

/// Checks that `output` (a `run` or `check` whose critical rule fires, so exit 1) says it
/// posted one alert to `url`, and that the receiver got it as a POST of `path` with the
/// bearer token; returns what the receiver read.
fn posted(output: &Output, url: &str, requests: &mpsc::Receiver<Request>, path: &str) -> Request {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "notify: posted 1 firing alert to {url} (HTTP 200)"
        )),
        "{stderr}"
    );
    let request = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the alert arrived");
    assert!(
        request
            .head
            .starts_with(&format!("POST {path} HTTP/1.1\r\n")),
        "{}",
        request.head
    );
    assert!(
        request
            .head
            .lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {TOKEN}"))),
        "{}",
        request.head
    );
    request
}

#[test]
fn run_and_check_post_webhook_payloads_with_the_bearer_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path());
    let (port, requests) = receiver(200, 2);
    let url = format!("http://127.0.0.1:{port}/hook");
    let run = brokerbench(
        &[
            "run",
            &file,
            "--out",
            "run.json",
            "--notify",
            &url,
            "--notify-format",
            "webhook",
        ],
        dir.path(),
    );
    let stderr = text(&run.stderr);
    // The evaluation decides the exit code: the critical rule fails the run.
    let request = posted(&run, &url, &requests, "/hook");
    let body = &request.body;
    assert_eq!(body["version"], "4");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["groupLabels"]["scenario"], "notify-test");
    let alerts = body["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "only the firing rule is posted: {body}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "BrokerbenchMedianLatency");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["backend"], "reference");
    assert_eq!(alert["labels"]["signal"], "e2e.p50");
    assert_eq!(alert["labels"]["team"], "chat");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://runbooks.example/latency"
    );
    let description = alert["annotations"]["description"].as_str().expect("text");
    assert!(description.contains("> critical 1us"), "{description}");
    assert_eq!(alert["fingerprint"].as_str().map(str::len), Some(16));

    // The record and the output never hold the token.
    let record = std::fs::read_to_string(dir.path().join("run.json")).expect("record");
    assert!(!record.contains(TOKEN));
    assert!(!stderr.contains(TOKEN) && !text(&run.stdout).contains(TOKEN));
    let run_id = serde_json::from_str::<serde_json::Value>(&record).expect("json")["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    assert_eq!(alert["labels"]["run_id"], run_id.as_str());

    // `check` posts the same alert again (Alertmanager API shape by default, to the base
    // URL + /api/v2/alerts).
    let base = format!("http://127.0.0.1:{port}");
    let check = brokerbench(&["check", "run.json", "--notify", &base], dir.path());
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    let request = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("check notified");
    assert!(
        request.head.starts_with("POST /api/v2/alerts HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    let alerts = request.body.as_array().expect("a JSON array of alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["labels"]["run_id"], run_id.as_str());
    assert!(
        alerts[0]["startsAt"]
            .as_str()
            .expect("startsAt")
            .ends_with('Z')
    );
    assert!(alerts[0].get("endsAt").is_none());
}

#[test]
fn notification_failures_are_printed_and_keep_the_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path());
    let run = brokerbench(&["run", &file, "--out", "run.json"], dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));

    // A receiver that answers 500.
    let (port, requests) = receiver(500, 1);
    let url = format!("http://127.0.0.1:{port}");
    let check = brokerbench(&["check", "run.json", "--notify", &url], dir.path());
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "notify: error: {url}/api/v2/alerts answered 500: received ok (the exit code is unchanged)"
        )),
        "{stderr}"
    );
    requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the request arrived");

    // Nobody listening: the port of a listener that is closed again.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{closed}");
    let check = brokerbench(
        &["check", "run.json", "--notify", &url, "--fail-on", "never"],
        dir.path(),
    );
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "notify: error: cannot notify {url}/api/v2/alerts: "
        )) && stderr.contains("Connection refused"),
        "{stderr}"
    );

    // Another scheme and credentials in the URL are refused with the reason.
    let check = brokerbench(
        &["check", "run.json", "--notify", "ftp://127.0.0.1:9093"],
        dir.path(),
    );
    assert!(
        text(&check.stderr).contains("scheme ftp:// is not supported"),
        "{}",
        text(&check.stderr)
    );
    let check = brokerbench(
        &[
            "check",
            "run.json",
            "--notify",
            "http://admin:hunter2@127.0.0.1:1",
        ],
        dir.path(),
    );
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains("credentials in the URL are not accepted"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// An Alertmanager child process, killed on drop.
struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET on 127.0.0.1:`port`: `(status, body)`.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((status, body))
}

#[test]
fn a_firing_alert_reaches_a_real_alertmanager() {
    let binary = Path::new("/usr/bin/prometheus-alertmanager");
    if !binary.exists() {
        assert!(
            !tool_required("alertmanager"),
            "BROKERBENCH_REQUIRE_TOOLS asks for alertmanager but {} is missing (apt-get install prometheus-alertmanager)",
            binary.display()
        );
        let _ = std::io::stderr().write_all(
            b"SKIPPED a_firing_alert_reaches_a_real_alertmanager: /usr/bin/prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)\n",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .expect("config");
    let storage = dir.path().join("data");
    std::fs::create_dir_all(&storage).expect("storage dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let _alertmanager = Alertmanager(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(get(port, "/-/ready"), Ok((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager on 127.0.0.1:{port} not ready within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let file = scenario(dir.path());
    let run = brokerbench(&["run", &file, "--out", "run.json"], dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let url = format!("http://127.0.0.1:{port}");
    let check = brokerbench(&["check", "run.json", "--notify", &url], dir.path());
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "notify: posted 1 firing alert to {url}/api/v2/alerts (HTTP 200)"
        )),
        "{stderr}"
    );

    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("run.json")).expect("record"),
    )
    .expect("json");
    let run_id = record["run_id"].as_str().expect("run id");
    let (status, body) = get(port, "/api/v2/alerts").expect("GET /api/v2/alerts");
    assert_eq!(status, 200, "{body}");
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).expect("alerts JSON");
    let alert = alerts
        .iter()
        .find(|a| a["labels"]["run_id"] == run_id)
        .unwrap_or_else(|| panic!("no alert of run {run_id} in {body}"));
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "BrokerbenchMedianLatency");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["scenario"], "notify-test");
    assert_eq!(labels["backend"], "reference");
    assert_eq!(labels["signal"], "e2e.p50");
    assert_eq!(labels["team"], "chat");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("> critical 1us")),
        "{alert}"
    );
    let _ = std::io::stderr().write_all(
        format!(
            "alertmanager 127.0.0.1:{port} holds: {}\n",
            serde_json::to_string(alert).unwrap_or_default()
        )
        .as_bytes(),
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost: its PEM (what a user passes
/// with --notify-ca) and the server's TLS configuration.
fn self_signed() -> (String, Arc<rustls::ServerConfig>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    (certified.cert.pem(), Arc::new(config))
}

#[test]
fn https_receivers_with_a_self_signed_certificate_redirects_and_timeouts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path());
    let run = brokerbench(&["run", &file, "--out", "run.json"], dir.path());
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let (pem, tls) = self_signed();
    let ca = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca, pem).expect("write the CA file");
    let ca = ca.to_str().expect("utf-8 path");

    // Trusted through --notify-ca: the alert arrives over TLS with the token.
    let (port, requests) = serve(Answer::Status(200), 2, Some(Arc::clone(&tls)));
    let url = format!("https://127.0.0.1:{port}/hook");
    let check = brokerbench(
        &[
            "check",
            "run.json",
            "--notify",
            &url,
            "--notify-format",
            "webhook",
            "--notify-ca",
            ca,
        ],
        dir.path(),
    );
    let request = posted(&check, &url, &requests, "/hook");
    assert_eq!(request.body["alerts"][0]["labels"]["signal"], "e2e.p50");

    // Without the CA the certificate is refused, and the error says so.
    let check = brokerbench(
        &[
            "check",
            "run.json",
            "--notify",
            &url,
            "--notify-format",
            "webhook",
        ],
        dir.path(),
    );
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("notify: error: cannot notify {url}: "))
            && stderr.to_ascii_lowercase().contains("certificate"),
        "{stderr}"
    );
    assert!(
        requests.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing is delivered over an untrusted connection"
    );

    // A CA file that holds no certificate is named.
    let check = brokerbench(
        &[
            "check",
            "run.json",
            "--notify",
            &url,
            "--notify-ca",
            "run.json",
            "--fail-on",
            "never",
        ],
        dir.path(),
    );
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("notify: error: CA file run.json: "),
        "{stderr}"
    );

    // A redirect is reported with its target, not followed.
    let (port, requests) = serve(
        Answer::Redirect("http://127.0.0.1:1/elsewhere".into()),
        1,
        None,
    );
    let url = format!("http://127.0.0.1:{port}");
    let check = brokerbench(&["check", "run.json", "--notify", &url], dir.path());
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains(&format!(
            "notify: error: {url}/api/v2/alerts answered 307 and redirects to http://127.0.0.1:1/elsewhere"
        )),
        "{stderr}"
    );
    requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the request arrived");

    // A receiver that accepts and never answers: the timeout ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let started = Instant::now();
    let check = brokerbench(
        &[
            "check",
            "run.json",
            "--notify",
            &url,
            "--notify-timeout",
            "1s",
        ],
        dir.path(),
    );
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains(&format!(
            "notify: error: cannot notify {url}/api/v2/alerts: no answer within 1s"
        )),
        "{stderr}"
    );
    // Bounded: far below the 10 s default (generous for a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
