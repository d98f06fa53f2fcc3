//! Every class of error names the origin, the line and column, and the key path, and says
//! what to do; the tests pin the exact text users see.

use brokerbench_scenarios::{ErrorKind, Position, Scenario, ScenarioError};

/// Two workloads, so that key paths have to tell them apart.
const BASE: &str = r#"name = "t"
duration = "5s"

[[workload]]
name = "a"
topics = 2
producers_per_topic = 1
subscribers_per_topic = 1
delivery = "all"
size = 100
rate = 100

[[workload]]
name = "b"
topics = 2
producers_per_topic = 1
subscribers_per_topic = 1
delivery = "all"
size = 100
rate = 100
"#;

/// `BASE` with the second workload's `rate = 100` line (line 20) replaced by `lines`.
fn second_pace(lines: &str) -> String {
    let at = BASE.rfind("rate = 100").unwrap();
    format!("{}{lines}\n", &BASE[..at])
}

fn error(source: &str) -> ScenarioError {
    Scenario::from_toml_str(source, "t.toml").expect_err("the scenario should be rejected")
}

fn first_line(e: &ScenarioError) -> String {
    e.to_string().lines().next().unwrap().to_owned()
}

#[test]
fn the_base_scenario_is_valid() {
    let s = Scenario::from_toml_str(BASE, "t.toml").unwrap();
    assert_eq!(s.workloads.len(), 2);
}

#[test]
fn a_syntax_error_names_line_column_and_key() {
    let e = error(&second_pace("rate = 20k/s"));
    assert_eq!(e.kind(), ErrorKind::Syntax);
    assert_eq!(
        e.position(),
        Some(&Position {
            line: 20,
            column: 10
        })
    );
    assert_eq!(e.key(), Some("workload[1].rate"));
    assert_eq!(
        e.to_string(),
        "t.toml:20:10: workload[1].rate: expected newline, `#`\n   |\n20 | rate = 20k/s\n   |          ^"
    );

    let e = error(&second_pace("rate = \"20k/s"));
    assert_eq!(
        first_line(&e),
        "t.toml:20:14: workload[1].rate: invalid basic string"
    );
}

#[test]
fn an_unknown_key_is_named_with_the_keys_that_are_allowed() {
    let e = error(&second_pace("rate = 100\nrat = 5"));
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert_eq!(
        first_line(&e),
        "t.toml:21:1: workload[1].rat: unknown field `rat`, expected one of `name`, `topics`, \
         `producers_per_topic`, `subscribers_per_topic`, `delivery`, `cache`, `size`, `keys`, \
         `rate`, `schedule`, `bursts`, `late_subscribers`, `reply`, `ack`"
    );

    let e = error(&format!("foo = 1\n{BASE}"));
    assert_eq!(e.key(), Some("foo"));
    assert_eq!(e.position(), Some(&Position { line: 1, column: 1 }));

    let e = error(&BASE.replacen(
        "size = 100",
        "size = { distribution = \"uniform\", min = 100, mx = 200 }",
        1,
    ));
    assert_eq!(
        first_line(&e),
        "t.toml:10:47: workload[0].size.mx: unknown field `mx`, expected one of `distribution`, `min`, `max`, `sizes`"
    );

    let e = error(&format!("{BASE}\n[workload.keys]\ncount = 3\nexp = 1\n"));
    assert_eq!(
        first_line(&e),
        "t.toml:24:1: workload[1].keys.exp: unknown field `exp`, expected one of `count`, `distribution`, `exponent`"
    );
}

