use super::*;

fn err(text: &str) -> FaultError {
    FaultSpec::parse_flag(text).unwrap_err()
}

#[test]
fn every_kind_reads_and_prints_back() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[
                ("kind", "latency"),
                ("at", "3s"),
                ("duration", "4s"),
                ("delay", "50ms"),
                ("jitter", "5ms"),
                ("direction", "from-broker"),
            ],
            "latency at=3s duration=4s delay=50ms jitter=5ms direction=from-broker",
        ),
        (
            &[
                ("kind", "bandwidth"),
                ("at", "1s"),
                ("duration", "2s"),
                ("bytes_per_second", "10_000"),
                ("direction", "to-broker"),
            ],
            "bandwidth at=1s duration=2s bytes_per_second=10000 direction=to-broker",
        ),
        (
            &[("kind", "reset"), ("at", "2s"), ("targets", "subscribers")],
            "reset at=2s targets=subscribers",
        ),
        (
            &[("kind", "partition"), ("at", "2s"), ("duration", "2s")],
            "partition at=2s duration=2s",
        ),
        (
            &[
                ("kind", "down"),
                ("at", "1s"),
                ("duration", "500ms"),
                ("targets", "publishers"),
            ],
            "down at=1s duration=500ms targets=publishers",
        ),
        (
            &[
                ("kind", "restart"),
                ("at", "3s"),
                ("duration", "2s"),
                ("stop", "redis-cli -p 7001 shutdown nosave"),
                ("start", "redis-server --port 7001 --daemonize yes"),
            ],
            "restart at=3s duration=2s stop=redis-cli -p 7001 shutdown nosave start=redis-server --port 7001 --daemonize yes",
        ),
    ];
    for (fields, text) in cases {
        let spec = FaultSpec::from_fields(fields.iter().copied()).unwrap();
        assert_eq!(spec.to_string(), text);
        let json = BTreeMap::from(spec.clone());
        assert_eq!(FaultSpec::try_from(json).unwrap(), spec);
    }
    assert_eq!(
        FaultSpec::parse_flag("kind=partition, at=2s, duration=2s")
            .unwrap()
            .to_string(),
        "partition at=2s duration=2s"
    );
}

#[test]
fn errors_name_the_key() {
    assert_eq!(err("at=1s").key.as_deref(), Some("kind"));
    assert_eq!(err("kind=flood,at=1s").key.as_deref(), Some("kind"));
    assert_eq!(err("kind=reset").key.as_deref(), Some("at"));
    assert_eq!(err("kind=partition,at=1s").key.as_deref(), Some("duration"));
    assert_eq!(
        err("kind=reset,at=1s,duration=1s").key.as_deref(),
        Some("duration")
    );
    assert_eq!(
        err("kind=latency,at=1s,duration=1s").key.as_deref(),
        Some("delay")
    );
    assert_eq!(
        err("kind=latency,at=1s,duration=1s,delay=fast")
            .key
            .as_deref(),
        Some("delay")
    );
    assert_eq!(
        err("kind=partition,at=1s,duration=1s,delay=5ms")
            .key
            .as_deref(),
        Some("delay")
    );
    assert_eq!(
        err("kind=latency,at=1s,duration=1s,delay=5ms,direction=up")
            .key
            .as_deref(),
        Some("direction")
    );
    assert_eq!(
        err("kind=bandwidth,at=1s,duration=1s").key.as_deref(),
        Some("bytes_per_second")
    );
    assert_eq!(
        err("kind=bandwidth,at=1s,duration=1s,bytes_per_second=0")
            .key
            .as_deref(),
        Some("bytes_per_second")
    );
    assert_eq!(
        err("kind=reset,at=1s,targets=me").key.as_deref(),
        Some("targets")
    );
    assert_eq!(
        err("kind=reset,at=1s,colour=red").key.as_deref(),
        Some("colour")
    );
    assert_eq!(err("kind=reset,at=1s,at=2s").key.as_deref(), Some("at"));
    assert_eq!(
        err("kind=restart,at=1s,duration=1s,stop=x").key.as_deref(),
        Some("start")
    );
    assert_eq!(
        err("kind=restart,at=1s,duration=1s,targets=publishers")
            .key
            .as_deref(),
        Some("targets")
    );
    assert_eq!(err("kind=reset,at").key, None);
}

#[test]
fn faults_take_turns_inside_the_measured_phase() {
    let f = |t: &str| FaultSpec::parse_flag(t).unwrap();
    let ten = Duration::from_secs(10);
    let ok = [
        f("kind=partition,at=1s,duration=2s"),
        f("kind=reset,at=3s"),
        f("kind=down,at=4s,duration=1s"),
    ];
    assert!(check_all(&ok, ten).is_ok());
    let late = [f("kind=reset,at=10s")];
    assert_eq!(check_all(&late, ten).unwrap_err().0, 0);
    let overlap = [f("kind=partition,at=1s,duration=2s"), f("kind=reset,at=2s")];
    let (i, e) = check_all(&overlap, ten).unwrap_err();
    assert_eq!(i, 1);
    assert!(e.message.contains("overlaps the partition"), "{e}");
}
