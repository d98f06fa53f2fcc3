//! `report`, `compare`, `merge`, `export` and `run --hlog` as a user runs them: the real
//! binary, records made by real runs on the embedded reference broker, temp dirs, and the
//! tools that read the outputs (promtool, headless Chromium) where they are installed.
//!
//! A missing tool skips its check with a `SKIPPED` line on stderr, unless
//! `BROKERBENCH_REQUIRE_TOOLS` is `all` (or a comma-separated list naming the tool), when
//! it fails the test instead.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;

use common::{ReferenceBroker, brokerbench, text, tool_required};

/// Asserts success and returns stdout.
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Records made once for every test of this file by real runs on the embedded broker:
/// two runs of `chat-1to1` (the first with `--hlog`) and one of another scenario.
struct Fixture {
    dir: PathBuf,
    a: PathBuf,
    b: PathBuf,
    other: PathBuf,
    hlog: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Under cargo's per-target temp dir, one folder per test process.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("reports-fixture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Fixture {
            a: dir.join("a.json"),
            b: dir.join("b.json"),
            other: dir.join("other.json"),
            hlog: dir.join("a.hlog"),
            dir,
        };
        let runs: [(&[&str], &Path); 3] = [
            (
                &[
                    "run",
                    "chat-1to1",
                    "--fail-on",
                    "never",
                    "--rate",
                    "1000",
                    "--duration",
                    "1s",
                    "--hlog",
                    "a.hlog",
                ],
                &f.a,
            ),
            (
                &[
                    "run",
                    "chat-1to1",
                    "--fail-on",
                    "never",
                    "--rate",
                    "2000",
                    "--duration",
                    "1s",
                ],
                &f.b,
            ),
            (
                &[
                    "run",
                    "typing-indicators",
                    "--fail-on",
                    "never",
                    "--rate",
                    "500",
                    "--duration",
                    "1s",
                ],
                &f.other,
            ),
        ];
        for (args, out) in runs {
            let mut args = args.to_vec();
            args.extend(["--out", out.to_str().unwrap()]);
            ok(&brokerbench(&args, &f.dir), &args.join(" "));
        }
        f
    })
}

/// Prints that `test` skips a check because `tool` is missing, or fails if the tool is
/// required.
fn skip(tool: &str, package: &str, test: &str) {
    assert!(
        !tool_required(tool),
        "{tool} is required (BROKERBENCH_REQUIRE_TOOLS) but not installed (Debian: apt-get install -y {package})"
    );
    let _ = std::io::stderr().write_all(
        format!("SKIPPED {test}: {tool} is not installed (Debian: apt-get install -y {package})\n")
            .as_bytes(),
    );
}

/// The path of `tool`: `candidates` first, then `$PATH`; `None` after [`skip`].
fn find_tool(tool: &str, candidates: &[&str], package: &str, test: &str) -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .find(|p| p.is_file());
    if found.is_none() {
        skip(tool, package, test);
    }
    found
}

