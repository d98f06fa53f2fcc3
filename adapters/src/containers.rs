//! Brokers in Docker containers, for users who have a Docker engine (`--containers`).
//!
//! [`spec`] says, for each backend, which official image runs it, which port it serves,
//! how to configure it and which log line means it is ready; [`ContainerSpec::url`] maps
//! the host port Docker assigned to the URL the adapter connects to. These are plain data
//! and always built (and unit-tested). Starting the container (`start`) needs the
//! `containers` feature (testcontainers) and a running Docker engine.

use std::time::Duration;

use crate::kind::BackendKind;

/// Where a container prints its readiness line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How to run one broker in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContainerSpec {
    /// The image, e.g. `apache/kafka`.
    pub image: &'static str,
    /// The tag, e.g. `3.9.0`.
    pub tag: &'static str,
    /// The port the broker serves inside the container.
    pub port: u16,
    /// Arguments given to the image's entrypoint (empty: the image's default command).
    pub args: Vec<String>,
    /// Environment variables. `{host_port}` in a value is replaced by the host port the
    /// container is published on (Kafka must advertise the address clients reach it at).
    pub env: Vec<(&'static str, String)>,
    /// Whether the host port must be chosen before the container starts (because the
    /// configuration mentions it), rather than assigned by Docker.
    pub fixed_host_port: bool,
    /// The log line that says the broker accepts clients, and where it appears.
    pub ready_line: (LogStream, &'static str),
    /// How long to wait for the ready line (image pull not included).
    pub startup_timeout: Duration,
}

impl ContainerSpec {
    /// The environment with `{host_port}` replaced by `host_port`.
    pub fn env_for(&self, host_port: u16) -> Vec<(&'static str, String)> {
        self.env
            .iter()
            .map(|(k, v)| (*k, v.replace("{host_port}", &host_port.to_string())))
            .collect()
    }

    /// The URL the adapter of `kind` connects to when the broker is published on
    /// `host:host_port`.
    pub fn url(kind: BackendKind, host: &str, host_port: u16) -> String {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        match kind {
            BackendKind::Nats | BackendKind::Jetstream => format!("nats://{host}:{host_port}"),
            BackendKind::Rabbitmq => format!("amqp://guest:guest@{host}:{host_port}/%2f"),
            BackendKind::Redis => format!("redis://{host}:{host_port}"),
            BackendKind::Kafka => format!("kafka://{host}:{host_port}"),
            BackendKind::Reference => format!("tcp://{host}:{host_port}"),
            BackendKind::Null => "null:".to_owned(),
        }
    }
}

/// The container that runs `kind`'s broker: the official image of each project. `None`
/// for the reference broker (embedded, no image) and the null backend.
pub fn spec(kind: BackendKind) -> Option<ContainerSpec> {
    let spec = match kind {
        BackendKind::Nats | BackendKind::Jetstream => ContainerSpec {
            image: "nats",
            tag: "2.10",
            port: 4222,
            args: vec!["-js".into()],
            env: Vec::new(),
            fixed_host_port: false,
            ready_line: (LogStream::Stderr, "Server is ready"),
            startup_timeout: Duration::from_secs(60),
        },
        BackendKind::Rabbitmq => ContainerSpec {
            image: "rabbitmq",
            tag: "3.13",
            port: 5672,
            args: Vec::new(),
            env: Vec::new(),
            fixed_host_port: false,
            ready_line: (LogStream::Stdout, "Server startup complete"),
            startup_timeout: Duration::from_secs(120),
        },
        BackendKind::Redis => ContainerSpec {
            image: "redis",
            tag: "7.2",
            port: 6379,
            args: vec![
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
            ],
            env: Vec::new(),
            fixed_host_port: false,
            ready_line: (LogStream::Stdout, "Ready to accept connections"),
            startup_timeout: Duration::from_secs(60),
        },
        BackendKind::Kafka => ContainerSpec {
            image: "apache/kafka",
            tag: "3.9.0",
            port: 9092,
            args: Vec::new(),
            // A single KRaft node that is both broker and controller, advertising the
            // address clients on the host reach it at.
            env: vec![
                ("KAFKA_NODE_ID", "1".into()),
                ("KAFKA_PROCESS_ROLES", "broker,controller".into()),
                (
                    "KAFKA_LISTENERS",
                    "PLAINTEXT://0.0.0.0:9092,CONTROLLER://localhost:9093".into(),
                ),
                (
                    "KAFKA_ADVERTISED_LISTENERS",
                    "PLAINTEXT://127.0.0.1:{host_port}".into(),
                ),
                ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".into()),
                (
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".into(),
                ),
                ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093".into()),
                ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".into()),
                ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1".into()),
                ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".into()),
                ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".into()),
            ],
            fixed_host_port: true,
            ready_line: (LogStream::Stdout, "Kafka Server started"),
            startup_timeout: Duration::from_secs(120),
        },
        BackendKind::Reference | BackendKind::Null => return None,
    };
    Some(spec)
}

#[cfg(feature = "containers")]
pub use running::{RunningBroker, start};

#[cfg(feature = "containers")]
mod running {
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};

    use super::{ContainerSpec, LogStream, spec};
    use crate::error::AdapterError;
    use crate::kind::BackendKind;

    /// A broker container; stopped and removed when dropped.
    pub struct RunningBroker {
        url: String,
        image: String,
        container: ContainerAsync<GenericImage>,
    }

    impl RunningBroker {
        /// The URL to connect the adapter to.
        pub fn url(&self) -> &str {
            &self.url
        }

        /// `image:tag` of the container.
        pub fn image(&self) -> &str {
            &self.image
        }

        /// Docker's id of the container.
        pub fn id(&self) -> &str {
            self.container.id()
        }
    }

    impl std::fmt::Debug for RunningBroker {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RunningBroker")
                .field("url", &self.url)
                .field("image", &self.image)
                .finish_non_exhaustive()
        }
    }

    /// Starts `kind`'s broker in a container (pulling the image if needed) and returns
    /// once its ready line appeared.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for a kind without an
    /// image; [`ErrorKind::Connect`](crate::ErrorKind::Connect) when Docker is not
    /// reachable, the image cannot be pulled, or the broker is not ready in time.
    pub async fn start(kind: BackendKind) -> Result<RunningBroker, AdapterError> {
        let Some(spec) = spec(kind) else {
            return Err(AdapterError::unsupported(format!(
                "the {kind} backend has no container image (the reference broker runs embedded)"
            )));
        };
        let image_name = format!("{}:{}", spec.image, spec.tag);
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            AdapterError::connect(format!(
                "cannot start the {kind} container ({image_name}): {what}: {err}"
            ))
        };
        let wait = match spec.ready_line {
            (LogStream::Stdout, line) => WaitFor::message_on_stdout(line),
            (LogStream::Stderr, line) => WaitFor::message_on_stderr(line),
        };
        let image = GenericImage::new(spec.image, spec.tag)
            .with_exposed_port(spec.port.tcp())
            .with_wait_for(wait);
        let host_port = if spec.fixed_host_port {
            free_port().map_err(|e| fail("no free local port", &e))?
        } else {
            0
        };
        let mut request = image
            .with_startup_timeout(spec.startup_timeout)
            .with_cmd(spec.args.clone());
        for (name, value) in spec.env_for(host_port) {
            request = request.with_env_var(name, value);
        }
        if spec.fixed_host_port {
            request = request.with_mapped_port(host_port, spec.port.tcp());
        }
        let container = request
            .start()
            .await
            .map_err(|e| fail("is a Docker engine running and reachable?", &e))?;
        let port = container
            .get_host_port_ipv4(spec.port.tcp())
            .await
            .map_err(|e| fail("no host port published", &e))?;
        Ok(RunningBroker {
            url: ContainerSpec::url(kind, "127.0.0.1", port),
            image: image_name,
            container,
        })
    }

    fn free_port() -> std::io::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::endpoints;

    #[test]
    fn every_real_broker_has_an_official_image() {
        for kind in BackendKind::ALL {
            let spec = spec(kind);
            match kind {
                BackendKind::Reference | BackendKind::Null => assert!(spec.is_none()),
                _ => {
                    let spec = spec.unwrap();
                    assert!(!spec.image.is_empty() && !spec.tag.is_empty());
                    assert_ne!(spec.tag, "latest", "{kind}: pin the tag");
                    assert_eq!(
                        Some(spec.port),
                        crate::endpoint::default_port(kind),
                        "{kind} serves its standard port inside the container"
                    );
                }
            }
        }
        assert_eq!(spec(BackendKind::Kafka).unwrap().image, "apache/kafka");
        assert!(
            spec(BackendKind::Jetstream)
                .unwrap()
                .args
                .contains(&"-js".to_owned()),
            "JetStream must be enabled"
        );
    }

    #[test]
    fn urls_point_at_the_published_port_and_parse_back() {
        for kind in BackendKind::ALL {
            if kind == BackendKind::Null {
                continue;
            }
            let url = ContainerSpec::url(kind, "127.0.0.1", 32768);
            let e = endpoints(kind, &url).unwrap();
            assert_eq!(
                (e[0].host.as_str(), e[0].port),
                ("127.0.0.1", 32768),
                "{url}"
            );
        }
        assert_eq!(
            ContainerSpec::url(BackendKind::Rabbitmq, "::1", 5),
            "amqp://guest:guest@[::1]:5/%2f"
        );
    }

    #[test]
    fn kafka_advertises_the_host_port_it_is_published_on() {
        let spec = spec(BackendKind::Kafka).unwrap();
        assert!(spec.fixed_host_port);
        let env = spec.env_for(40123);
        let advertised = env
            .iter()
            .find(|(k, _)| *k == "KAFKA_ADVERTISED_LISTENERS")
            .map(|(_, v)| v.as_str());
        assert_eq!(advertised, Some("PLAINTEXT://127.0.0.1:40123"));
        assert!(env.iter().all(|(_, v)| !v.contains("{host_port}")));
        // KRaft needs a node id, roles and a controller quorum.
        for key in [
            "KAFKA_NODE_ID",
            "KAFKA_PROCESS_ROLES",
            "KAFKA_CONTROLLER_QUORUM_VOTERS",
        ] {
            assert!(env.iter().any(|(k, _)| *k == key), "{key}");
        }
    }

    #[test]
    fn readiness_lines_are_the_ones_each_broker_prints() {
        let line = |kind| spec(kind).unwrap().ready_line;
        assert_eq!(
            line(BackendKind::Redis),
            (LogStream::Stdout, "Ready to accept connections")
        );
        assert_eq!(
            line(BackendKind::Nats),
            (LogStream::Stderr, "Server is ready")
        );
        assert_eq!(line(BackendKind::Rabbitmq).1, "Server startup complete");
        assert_eq!(line(BackendKind::Kafka).1, "Kafka Server started");
    }

    #[cfg(feature = "containers")]
    #[tokio::test]
    async fn without_docker_start_says_so() {
        // This machine has no Docker engine; with one, the container starts instead.
        if std::path::Path::new("/var/run/docker.sock").exists() {
            return;
        }
        let err = start(BackendKind::Redis).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Connect);
        assert!(err.to_string().contains("redis:7.2"), "{err}");
    }
}