#[test]
fn a_wrong_type_names_what_was_expected() {
    let e = error(&second_pace("rate = true"));
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert_eq!(
        e.to_string(),
        "t.toml:20:8: workload[1].rate: invalid type: boolean `true`, expected msgs/s as a number or a string like \"20k/s\"\n   |\n20 | rate = true\n   |        ^^^^"
    );

    let e = error(&second_pace("rate = \"fast\""));
    assert_eq!(
        first_line(&e),
        "t.toml:20:8: workload[1].rate: invalid rate \"fast\": expected msgs/s as a number or a string like \"500/s\", \"20k/s\" or \"1.5M/s\""
    );

    let e = error(&BASE.replacen("topics = 2", "topics = -1", 1));
    assert_eq!(
        first_line(&e),
        "t.toml:6:10: workload[0].topics: invalid value: integer `-1`, expected u32"
    );

    let e = error(&BASE.replacen("duration = \"5s\"", "duration = 5", 1));
    assert_eq!(
        first_line(&e),
        "t.toml:2:12: duration: a duration needs a unit: write \"5s\" for seconds or \"5ms\" for milliseconds"
    );

    let e = error(&BASE.replacen("delivery = \"all\"", "delivery = \"two\"", 1));
    assert_eq!(
        first_line(&e),
        "t.toml:9:12: workload[0].delivery: unknown variant `two`, expected `all` or `one`"
    );

    let e = error(&second_pace(
        "schedule = { steps = [[100, \"4s\"], [5, 2]] }",
    ));
    assert_eq!(e.key(), Some("workload[1].schedule.steps[1][1]"));
    assert_eq!(
        e.position(),
        Some(&Position {
            line: 20,
            column: 40
        })
    );

    let e = error(&format!("alerts = 5\n{BASE}"));
    assert_eq!(
        first_line(&e),
        "t.toml:1:10: alerts: invalid type: integer `5`, expected a sequence"
    );

    let e = error(&format!("alerts = [1]\n{BASE}"));
    assert_eq!(
        first_line(&e),
        "t.toml:1:11: alerts[0]: invalid type: integer `1`, expected a map"
    );

    let kept = Scenario::from_toml_str(
        &format!("{BASE}\n[[alerts]]\nsignal = \"x\"\nanything = [1]\n"),
        "t.toml",
    )
    .unwrap();
    assert_eq!(
        kept.alerts[0]["anything"],
        toml::Value::Array(vec![toml::Value::Integer(1)])
    );
}

#[test]
fn a_missing_key_is_reported_at_its_table() {
    let e = error(&BASE.replacen("duration = \"5s\"\n", "", 1));
    assert_eq!(e.kind(), ErrorKind::Schema);
    assert_eq!(
        first_line(&e),
        "t.toml:1:1: duration: missing field `duration`"
    );

    let e = error(&BASE.replacen("size = 100\n", "", 2));
    assert_eq!(
        first_line(&e),
        "t.toml:4:1: workload[0].size: missing field `size`"
    );

    let e = error(&second_pace(
        "rate = 1\nlate_subscribers = { count = 1, from = \"latest\" }",
    ));
    assert_eq!(
        first_line(&e),
        "t.toml:21:20: workload[1].late_subscribers.join_after: missing field `join_after`"
    );
}