/// Runs `command` to completion, killing it after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[test]
fn report_of_two_runs_is_one_self_contained_page() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nested/report.html");
    let run = brokerbench(
        &[
            "report",
            f.a.to_str().unwrap(),
            f.b.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    ok(&run, "report");
    assert!(text(&run.stderr).contains("report of 2 run(s) written to"));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(
        html.contains("<title>brokerbench report: chat-1to1 on reference #1, reference #2</title>")
    );
    assert_eq!(
        html.matches("<svg").count(),
        8,
        "two percentile plots, six timelines"
    );
    for id in [
        "runs",
        "summary",
        "latency",
        "timelines",
        "verdicts",
        "scenario",
        "host",
    ] {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "section {id}"
        );
    }
    // Both runs named in the runs table, summary and legends.
    assert!(html.matches("reference #2").count() > 10);
    assert!(html.contains("a.json") && html.contains("b.json"));
    // Self-contained: nothing to fetch or run.
    for forbidden in [
        "<script", "<link", "<img", "src=", "url(", "@import", "https://",
    ] {
        assert!(!html.contains(forbidden), "{forbidden} in the page");
    }
    // A record that cannot be read is named, exit 2.
    let missing = brokerbench(&["report", "nope.json"], dir.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("nope.json"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn compare_prints_a_side_by_side_table_and_refuses_other_scenarios() {
    let f = fixture();
    let (a, b, other) = (
        f.a.to_str().unwrap(),
        f.b.to_str().unwrap(),
        f.other.to_str().unwrap(),
    );
    let table = ok(&brokerbench(&["compare", a, b], &f.dir), "compare");
    let header = table
        .lines()
        .find(|l| l.starts_with("figure"))
        .expect(&table);
    for column in ["reference #1", "reference #2", "Δ reference #2", "better"] {
        assert!(header.contains(column), "{column} in {header}");
    }
    for row in [
        "e2e p50",
        "e2e p99",
        "delivery availability",
        "achieved publish rate",
        "lost",
    ] {
        assert!(table.lines().any(|l| l.starts_with(row)), "{row}:\n{table}");
    }
    // 2000/s offered against 1000/s: the second run offered twice as much.
    let offered = table
        .lines()
        .find(|l| l.starts_with("offered rate"))
        .unwrap();
    assert!(offered.contains("+100.0 %"), "{offered}");
    let achieved = table
        .lines()
        .find(|l| l.starts_with("achieved publish rate"))
        .unwrap();
    assert!(
        achieved.trim_end().ends_with("reference #2"),
        "higher rate is better: {achieved}"
    );

    let md = ok(
        &brokerbench(&["compare", "--markdown", a, b], &f.dir),
        "compare --markdown",
    );
    assert!(
        md.contains("| figure | reference #1 | reference #2 | Δ reference #2 | better |"),
        "{md}"
    );
    assert!(md.contains("| --- | ---: | ---: | ---: | --- |"));
    assert!(md.lines().filter(|l| l.starts_with("| e2e")).count() >= 6);

    let refused = brokerbench(&["compare", a, other], &f.dir);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("`chat-1to1`")
            && stderr.contains("`typing-indicators`")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a.json") && stderr.contains("other.json"),
        "{stderr}"
    );
    assert!(refused.stdout.is_empty());

    let forced = brokerbench(&["compare", "--force", a, other], &f.dir);
    let table = ok(&forced, "compare --force");
    assert!(text(&forced.stderr).contains("warning: comparing runs of different scenarios"));
    assert!(table.contains("typing-indicators"));
}

/// Two load generators run the same scenario at the same time against one broker; their
/// records merge into one whose counts are the sums and whose histograms hold every
/// sample.
#[test]
fn merge_combines_concurrent_load_generators() {
    let dir = tempfile::tempdir().unwrap();
    let broker = ReferenceBroker::start(&[]);
    let generators: Vec<_> = ["g1.json", "g2.json"]
        .iter()
        .map(|out| {
            Command::new(env!("CARGO_BIN_EXE_brokerbench"))
                .args([
                    "run",
                    "chat-1to1",
                    "--fail-on",
                    "never",
                    "--backend",
                    "reference",
                    "--url",
                    &broker.url,
                    "--rate",
                    "500",
                    "--duration",
                    "1s",
                    "--out",
                    out,
                ])
                .current_dir(dir.path())
                .env("CI", "true")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("generator starts")
        })
        .collect();
    for g in generators {
        ok(&g.wait_with_output().unwrap(), "load generator");
    }
    drop(broker);
    let merged_path = dir.path().join("merged.json");
    let run = brokerbench(
        &["merge", "g1.json", "g2.json", "--out", "merged.json"],
        dir.path(),
    );
    let summary = ok(&run, "merge");
    assert!(summary.contains("chat-1to1 on reference"), "{summary}");
    assert!(summary.contains("merged.json"));

    let (g1, g2, m) = (
        json(&dir.path().join("g1.json")),
        json(&dir.path().join("g2.json")),
        json(&merged_path),
    );
    let sum = |path: &[&str]| {
        let get = |v: &serde_json::Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        (get(&g1), get(&g2), get(&m))
    };
    for path in [
        &["volume", "offered"][..],
        &["volume", "published"],
        &["volume", "delivered"],
        &["latency", "e2e", "count"],
        &["latency", "publish_ack", "count"],
        &["correctness", "lost"],
    ] {
        let (x, y, merged) = sum(path);
        assert_eq!(
            merged.as_u64().unwrap(),
            x.as_u64().unwrap() + y.as_u64().unwrap(),
            "{path:?}"
        );
    }
    let (x, y, merged) = sum(&["volume", "offered_rate"]);
    assert!((merged.as_f64().unwrap() - x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(m["schema_version"], 1);
    let run_ids = format!(
        "{}+{}",
        g1["run_id"].as_str().unwrap(),
        g2["run_id"].as_str().unwrap()
    );
    assert_eq!(m["run_id"], run_ids.as_str());
    assert!(
        m["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("merged from 2 run records")
    );
    // The merged p99 lies within the generators' p99s (it is not their average).
    let p99 = |v: &serde_json::Value| v["latency"]["e2e"]["p99_us"].as_f64().unwrap();
    assert!(p99(&m) >= p99(&g1).min(p99(&g2)) && p99(&m) <= p99(&g1).max(p99(&g2)));
    // Per interval too.
    let intervals = |v: &serde_json::Value| v["intervals"].as_array().unwrap().len();
    assert_eq!(intervals(&m), intervals(&g1).max(intervals(&g2)));
    let count0 = |v: &serde_json::Value| {
        v["intervals"][0]["latency"]["e2e"]["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count0(&m), count0(&g1) + count0(&g2));
    // The merged record is an ordinary record: reports and comparisons read it.
    ok(
        &brokerbench(&["compare", "g1.json", "merged.json"], dir.path()),
        "compare merged",
    );

    let f = fixture();
    let refused = brokerbench(
        &[
            "merge",
            f.a.to_str().unwrap(),
            f.other.to_str().unwrap(),
            "--out",
            "x.json",
        ],
        dir.path(),
    );
    assert_eq!(refused.status.code(), Some(2));
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("cannot merge runs of different scenarios")
            && stderr.contains("typing-indicators"),
        "{stderr}"
    );
    assert!(!dir.path().join("x.json").exists());
}

#[test]
fn run_hlog_writes_an_hdrhistogram_interval_log() {
    let f = fixture();
    let log = std::fs::read(&f.hlog).unwrap();
    let log_text = text(&log);
    assert!(
        log_text.starts_with("#[Histogram log format version 1.3]\n"),
        "{log_text}"
    );
    assert!(log_text.contains("\n#[StartTime: "));
    assert!(log_text.contains("\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"));
    let record = json(&f.a);
    let intervals = record["intervals"].as_array().unwrap();
    // Read back with hdrhistogram's interval-log reader.
    let lines = brokerbench_results::read_interval_log(&log).unwrap();
    assert_eq!(lines.len(), intervals.len() * 5);
    let mut per_tag: HashMap<Option<String>, u64> = HashMap::new();
    for line in &lines {
        *per_tag.entry(line.tag.clone()).or_default() += line.histogram.count();
        assert_eq!(line.duration, Duration::from_secs(1));
    }
    assert_eq!(
        per_tag[&None],
        record["latency"]["e2e"]["count"].as_u64().unwrap()
    );
    assert_eq!(
        per_tag[&Some("publish_ack".to_owned())],
        record["latency"]["publish_ack"]["count"].as_u64().unwrap()
    );
    assert_eq!(per_tag.len(), 5);
    // `export --format hlog` makes the same log from the stored record.
    let exported = brokerbench(
        &["export", f.a.to_str().unwrap(), "--format", "hlog"],
        &f.dir,
    );
    ok(&exported, "export --format hlog");
    assert_eq!(exported.stdout, log);

    // HdrHistogram's own tool reads it: Java's HistogramLogProcessor (Debian's
    // libhdrhistogram-java), untagged lines by default, `-tag` for the others.
    const JAR: &str = "/usr/share/java/hdrhistogram.jar";
    let test = "run_hlog_writes_an_hdrhistogram_interval_log";
    let Some(java) = find_tool("java", &["/usr/bin/java"], "default-jre-headless", test) else {
        return;
    };
    if !Path::new(JAR).is_file() {
        skip("hdrhistogram-java", "libhdrhistogram-java", test);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (tag, name) in [(None, "e2e"), (Some("publish_ack"), "publish_ack")] {
        let out = dir.path().join(name);
        let mut command = Command::new(&java);
        command
            .args(["-cp", JAR, "org.HdrHistogram.HistogramLogProcessor", "-i"])
            .arg(&f.hlog)
            .arg("-o")
            .arg(&out);
        if let Some(tag) = tag {
            command.args(["-tag", tag]);
        }
        ok(
            &run_bounded(command, Duration::from_secs(120)),
            "HistogramLogProcessor",
        );
        let distribution = std::fs::read_to_string(out.with_extension("hgrm")).unwrap();
        let total = distribution
            .lines()
            .find_map(|l| l.split("Total count    =").nth(1))
            .unwrap_or_else(|| panic!("no total in {distribution}"));
        assert_eq!(
            total
                .trim()
                .trim_end_matches(']')
                .trim()
                .parse::<u64>()
                .unwrap(),
            record["latency"][name]["count"].as_u64().unwrap(),
            "{name}"
        );
        // One line per interval in the interval percentile log.
        let intervals_logged = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter(|l| l.contains(": I:"))
            .count();
        assert_eq!(intervals_logged, intervals.len(), "{name}");
    }
}

#[test]
fn export_openmetrics_is_read_by_promtool() {
    let f = fixture();
    let om = ok(
        &brokerbench(
            &["export", f.a.to_str().unwrap(), "--format", "openmetrics"],
            &f.dir,
        ),
        "export --format openmetrics",
    );
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE brokerbench_e2e_latency_seconds histogram\n"));
    assert!(om.contains("# UNIT brokerbench_e2e_latency_seconds seconds\n"));
    assert!(om.contains("# TYPE brokerbench_publishes counter\n"));
    // chat-1to1's alert thresholds (5ms, 20ms) are bucket bounds; so is the fixed 2.5ms.
    for le in ["0.005", "0.02", "0.0025"] {
        assert!(om.contains(&format!(",le=\"{le}\"}}")), "le={le}");
    }
    let record = json(&f.a);
    let labels = format!(
        "{{scenario=\"chat-1to1\",backend=\"reference\",run_id=\"{}\"",
        record["run_id"].as_str().unwrap()
    );
    let count = record["latency"]["e2e"]["count"].as_u64().unwrap();
    assert!(
        om.contains(&format!(
            "brokerbench_e2e_latency_seconds_count{labels}}} {count}\n"
        )),
        "{om}"
    );
    assert!(om.contains(&format!(
        "brokerbench_availability_ratio{labels},operation=\"delivery\"}} 1.0\n"
    )));
    let prometheus = brokerbench(
        &[
            "export",
            f.a.to_str().unwrap(),
            "--format",
            "prometheus",
            "--out",
            "a.prom",
        ],
        &f.dir,
    );
    ok(&prometheus, "export --format prometheus");

    let Some(promtool) = find_tool(
        "promtool",
        &["/usr/bin/promtool"],
        "prometheus",
        "export_openmetrics_is_read_by_promtool",
    ) else {
        return;
    };
    let check = |input: &[u8]| {
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    // The Prometheus text format: clean.
    let out = check(&std::fs::read(f.dir.join("a.prom")).unwrap());
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool on --format prometheus: {:?}\n{}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    // OpenMetrics: promtool parses all of it (exit 1 would be a parse error). Its lint
    // reads the Prometheus 0.0.4 rules, where a counter's HELP goes on the `_total`
    // name; OpenMetrics puts it on the family name. That is its only remark.
    let out = check(om.as_bytes());
    let remarks = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(
        out.status.code(),
        Some(1),
        "promtool cannot parse it:\n{remarks}"
    );
    for remark in remarks.lines().filter(|l| !l.trim().is_empty()) {
        let family = remark
            .strip_suffix("_total no help text")
            .unwrap_or_else(|| panic!("unexpected promtool remark: {remark}"));
        assert!(
            om.contains(&format!("# TYPE {family} counter\n")),
            "{remark}"
        );
    }
}

/// The report, opened in headless Chromium: it loads without errors, every plot is in
/// the rendered DOM, and the screenshot is a real, non-blank picture.
#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = find_tool(
        "chromium",
        &["/usr/bin/chromium"],
        "chromium",
        "report_renders_in_headless_chromium",
    ) else {
        return;
    };
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    ok(
        &brokerbench(
            &[
                "report",
                f.a.to_str().unwrap(),
                f.b.to_str().unwrap(),
                "--out",
                report.to_str().unwrap(),
            ],
            dir.path(),
        ),
        "report",
    );
    let url = format!("file://{}", report.display());
    let headless = |profile: &str, extra: &[String]| {
        let mut command = Command::new(&chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--window-size=1400,2400",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join(profile).display()
            ))
            .args(extra)
            .arg(&url);
        run_bounded(command, Duration::from_secs(120))
    };
    let page_errors = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| {
                l.contains("net::ERR_")
                    || l.contains("Failed to load resource")
                    || (l.contains("CONSOLE") && l.to_ascii_lowercase().contains("error"))
            })
            .map(str::to_owned)
            .collect()
    };

    let dom = headless("profile-dom", &["--dump-dom".to_owned()]);
    let dom_text = ok(&dom, "chromium --dump-dom");
    assert!(
        page_errors(&text(&dom.stderr)).is_empty(),
        "{}",
        text(&dom.stderr)
    );
    assert!(
        dom_text
            .contains("<title>brokerbench report: chat-1to1 on reference #1, reference #2</title>")
    );
    assert_eq!(
        dom_text.matches("<svg").count(),
        8,
        "every plot in the rendered DOM"
    );
    for id in [
        "plot-e2e-percentiles",
        "plot-publish-ack-percentiles",
        "plot-rates",
        "plot-deliveries",
        "plot-latency-timeline",
        "plot-availability",
        "plot-cpu",
        "plot-rss",
    ] {
        let start = dom_text
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id}"));
        let end = start + dom_text[start..].find("</figure>").unwrap();
        let figure = &dom_text[start..end];
        assert!(
            figure.contains("<svg") && figure.contains("<polyline"),
            "{id} has drawn lines"
        );
    }
    assert!(
        dom_text.trim_end().ends_with("</html>"),
        "the whole page loaded"
    );

    let png_path = dir.path().join("report.png");
    let shot = headless(
        "profile-shot",
        &[format!("--screenshot={}", png_path.display())],
    );
    ok(&shot, "chromium --screenshot");
    assert!(
        page_errors(&text(&shot.stderr)).is_empty(),
        "{}",
        text(&shot.stderr)
    );
    let bytes = std::fs::read(&png_path).unwrap();
    assert!(
        bytes.len() > 50_000,
        "a blank page compresses to a few KiB: {} bytes",
        bytes.len()
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1400, 2400));
    let channels = info.color_type.samples();
    assert!(
        channels >= 3 && info.bit_depth == png::BitDepth::Eight,
        "{info:?}"
    );
    let mut histogram: HashMap<[u8; 3], u64> = HashMap::new();
    for px in pixels[..info.buffer_size()].chunks_exact(channels) {
        *histogram.entry([px[0], px[1], px[2]]).or_default() += 1;
    }
    let total = u64::from(info.width) * u64::from(info.height);
    let background = histogram.values().max().copied().unwrap_or(0);
    assert!(
        histogram.len() > 100,
        "{} distinct colours: not a real page",
        histogram.len()
    );
    assert!(
        total - background > total / 10,
        "at least 10 % of the pixels are not background: {} of {total}",
        total - background
    );
    // The runs' colours (Tableau blue and orange) are on the screen.
    let near = |c: [u8; 3]| {
        histogram
            .iter()
            .filter(|(k, _)| k.iter().zip(c).all(|(a, b)| a.abs_diff(b) < 12))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert!(
        near([78, 121, 167]) > 500 && near([242, 142, 43]) > 500,
        "both runs' colours drawn"
    );
}
