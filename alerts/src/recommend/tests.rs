use super::*;

#[test]
fn stats_interpolate() {
    let s = Stats::of(&[1.0, 2.0, 3.0, 4.0, 5.0]).expect("stats");
    assert_eq!((s.min, s.median, s.max), (1.0, 3.0, 5.0));
    assert_eq!((s.q1, s.q3), (2.0, 4.0));
    assert!((s.p95 - 4.8).abs() < 1e-9, "{}", s.p95);
    assert!((s.p5 - 1.2).abs() < 1e-9, "{}", s.p5);
    assert_eq!(Stats::of(&[]), None);
}

fn options(sla: &[(&str, f64)]) -> RecommendOptions {
    RecommendOptions {
        sla: sla.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        ..RecommendOptions::default()
    }
}

#[test]
fn upper_bound_method_and_sla_cap() {
    let values = [0.001, 0.0011, 0.0012, 0.0013, 0.002];
    let stats = Stats::of(&values).expect("stats");
    let signal = Signal::parse("e2e.p99").expect("signal");
    let p = propose(signal, stats.clone(), &values, &options(&[]));
    let w = p.rule.warning.expect("warning");
    let c = p.rule.critical.expect("critical");
    // p95 = 1.3ms + 0.8 x 0.7ms = 1.86ms, x1.2 = 2.232ms, printed as 2.23ms.
    assert!((w - 0.00223).abs() < 1e-9, "{w}");
    // max 2ms x 1.4 = 2.8ms beats median 1.2ms + 3 x 0.2ms = 1.8ms.
    assert!((c - 0.0028).abs() < 1e-9, "{c}");
    assert!(
        p.critical_basis.contains("max 2ms x 1.40 = 2.8ms"),
        "{}",
        p.critical_basis
    );

    let capped = propose(signal, stats, &values, &options(&[("e2e.p99", 0.002)]));
    assert_eq!(capped.rule.critical, Some(0.002));
    assert_eq!(
        capped.rule.warning,
        Some(0.002),
        "warning stays <= critical"
    );
    assert!(
        capped.critical_basis.starts_with("SLA 2ms"),
        "{}",
        capped.critical_basis
    );
}

#[test]
fn availability_has_floors_and_lower_bounds() {
    let values = [1.0; 5];
    let stats = Stats::of(&values).expect("stats");
    let signal = Signal::parse("availability").expect("signal");
    let p = propose(signal, stats.clone(), &values, &options(&[]));
    assert_eq!(p.rule.direction, Direction::Lower);
    assert!((p.rule.warning.expect("w") - 0.9999).abs() < 1e-12);
    assert!((p.rule.critical.expect("c") - 0.999).abs() < 1e-12);
    // An SLA stricter than the history's critical raises critical (lower bound).
    let sla = propose(
        signal,
        stats,
        &values,
        &options(&[("delivery.availability", 0.99995)]),
    );
    assert_eq!(sla.rule.critical, Some(0.99995));
    assert_eq!(sla.rule.warning, Some(0.99995));
}

#[test]
fn throughput_is_a_lower_bound() {
    let values = [200.0, 199.0, 201.0, 200.0, 198.0];
    let stats = Stats::of(&values).expect("stats");
    let p = propose(Signal::PublishThroughput, stats, &values, &options(&[]));
    let (w, c) = (p.rule.warning.expect("w"), p.rule.critical.expect("c"));
    assert!(c <= w && w < 198.0, "{w} {c}");
}

#[test]
fn sla_entries_parse() {
    assert_eq!(
        parse_sla("e2e.p99=20ms").expect("sla"),
        ("e2e.p99".into(), 0.02)
    );
    let (name, v) = parse_sla("availability=99.9%").expect("sla");
    assert_eq!(name, "delivery.availability");
    assert!((v - 0.999).abs() < 1e-12);
    assert!(parse_sla("e2e.p99").is_err());
    assert!(parse_sla("e2e.p98=1ms").is_err());
    assert!(
        parse_sla("e2e.p99=20")
            .unwrap_err()
            .to_string()
            .contains("needs a unit")
    );
}
