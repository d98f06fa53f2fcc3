//! The model at work: schedule arithmetic at known times, command-line overrides and the
//! JSON form stored in the run record.

use std::time::Duration;

use brokerbench_scenarios::{
    CatchUp, ErrorKind, KeyDistribution, MessageSize, ReplyTopic, Scenario, Schedule, builtin,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every feature of the format in one file.
const FULL: &str = r#"
name = "full"
description = "Everything at once"
warmup = "1s"
duration = "5s"
drain = "1500ms"

[[workload]]
name = "stepped"
topics = 3
producers_per_topic = 2
subscribers_per_topic = 4
delivery = "one"
size = { distribution = "weighted", sizes = [[100, 3], [1000, 1]] }
keys = { count = 50, distribution = "zipf", exponent = 1.1 }
schedule = { steps = [["1k/s", "2s"], [3000, "2s"]] }
ack = true

[[workload]]
name = "ramped"
topics = 1
producers_per_topic = 1
subscribers_per_topic = 2
delivery = "all"
size = { distribution = "uniform", min = 64, max = 128 }
schedule = { ramp = { from = 1000, to = 3000, over = "2s" } }
reply = { size = 64 }

[[workload]]
name = "bursty"
topics = 2
producers_per_topic = 1
subscribers_per_topic = 1
delivery = "all"
cache = true
size = 80
bursts = { every = "100ms", size = 100 }
late_subscribers = { count = 2, join_after = "3s", from = "last_seen", offline_after = "1s" }

[workload.keys]
count = 7

[[alerts]]
signal = "e2e.p99"
direction = "upper"
warning = "5ms"
critical = "20ms"
"#;

fn full() -> Scenario {
    Scenario::from_toml_str(FULL, "full.toml").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_full_example_reads_into_the_model() {
    let s = full();
    assert_eq!(s.warmup, ms(1000));
    assert_eq!(s.drain, ms(1500));
    let [stepped, ramped, bursty] = &s.workloads[..] else {
        panic!("three workloads")
    };
    assert_eq!(stepped.topic_name(2), "stepped.2");
    assert_eq!(stepped.producers(), 6);
    assert_eq!(stepped.subscribers(), 12);
    assert!(stepped.ack && !ramped.ack);
    assert_eq!(
        stepped.keys.as_ref().unwrap().distribution,
        KeyDistribution::Zipf { exponent: 1.1 }
    );
    assert_eq!(stepped.size.mean(), 325.0);
    assert_eq!(ramped.size, MessageSize::Uniform { min: 64, max: 128 });
    let reply = ramped.reply.as_ref().unwrap();
    assert_eq!(
        (reply.size, reply.topic, reply.count),
        (64, ReplyTopic::Sender, 1)
    );
    assert_eq!(
        bursty.keys.as_ref().unwrap().distribution,
        KeyDistribution::Uniform
    );
    let late = bursty.late_subscribers.as_ref().unwrap();
    assert_eq!(
        late.from,
        CatchUp::LastSeen {
            offline_after: ms(1000)
        }
    );
    assert_eq!(late.join_after, ms(3000));
}

#[test]
fn steps_hold_each_rate_then_the_last() {
    let steps = full().workloads[0].schedule.clone();
    assert_eq!(steps.rate_at(Duration::ZERO), 1000.0);
    assert_eq!(steps.rate_at(ms(1999)), 1000.0);
    assert_eq!(steps.rate_at(ms(2000)), 3000.0);
    assert_eq!(steps.rate_at(ms(4500)), 3000.0);
    assert_eq!(steps.rate_at(Duration::from_secs(60)), 3000.0);
    assert_eq!(steps.expected_messages(ms(2000)), 2000);
    assert_eq!(steps.expected_messages(ms(4000)), 8000);
    assert_eq!(steps.expected_messages(ms(5000)), 11_000);
    assert_eq!(steps.due_time(1999), Some(ms(1999)));
    assert_eq!(steps.due_time(2000), Some(ms(2000)));
    assert_eq!(steps.due_time(2003), Some(ms(2001)));
    assert_eq!(steps.due_time(8000), Some(ms(4000)));
    assert_eq!(steps.warmup(), Schedule::Constant { rate: 1000.0 });
}

#[test]
fn a_ramp_rises_linearly_then_holds() {
    let ramp = full().workloads[1].schedule.clone();
    assert_eq!(ramp.rate_at(Duration::ZERO), 1000.0);
    assert_eq!(ramp.rate_at(ms(1000)), 2000.0);
    assert_eq!(ramp.rate_at(ms(1500)), 2500.0);
    assert_eq!(ramp.rate_at(ms(2000)), 3000.0);
    assert_eq!(ramp.rate_at(ms(4000)), 3000.0);
    // ∫ from + (to-from)·t/over = 1000·1 + 2000·1²/4
    assert_eq!(ramp.expected_messages(ms(1000)), 1500);
    assert_eq!(ramp.expected_messages(ms(2000)), 4000);
    assert_eq!(ramp.expected_messages(ms(3000)), 7000);
    let close = |got: Option<Duration>, want: Duration| {
        let got = got.unwrap();
        assert!(
            got.abs_diff(want) < Duration::from_micros(1),
            "{got:?} vs {want:?}"
        );
    };
    close(ramp.due_time(1500), ms(1000));
    close(ramp.due_time(4000), ms(2000));
    close(ramp.due_time(7000), ms(3000));
    assert_eq!(ramp.due_time(0), Some(Duration::ZERO));
    // Due times and counts agree: message i is due before t exactly when i < count(t).
    for i in [1_u64, 10, 999, 2500, 3999] {
        let due = ramp.due_time(i).unwrap();
        assert_eq!(ramp.expected_messages(due), i, "message {i}");
        assert_eq!(
            ramp.expected_messages(due + Duration::from_micros(1)),
            i + 1,
            "message {i}"
        );
    }
}

#[test]
fn the_scenario_offers_warmup_then_schedule_then_nothing() {
    let s = full();
    // Warm-up (1 s): initial rates 1000 + 1000 + bursts 1000.
    assert_eq!(s.offered_rate_at(ms(500)), 3000.0);
    // Measured phase, 1.5 s in: steps 1000, ramp 2500, bursts 1000.
    assert_eq!(s.offered_rate_at(ms(2500)), 4500.0);
    // 4 s in: steps 3000, ramp 3000, bursts 1000.
    assert_eq!(s.offered_rate_at(ms(5000)), 7000.0);
    // Drain.
    assert_eq!(s.offered_rate_at(ms(6000)), 0.0);
    assert_eq!(s.peak_offered_rate(), 7000.0);
    assert_eq!(s.total_time(), ms(7500));
    assert_eq!(s.expected_warmup_messages(), 3000);
    // steps 11000 + ramp 4000 + 3·3000 + bursts 50 × 100
    assert_eq!(s.expected_measured_messages(), 11_000 + 13_000 + 5_000);
    assert_eq!(s.expected_messages(), 32_000);
}

#[test]
fn a_rate_override_scales_every_workload_to_the_new_peak() {
    let s = full().with_rate(14_000.0).unwrap();
    assert_eq!(s.peak_offered_rate(), 14_000.0);
    let [stepped, ramped, bursty] = &s.workloads[..] else {
        panic!("three workloads")
    };
    assert_eq!(stepped.schedule.rate_at(Duration::ZERO), 2000.0);
    assert_eq!(stepped.schedule.rate_at(ms(3000)), 6000.0);
    assert_eq!(
        ramped.schedule,
        Schedule::Ramp {
            from: 2000.0,
            to: 6000.0,
            over: ms(2000)
        }
    );
    assert_eq!(
        bursty.schedule,
        Schedule::Bursts {
            every: ms(50),
            size: 100
        }
    );

    let s = builtin::get("chat-1to1").unwrap().with_rate(500.0).unwrap();
    assert_eq!(s.workloads[0].schedule, Schedule::Constant { rate: 500.0 });
    assert_eq!(s.expected_measured_messages(), 3000);
}

#[test]
fn a_bad_rate_override_is_refused() {
    for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        let e = full().with_rate(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Override);
        assert_eq!(e.origin(), "--rate");
    }
    assert_eq!(
        full().with_rate(0.0).unwrap_err().to_string(),
        "--rate: the rate must be greater than 0 msgs/s (got 0)"
    );
}

#[test]
fn a_duration_override_keeps_warmup_and_drain() {
    let s = full().with_duration(Duration::from_secs(20)).unwrap();
    assert_eq!(s.duration, Duration::from_secs(20));
    assert_eq!(s.total_time(), ms(22_500));
    // The steps end after 4 s; their last rate holds.
    assert_eq!(s.offered_rate_at(Duration::from_secs(15)), 7000.0);

    // Shorter than the steps: they are cut short.
    let s = full().with_duration(ms(3500)).unwrap();
    assert_eq!(s.workloads[0].schedule.expected_messages(s.duration), 6500);

    // Shorter than the late subscribers' join time: refused.
    let e = full().with_duration(ms(2000)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Override);
    assert_eq!(
        e.to_string(),
        "--duration: workload[2].late_subscribers.join_after: late subscribers join after 3s but the \
         measured phase lasts 2s: they would never join"
    );
    assert_eq!(
        full()
            .with_duration(Duration::ZERO)
            .unwrap_err()
            .to_string(),
        "--duration: duration: the measured duration must be longer than 0s"
    );
}

#[test]
fn the_json_record_round_trips() {
    let mut all: Vec<Scenario> = builtin::names().map(|n| builtin::get(n).unwrap()).collect();
    all.push(full());
    for scenario in all {
        let json = scenario.to_json().unwrap();
        let back: Scenario = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, scenario);
        back.validate().unwrap();
        let text = serde_json::to_string(&scenario).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&text).unwrap(), scenario);
    }
}

