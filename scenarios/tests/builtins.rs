//! The built-in library: every file loads, validates, documents itself and fits the budget
//! of a short run on a small machine.

use std::time::Duration;

use brokerbench_scenarios::{DEFAULT_SCENARIO, Delivery, ErrorKind, Scenario, Schedule, builtin};

const EXPECTED: [&str; 7] = [
    "chat-1to1",
    "group-chat",
    "typing-indicators",
    "receipts",
    "work-queue",
    "offline-catchup",
    "chat-under-faults",
];

#[test]
fn the_library_holds_the_scenarios_of_the_issues() {
    assert_eq!(builtin::names().collect::<Vec<_>>(), EXPECTED);
    assert!(builtin::names().any(|n| n == DEFAULT_SCENARIO));
}

#[test]
fn every_builtin_parses_and_validates() {
    for name in builtin::names() {
        let scenario = builtin::get(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.name, name);
        scenario.validate().unwrap();
        assert!(
            !scenario.alerts.is_empty(),
            "{name} has no [[alerts]] example"
        );
        for rule in &scenario.alerts {
            assert!(rule.contains_key("signal"), "{name}: {rule:?}");
        }
    }
}

#[test]
fn every_builtin_documents_itself_in_a_leading_comment_block() {
    for name in builtin::names() {
        let source = builtin::source(name).unwrap();
        let comments = source.lines().take_while(|l| l.starts_with('#')).count();
        assert!(
            comments >= 15,
            "{name}: only {comments} comment lines at the top"
        );
        assert!(
            source.starts_with(&format!("# {name}: ")),
            "{name}: first line names the scenario"
        );
        let scenario = builtin::get(name).unwrap();
        for w in &scenario.workloads {
            for key in [
                "topics",
                "producers_per_topic",
                "subscribers_per_topic",
                "delivery",
                "size",
            ] {
                let header = source.lines().take_while(|l| l.starts_with('#'));
                assert!(
                    header
                        .clone()
                        .any(|l| l.trim_start_matches('#').trim_start().starts_with(key)),
                    "{name}: key `{key}` of workload `{}` is not explained",
                    w.name
                );
            }
        }
    }
}

#[test]
fn every_builtin_takes_about_ten_seconds_at_moderate_rates() {
    // chat-under-faults runs four faults in turn, each with room to heal: checked below.
    for name in builtin::names().filter(|n| *n != "chat-under-faults") {
        let s = builtin::get(name).unwrap();
        let total = s.total_time();
        assert!(
            total >= Duration::from_secs(8) && total <= Duration::from_secs(12),
            "{name}: {total:?}"
        );
        assert!(
            (1..=2).contains(&s.warmup.as_secs()),
            "{name}: warm-up {:?}",
            s.warmup
        );
        assert!(
            (5..=8).contains(&s.duration.as_secs()),
            "{name}: duration {:?}",
            s.duration
        );
        assert_eq!(s.drain, Duration::from_secs(2), "{name}");
        let peak = s.peak_offered_rate();
        assert!(peak > 0.0 && peak <= 5_000.0, "{name}: {peak} msgs/s");
        let fan_out: f64 = s
            .workloads
            .iter()
            .map(|w| match w.delivery {
                Delivery::All => f64::from(w.subscribers_per_topic),
                Delivery::One => 1.0,
            })
            .fold(0.0, f64::max);
        assert!(
            peak * fan_out <= 60_000.0,
            "{name}: {} deliveries/s",
            peak * fan_out
        );
    }
}

#[test]
fn the_default_scenario_is_light_and_ten_seconds_long() {
    let s = builtin::get(DEFAULT_SCENARIO).unwrap();
    assert_eq!(s.total_time(), Duration::from_secs(10));
    assert_eq!(s.expected_messages(), 16_000);
}

#[test]
fn builtins_model_what_their_names_say() {
    let get = |n: &str| builtin::get(n).unwrap();
    let group = get("group-chat");
    assert_eq!(group.workloads[0].subscribers_per_topic, 50);
    assert_eq!(group.workloads[0].delivery, Delivery::All);

    let typing = get("typing-indicators");
    let w = &typing.workloads[0];
    assert!(!w.cache);
    assert!((64..=80).contains(&w.size.min()) && w.size.max() <= 80);
    assert!(matches!(w.schedule, Schedule::Bursts { .. }));

    let receipts = get("receipts");
    let reply = receipts.workloads[0].reply.as_ref().unwrap();
    assert_eq!(reply.size, 64);

    let queue = get("work-queue");
    assert_eq!(queue.workloads[0].delivery, Delivery::One);
    assert!(queue.workloads[0].keys.is_some());

    let catchup = get("offline-catchup");
    assert!(catchup.workloads[0].late_subscribers.is_some());

    let chat = get("chat-1to1");
    let mean = chat.workloads[0].size.mean();
    assert!((100.0..=300.0).contains(&mean), "{mean}");
}

