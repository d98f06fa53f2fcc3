//! [`BackendKind`]: which broker a run talks to, its default URL and its environment override.

use std::fmt;
use std::str::FromStr;

use crate::error::AdapterError;

/// A broker brokerbench knows how to drive.
///
/// The name (`Display` / `FromStr`, case-insensitive) is what `--backend` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// brokerbench's own reference broker (JSON lines over TCP).
    Reference,
    /// NATS core (subject subscriptions, queue groups).
    Nats,
    /// NATS JetStream (streams and consumers).
    Jetstream,
    /// RabbitMQ (AMQP 0-9-1).
    Rabbitmq,
    /// Redis Streams (consumer groups).
    Redis,
    /// Apache Kafka.
    Kafka,
    /// In-process backend with no I/O, to measure the load engine itself.
    Null,
}

impl BackendKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [BackendKind; 7] = [
        BackendKind::Reference,
        BackendKind::Nats,
        BackendKind::Jetstream,
        BackendKind::Rabbitmq,
        BackendKind::Redis,
        BackendKind::Kafka,
        BackendKind::Null,
    ];

    /// The lowercase name used on the command line and in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Nats => "nats",
            BackendKind::Jetstream => "jetstream",
            BackendKind::Rabbitmq => "rabbitmq",
            BackendKind::Redis => "redis",
            BackendKind::Kafka => "kafka",
            BackendKind::Null => "null",
        }
    }

    /// The URL used when neither `--url` nor the environment variable names one: the
    /// broker's standard port on the loopback interface.
    pub fn default_url(self) -> &'static str {
        match self {
            BackendKind::Reference => "tcp://127.0.0.1:7000",
            BackendKind::Nats | BackendKind::Jetstream => "nats://127.0.0.1:4222",
            BackendKind::Rabbitmq => "amqp://guest:guest@127.0.0.1:5672/%2f",
            BackendKind::Redis => "redis://127.0.0.1:6379",
            BackendKind::Kafka => "kafka://127.0.0.1:9092",
            BackendKind::Null => "null:",
        }
    }

    /// The environment variable that overrides [`default_url`](Self::default_url)
    /// (`None` for the null backend, which has no endpoint).
    pub fn env_var(self) -> Option<&'static str> {
        match self {
            BackendKind::Reference => Some("BROKERBENCH_REFERENCE_URL"),
            BackendKind::Nats => Some("BROKERBENCH_NATS_URL"),
            BackendKind::Jetstream => Some("BROKERBENCH_JETSTREAM_URL"),
            BackendKind::Rabbitmq => Some("BROKERBENCH_RABBITMQ_URL"),
            BackendKind::Redis => Some("BROKERBENCH_REDIS_URL"),
            BackendKind::Kafka => Some("BROKERBENCH_KAFKA_URL"),
            BackendKind::Null => None,
        }
    }

    /// The URL to use: `explicit` if given, else the environment variable if set and not
    /// empty, else the default URL.
    pub fn resolve_url(self, explicit: Option<&str>) -> String {
        self.resolve_url_with(explicit, |var| std::env::var(var).ok())
    }

    /// [`resolve_url`](Self::resolve_url) with the environment supplied by the caller
    /// (tests, or a CLI that has already read its environment).
    pub fn resolve_url_with(
        self,
        explicit: Option<&str>,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> String {
        if let Some(url) = explicit {
            return url.to_owned();
        }
        self.env_var()
            .and_then(env)
            .filter(|url| !url.trim().is_empty())
            .unwrap_or_else(|| self.default_url().to_owned())
    }

    /// Whether this build has the kind's adapter (its cargo feature was on).
    /// [`connect`](crate::connect) returns an
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error for the others.
    pub fn is_implemented(self) -> bool {
        match self {
            BackendKind::Reference | BackendKind::Null => true,
            BackendKind::Nats => cfg!(feature = "nats"),
            BackendKind::Jetstream => cfg!(feature = "jetstream"),
            BackendKind::Rabbitmq => cfg!(feature = "rabbitmq"),
            BackendKind::Redis => cfg!(feature = "redis"),
            BackendKind::Kafka => cfg!(feature = "kafka"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = AdapterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        BackendKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| {
                let names: Vec<&str> = BackendKind::ALL.iter().map(|k| k.as_str()).collect();
                AdapterError::invalid_input(format!(
                    "unknown backend '{wanted}' (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn names_round_trip_case_insensitively() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.to_string().parse::<BackendKind>().unwrap(), kind);
            assert_eq!(
                kind.as_str().to_uppercase().parse::<BackendKind>().unwrap(),
                kind
            );
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = "pulsar".parse::<BackendKind>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "unknown backend 'pulsar' (expected one of: reference, nats, jetstream, rabbitmq, redis, kafka, null)"
        );
    }

    #[test]
    fn default_urls_and_env_vars() {
        let table = [
            (
                BackendKind::Reference,
                "tcp://127.0.0.1:7000",
                "BROKERBENCH_REFERENCE_URL",
            ),
            (
                BackendKind::Nats,
                "nats://127.0.0.1:4222",
                "BROKERBENCH_NATS_URL",
            ),
            (
                BackendKind::Jetstream,
                "nats://127.0.0.1:4222",
                "BROKERBENCH_JETSTREAM_URL",
            ),
            (
                BackendKind::Rabbitmq,
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "BROKERBENCH_RABBITMQ_URL",
            ),
            (
                BackendKind::Redis,
                "redis://127.0.0.1:6379",
                "BROKERBENCH_REDIS_URL",
            ),
            (
                BackendKind::Kafka,
                "kafka://127.0.0.1:9092",
                "BROKERBENCH_KAFKA_URL",
            ),
        ];
        for (kind, url, var) in table {
            assert_eq!(kind.default_url(), url);
            assert_eq!(kind.env_var(), Some(var));
        }
        assert_eq!(BackendKind::Null.env_var(), None);
    }

    #[test]
    fn explicit_beats_env_beats_default() {
        let env =
            |var: &str| (var == "BROKERBENCH_NATS_URL").then(|| "nats://10.0.0.9:4222".to_owned());
        assert_eq!(
            BackendKind::Nats.resolve_url_with(Some("nats://h:1"), env),
            "nats://h:1"
        );
        assert_eq!(
            BackendKind::Nats.resolve_url_with(None, env),
            "nats://10.0.0.9:4222"
        );
        assert_eq!(
            BackendKind::Redis.resolve_url_with(None, env),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            BackendKind::Kafka.resolve_url_with(None, |_| Some("  ".into())),
            "kafka://127.0.0.1:9092"
        );
    }

    #[test]
    fn built_kinds_follow_the_features() {
        assert!(BackendKind::Reference.is_implemented());
        assert!(BackendKind::Null.is_implemented());
        assert_eq!(BackendKind::Nats.is_implemented(), cfg!(feature = "nats"));
        assert_eq!(
            BackendKind::Jetstream.is_implemented(),
            cfg!(feature = "jetstream")
        );
        assert_eq!(
            BackendKind::Rabbitmq.is_implemented(),
            cfg!(feature = "rabbitmq")
        );
        assert_eq!(BackendKind::Redis.is_implemented(), cfg!(feature = "redis"));
        assert_eq!(BackendKind::Kafka.is_implemented(), cfg!(feature = "kafka"));
    }
}