#[test]
fn the_json_record_reads_like_the_file() {
    let json = full().to_json().unwrap();
    assert_eq!(json["warmup"], "1s");
    assert_eq!(json["drain"], "1s 500ms");
    let w = &json["workloads"];
    assert_eq!(w[0]["delivery"], "one");
    assert_eq!(w[0]["schedule"]["kind"], "steps");
    assert_eq!(
        w[0]["schedule"]["steps"][1],
        serde_json::json!({ "rate": 3000.0, "duration": "2s" })
    );
    assert_eq!(
        w[0]["keys"],
        serde_json::json!({ "count": 50, "distribution": { "kind": "zipf", "exponent": 1.1 } })
    );
    assert_eq!(
        w[0]["size"],
        serde_json::json!({ "distribution": "weighted", "sizes": [[100, 3], [1000, 1]] })
    );
    assert_eq!(
        w[1]["schedule"],
        serde_json::json!({ "kind": "ramp", "from": 1000.0, "to": 3000.0, "over": "2s" })
    );
    assert_eq!(w[2]["size"], 80);
    assert_eq!(
        w[2]["late_subscribers"]["from"],
        serde_json::json!({ "kind": "last_seen", "offline_after": "1s" })
    );
    assert_eq!(json["alerts"][0]["critical"], "20ms");
}

#[test]
fn a_scenario_built_in_code_is_checked_too() {
    let mut s = full();
    s.workloads[1].topics = 0;
    let e = s.validate().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(
        e.to_string(),
        "scenario full: workload[1].topics: the number of topics must be at least 1 (got 0)"
    );
}

#[test]
fn the_readme_example_is_a_valid_scenario() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let s =
        Scenario::from_toml_str(&readme[start..end], "README.md").unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.workloads.is_empty());
}