#[test]
fn semantic_errors_point_at_the_value() {
    let cases: [(String, &str); 12] = [
        (
            second_pace("rate = 0"),
            "t.toml:20:8: workload[1].rate: the rate must be greater than 0 msgs/s (got 0)",
        ),
        (
            BASE.replacen("topics = 2", "topics = 0", 2),
            "t.toml:6:10: workload[0].topics: the number of topics must be at least 1 (got 0)",
        ),
        (
            BASE.replacen("duration = \"5s\"", "duration = \"0s\"", 1),
            "t.toml:2:12: duration: the measured duration must be longer than 0s",
        ),
        (
            BASE.replacen("size = 100", "size = 10", 1),
            "t.toml:10:8: workload[0].size: 10 bytes is below the minimum message size of 64 bytes, \
             which the envelope (run id, producer, sequence, send time) needs",
        ),
        (
            BASE.replacen(
                "size = 100",
                "size = { distribution = \"uniform\", min = 300, max = 200 }",
                1,
            ),
            "t.toml:10:42: workload[0].size.min: min (300 bytes) is larger than max (200 bytes)",
        ),
        (
            BASE.replacen(
                "size = 100",
                "size = { distribution = \"weighted\", sizes = [[100, 1], [32, 1]] }",
                1,
            ),
            "t.toml:10:56: workload[0].size.sizes[1]: 32 bytes is below the minimum message size of 64 bytes, \
             which the envelope (run id, producer, sequence, send time) needs",
        ),
        (
            second_pace("rate = 5\nbursts = { every = \"1s\", size = 2 }"),
            "t.toml:21:10: workload[1].bursts: `rate`, `schedule` and `bursts` are alternatives: give exactly one of them",
        ),
        (
            second_pace(""),
            "t.toml:13:1: workload[1]: the workload has no pace: set one of `rate` (msgs/s), `schedule` (steps or ramp) or `bursts`",
        ),
        (
            second_pace("schedule = { steps = [[100, \"2s\"], [-5, \"1s\"]] }"),
            "t.toml:20:37: workload[1].schedule.steps[1][0]: the rate must be 0 or more msgs/s (got -5)",
        ),
        (
            second_pace("schedule = { steps = [[100, \"4s\"], [5, \"2s\"]] }"),
            "t.toml:20:22: workload[1].schedule.steps: the schedule lasts 6s but the measured phase lasts 5s: \
             shorten the schedule or raise `duration`",
        ),
        (
            BASE.replacen("name = \"b\"", "name = \"a\"", 1),
            "t.toml:14:8: workload[1].name: workload name `a` is already used by workload[0]; \
             topic names `<name>.<i>` must not collide",
        ),
        (
            format!("{BASE}\n[workload.keys]\ncount = 0\n"),
            "t.toml:23:9: workload[1].keys.count: the number of keys must be at least 1 (got 0)",
        ),
    ];
    for (source, expected) in cases {
        let e = error(&source);
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert_eq!(first_line(&e), expected);
    }
}

#[test]
fn late_subscribers_need_something_to_catch_up_from() {
    let e = error(&second_pace(
        "rate = 100\ncache = false\nlate_subscribers = { count = 1, join_after = \"2s\", from = \"last_seen\" }",
    ));
    assert_eq!(
        e.to_string(),
        "t.toml:22:59: workload[1].late_subscribers.from: from = \"last_seen\" replays the broker's cache, \
         but this workload sends with cache = false, so there is nothing to catch up from; set cache = true \
         or use from = \"latest\"\n   |\n22 | late_subscribers = { count = 1, join_after = \"2s\", from = \"last_seen\" }\n   |                                                           ^^^^^^^^^^^"
    );

    let one = BASE.replacen("delivery = \"all\"", "delivery = \"one\"", 2);
    let at = one.rfind("rate = 100").unwrap();
    let e = error(&format!(
        "{}rate = 100\nlate_subscribers = {{ count = 1, join_after = \"2s\", from = \"beginning\" }}\n",
        &one[..at]
    ));
    assert_eq!(e.key(), Some("workload[1].late_subscribers.from"));
    assert!(
        e.message()
            .contains("under delivery = \"one\" a message handed to a subscriber is never cached")
    );

    let e = error(&second_pace(
        "rate = 100\nlate_subscribers = { count = 1, join_after = \"9s\", from = \"latest\" }",
    ));
    assert_eq!(
        first_line(&e),
        "t.toml:21:46: workload[1].late_subscribers.join_after: late subscribers join after 9s but the \
         measured phase lasts 5s: they would never join"
    );

    let e = error(&second_pace(
        "rate = 100\nlate_subscribers = { count = 1, join_after = \"2s\", from = \"latest\", offline_after = \"1s\" }",
    ));
    assert_eq!(e.key(), Some("workload[1].late_subscribers.offline_after"));
    assert_eq!(
        e.position(),
        Some(&Position {
            line: 21,
            column: 85
        })
    );

    let e = error(&second_pace(
        "rate = 100\nlate_subscribers = { count = 1, join_after = \"2s\", from = \"last_seen\", offline_after = \"3s\" }",
    ));
    assert_eq!(e.key(), Some("workload[1].late_subscribers.offline_after"));
    assert!(
        e.message()
            .contains("offline_after must come before join_after")
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, second_pace("rate = 0")).unwrap();
    let e = Scenario::from_file(&path).unwrap_err();
    assert_eq!(e.origin(), path.display().to_string());
    assert!(
        e.to_string()
            .starts_with(&format!("{}:20:8: workload[1].rate: ", path.display()))
    );
}
