//! `[[fault]]` tables and `--fault` flags: read into the model, checked together, and
//! refused with the line and the key when wrong.

use std::time::Duration;

use brokerbench_scenarios::{ErrorKind, FaultKind, FaultSpec, Scenario};

const BASE: &str = r#"name = "t"
duration = "10s"

[[workload]]
name = "a"
topics = 1
producers_per_topic = 1
subscribers_per_topic = 1
delivery = "all"
size = 100
rate = 100
"#;

fn with(faults: &str) -> Result<Scenario, brokerbench_scenarios::ScenarioError> {
    Scenario::from_toml_str(&format!("{BASE}\n{faults}"), "t.toml")
}

#[test]
fn fault_tables_are_read_in_order() {
    let s = with(
        r#"[[fault]]
kind = "latency"
at = "1s"
duration = "2s"
delay = "50ms"
direction = "from-broker"

[[fault]]
kind = "bandwidth"
at = "4s"
duration = "1s"
bytes_per_second = 100000
targets = "subscribers"
"#,
    )
    .unwrap();
    assert_eq!(s.faults.len(), 2);
    assert_eq!(s.faults[0].kind, FaultKind::Latency);
    assert_eq!(s.faults[0].delay, Duration::from_millis(50));
    assert_eq!(s.faults[1].bytes_per_second, Some(100_000));
    // The resolved scenario keeps them, as written, in the record.
    let json = s.to_json().unwrap();
    assert_eq!(json["faults"][0]["delay"], "50ms");
    assert_eq!(json["faults"][1]["targets"], "subscribers");
    // A scenario without faults has no `faults` key at all.
    let plain = Scenario::from_toml_str(BASE, "t.toml").unwrap();
    assert!(plain.to_json().unwrap().get("faults").is_none());
}

#[test]
fn a_bad_fault_names_its_line_and_key() {
    let e =
        with("[[fault]]\nkind = \"latency\"\nat = \"1s\"\nduration = \"2s\"\ndelay = \"soon\"\n")
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(e.key(), Some("fault[0].delay"));
    assert_eq!(e.position().map(|p| p.line), Some(17), "{e}");
    let e =
        with("[[fault]]\nkind = \"partition\"\nat = \"1s\"\nduration = \"2s\"\ncolour = \"red\"\n")
            .unwrap_err();
    assert_eq!(e.key(), Some("fault[0].colour"), "{e}");
    let e = with("[[fault]]\nkind = \"reset\"\nat = 2.5\n").unwrap_err();
    assert_eq!(e.key(), Some("fault[0].at"), "{e}");
    assert!(e.to_string().contains("expected a string"), "{e}");
}

#[test]
fn faults_must_take_turns_inside_the_measured_phase() {
    let e = with("[[fault]]\nkind = \"reset\"\nat = \"12s\"\n").unwrap_err();
    assert_eq!(e.key(), Some("fault[0].at"), "{e}");
    assert!(e.to_string().contains("measured phase"), "{e}");
    let e = with(
        "[[fault]]\nkind = \"partition\"\nat = \"1s\"\nduration = \"3s\"\n\n[[fault]]\nkind = \"reset\"\nat = \"2s\"\n",
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("fault[1].at"), "{e}");
    assert!(e.to_string().contains("overlaps"), "{e}");
}

#[test]
fn flags_add_faults_and_are_checked_with_the_file() {
    let s = Scenario::from_toml_str(BASE, "t.toml").unwrap();
    let flag = FaultSpec::parse_flag("kind=partition,at=2s,duration=2s").unwrap();
    let s = s.with_faults([flag.clone()]).unwrap();
    assert_eq!(s.faults.len(), 1);
    assert_eq!(s.faults[0], flag);
    let e = s.with_faults([flag]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Override);
    assert!(e.to_string().contains("--fault"), "{e}");
    // A shorter measured phase leaves a fault outside it.
    let s = with("[[fault]]\nkind = \"reset\"\nat = \"8s\"\n").unwrap();
    assert!(s.with_duration(Duration::from_secs(5)).is_err());
}
