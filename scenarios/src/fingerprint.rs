//! A stable fingerprint of a resolved scenario, so the shards of one run (and a merge of
//! their records) can check they ran the same workload.
//!
//! The fingerprint is SHA-256 over a canonical JSON text of [`Scenario::to_json`]: object
//! keys sorted at every level, no whitespace, numbers as serde_json writes them. It
//! depends on what the scenario *is* once resolved (defaults filled in, `--rate` and
//! `--duration` applied), not on the bytes of its file: comments, key order and spelling
//! (`rate = 1000` or a `schedule` table saying the same) do not change it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::Scenario;

impl Scenario {
    /// `sha256:<64 hex digits>` of the canonical form of the resolved scenario.
    ///
    /// # Errors
    /// Only if an alert table holds a value JSON cannot represent.
    pub fn fingerprint(&self) -> Result<String, serde_json::Error> {
        let mut text = String::new();
        canonical(&self.to_json()?, &mut text)?;
        let digest = Sha256::digest(text.as_bytes());
        let mut out = String::with_capacity(7 + 64);
        out.push_str("sha256:");
        for byte in digest {
            out.push_str(&format!("{byte:02x}"));
        }
        Ok(out)
    }
}

/// Writes `value` as JSON with every object's keys in sorted order.
fn canonical(value: &Value, out: &mut String) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key)?);
                out.push(':');
                canonical(&map[key], out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::builtin;
    use crate::model::Scenario;

    #[test]
    fn depends_on_the_resolved_scenario_not_the_file_text() {
        let a = builtin::get("group-chat").unwrap();
        let hash = a.fingerprint().unwrap();
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{hash}"
        );
        assert_eq!(hash, a.clone().fingerprint().unwrap());
        // The same scenario written differently: comments gone, keys reordered.
        let text = r#"
            description = "Group chat: 20 rooms of 50 members, 1k msgs/s fanned out to 50k deliveries/s"
            name = "group-chat"
            drain = "2s"
            duration = "6s"
            warmup = "2000ms"
            [[workload]]
            rate = 1000
            size = { distribution = "uniform", min = 100, max = 300 }
            delivery = "all"
            subscribers_per_topic = 50
            producers_per_topic = 5
            topics = 20
            name = "room"
            [[alerts]]
            name = "end-to-end latency under fan-out"
            signal = "e2e.p99"
            direction = "upper"
            warning = "10ms"
            critical = "50ms"
        "#;
        let b = Scenario::from_toml_str(text, "rewritten.toml").unwrap();
        assert_eq!(b.fingerprint().unwrap(), hash);
        // A different rate or duration is a different scenario.
        let faster = a.clone().with_rate(2000.0).unwrap();
        assert_ne!(faster.fingerprint().unwrap(), hash);
        let longer = a.with_duration(Duration::from_secs(7)).unwrap();
        assert_ne!(longer.fingerprint().unwrap(), hash);
    }
}
