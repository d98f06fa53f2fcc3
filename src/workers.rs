//! How many runtime worker threads a load-generating command gets.
//!
//! A broker on this machine (the embedded reference broker, a container, a URL naming a
//! loopback address) runs on the same cores as the harness. With a worker per core on
//! both sides, twice as many busy threads as cores take turns: every hand-over between
//! the harness's tasks risks a thread switch, and the broker loses the core it was
//! using. Measured on a 2-core machine against the reference broker (issue 16): one
//! worker sustained 480k msgs/s 1→1 where two fell behind at 440k-450k, and fan-out 10
//! reached 2.46 M deliveries/s against 2.0 M. So the harness takes half the cores when
//! the broker shares them, and all of them otherwise (a remote broker, the null backend).
//! `--workers` overrides the choice.

use brokerbench_adapters::{BackendKind, endpoint};

/// Where the broker of a run is, as far as the worker count cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerPlace {
    /// On this machine: it competes with the harness for the same cores.
    Local,
    /// Elsewhere, or no broker at all (the null backend).
    Elsewhere,
}

impl BrokerPlace {
    /// Where `kind`'s broker will be for a command given `url` (the flag), `env_url` (the
    /// backend's environment variable) and `containers`.
    pub fn of(
        kind: BackendKind,
        url: Option<&str>,
        env_url: Option<String>,
        containers: bool,
    ) -> BrokerPlace {
        if kind == BackendKind::Null {
            return BrokerPlace::Elsewhere;
        }
        let configured = url.is_some() || env_url.is_some();
        if containers || (kind == BackendKind::Reference && !configured) {
            // A container on this Docker engine, or the embedded broker (a child process).
            return BrokerPlace::Local;
        }
        let url = kind.resolve_url_with(url, |_| env_url);
        match endpoint::endpoints(kind, &url) {
            Ok(endpoints) if endpoints.iter().any(endpoint::Endpoint::is_loopback) => {
                BrokerPlace::Local
            }
            _ => BrokerPlace::Elsewhere,
        }
    }
}

/// The worker threads for a command: `requested` when given, else half of `cores`
/// (at least one) beside a local broker, else all of them.
pub fn count(requested: Option<usize>, place: BrokerPlace, cores: usize) -> usize {
    if let Some(n) = requested {
        return n.max(1);
    }
    let cores = cores.max(1);
    match place {
        BrokerPlace::Local => (cores / 2).max(1),
        BrokerPlace::Elsewhere => cores,
    }
}

/// The logical CPUs this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_broker_and_loopback_urls_are_local() {
        let local = |kind, url: Option<&str>, env: Option<&str>| {
            BrokerPlace::of(kind, url, env.map(str::to_owned), false)
        };
        assert_eq!(
            local(BackendKind::Reference, None, None),
            BrokerPlace::Local
        );
        assert_eq!(
            local(BackendKind::Reference, Some("tcp://127.0.0.1:7000"), None),
            BrokerPlace::Local
        );
        assert_eq!(
            local(
                BackendKind::Reference,
                Some("tcp://broker.example:7000"),
                None
            ),
            BrokerPlace::Elsewhere
        );
        assert_eq!(
            local(BackendKind::Reference, None, Some("tcp://10.1.2.3:7000")),
            BrokerPlace::Elsewhere
        );
        // Without a URL, the usual localhost address.
        assert_eq!(local(BackendKind::Redis, None, None), BrokerPlace::Local);
        assert_eq!(
            local(
                BackendKind::Nats,
                Some("nats://a.example:4222,localhost:4223"),
                None
            ),
            BrokerPlace::Local
        );
        assert_eq!(
            local(
                BackendKind::Kafka,
                Some("k1.example:9092,k2.example:9092"),
                None
            ),
            BrokerPlace::Elsewhere
        );
        assert_eq!(local(BackendKind::Null, None, None), BrokerPlace::Elsewhere);
        // A container runs on this machine's Docker engine.
        assert_eq!(
            BrokerPlace::of(BackendKind::Kafka, None, None, true),
            BrokerPlace::Local
        );
    }

    #[test]
    fn half_the_cores_beside_a_local_broker() {
        assert_eq!(count(None, BrokerPlace::Local, 2), 1);
        assert_eq!(count(None, BrokerPlace::Local, 1), 1);
        assert_eq!(count(None, BrokerPlace::Local, 16), 8);
        assert_eq!(count(None, BrokerPlace::Elsewhere, 2), 2);
        assert_eq!(count(Some(3), BrokerPlace::Local, 2), 3);
        assert_eq!(count(Some(0), BrokerPlace::Elsewhere, 8), 1);
    }
}