#[test]
fn list_gives_one_line_descriptions() {
    let list = builtin::list().unwrap();
    assert_eq!(list.len(), EXPECTED.len());
    for entry in &list {
        assert!(!entry.description.is_empty() && !entry.description.contains('\n'));
        assert!(
            entry.description.len() <= 100,
            "{}: {}",
            entry.name,
            entry.description
        );
        let total = if entry.name == "chat-under-faults" {
            27
        } else {
            10
        };
        assert_eq!(
            entry.total_time,
            Duration::from_secs(total),
            "{}",
            entry.name
        );
    }
    assert_eq!(list[0].peak_rate, 2000.0);
}

#[test]
fn names_resolve_to_builtins_files_or_a_helpful_error() {
    assert_eq!(Scenario::load("group-chat").unwrap().name, "group-chat");

    let error = builtin::get("chat").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownScenario);
    assert_eq!(
        error.to_string(),
        "chat: no built-in scenario or file by that name; built-ins: chat-1to1, group-chat, \
         typing-indicators, receipts, work-queue, offline-catchup, chat-under-faults"
    );
    assert_eq!(
        Scenario::load("chat").unwrap_err().kind(),
        ErrorKind::UnknownScenario
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(
        &path,
        builtin::source("receipts")
            .unwrap()
            .replace("\"receipts\"", "\"mine\""),
    )
    .unwrap();
    assert_eq!(Scenario::load(path.to_str().unwrap()).unwrap().name, "mine");

    let missing = dir.path().join("missing.toml");
    let error = Scenario::load(missing.to_str().unwrap()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Read);
    assert!(error.to_string().starts_with(&format!(
        "{}: cannot read the scenario file: ",
        missing.display()
    )));
    assert!(std::error::Error::source(&error).is_some());
}

/// Every built-in expands into a plan whose offered load matches the scenario's.
#[test]
fn every_builtin_expands_into_a_matching_plan() {
    use std::time::Duration;
    for name in brokerbench_scenarios::builtin::names() {
        let scenario = brokerbench_scenarios::builtin::get(name).unwrap();
        let plan = scenario.plan("r1");
        assert_eq!(plan.run_id, "r1");
        assert_eq!(plan.warmup, scenario.warmup);
        let topics: u32 = scenario.workloads.iter().map(|w| w.topics).sum();
        assert_eq!(plan.topics.len(), topics as usize, "{name}");
        let at = Duration::from_millis(1500);
        let want = scenario.offered_rate_at(scenario.warmup + at);
        let got = plan.offered_rate_at(at);
        assert!(
            (want - got).abs() <= want * 1e-9 + 1e-9,
            "{name}: scenario {want}/s, plan {got}/s"
        );
        for topic in &plan.topics {
            assert!(
                !topic.producers.is_empty(),
                "{name}: a topic without producers"
            );
        }
    }
}

/// What each built-in asks of a backend: every one runs on a broker with fan-out or
/// competing consumers; only offline-catchup (its subscriber comes back after the last
/// sequence it saw) needs replay; keys alone (work-queue) ask for no ordering guarantee.
#[test]
fn builtins_require_only_what_they_use() {
    use brokerbench_adapters::Capability;
    for name in brokerbench_scenarios::builtin::names() {
        let plan = brokerbench_scenarios::builtin::get(name)
            .unwrap()
            .plan("r1");
        let needed = brokerbench_bench::required_capabilities(&plan);
        assert_eq!(
            needed.contains(Capability::Replay),
            name == "offline-catchup",
            "{name}: {needed}"
        );
        assert!(
            !needed.contains(Capability::KeyOrdering),
            "{name}: {needed}"
        );
        assert_eq!(
            needed.contains(Capability::Competing),
            name == "work-queue",
            "{name}: {needed}"
        );
    }
}

#[test]
fn chat_under_faults_runs_every_fault_in_turn_in_under_half_a_minute() {
    let s = builtin::get("chat-under-faults").unwrap();
    assert!(
        s.total_time() <= Duration::from_secs(30),
        "{:?}",
        s.total_time()
    );
    let kinds: Vec<String> = s.faults.iter().map(|f| f.kind.to_string()).collect();
    assert_eq!(kinds, ["latency", "reset", "partition", "restart"]);
    for f in &s.faults {
        assert!(
            f.heal_at() < s.duration,
            "{f} heals after the measured phase"
        );
    }
    let signals: Vec<&str> = s
        .alerts
        .iter()
        .filter_map(|r| r.get("signal")?.as_str())
        .collect();
    for signal in [
        "fault.publish.recovery",
        "fault.delivery.unavailable",
        "fault.lost",
    ] {
        assert!(signals.contains(&signal), "no rule on {signal}");
    }
}
