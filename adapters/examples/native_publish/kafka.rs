//! Kafka: creates a topic through the admin API and publishes with rdkafka's
//! `FutureProducer`, with the adapter's settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{CONFIRM_TIMEOUT, Error, SETUP_TIMEOUT, Sent, Settings, Tally, timed, windowed};

pub(crate) async fn kafka(
    settings: &Settings,
    name: &str,
    payload: Bytes,
) -> Result<(Tally, Duration), Error> {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    // kafka://host:port[,host:port] or a bare list, as the adapter takes it.
    let bootstrap = settings
        .url
        .split_once("://")
        .map_or(settings.url.as_str(), |(_, rest)| rest)
        .trim_end_matches('/')
        .to_owned();
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", &bootstrap)
        .set("client.id", "native_publish")
        .set("allow.auto.create.topics", "false")
        .set("log.connection.close", "false");
    let admin: AdminClient<DefaultClientContext> = base.create()?;
    let options = AdminOptions::new()
        .request_timeout(Some(SETUP_TIMEOUT))
        .operation_timeout(Some(SETUP_TIMEOUT));
    let topic = NewTopic::new(name, settings.partitions, TopicReplication::Fixed(-1));
    let created = admin.create_topics([&topic], &options).await?;
    for result in created {
        result.map_err(|(topic, code)| {
            format!("kafka at {bootstrap} refused to create topic {topic}: {code}")
        })?;
    }
    // The adapter waits for the partitions' leaders the same way: until metadata shows them.
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let found = tokio::task::block_in_place(|| {
            admin
                .inner()
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .map(|metadata| {
                    metadata.topics().iter().any(|t| {
                        t.error().is_none()
                            && t.partitions().len() == settings.partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
        });
        if matches!(found, Ok(true)) {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "topic {name} shows no partitions with leaders after {SETUP_TIMEOUT:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut producers = Vec::new();
    for _ in 0..settings.producers {
        let producer: FutureProducer = base
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                CONFIRM_TIMEOUT.as_millis().to_string(),
            )
            .set("linger.ms", "1")
            .set("partitioner", "murmur2_random")
            .create()?;
        producers.push(producer);
    }
    let topic: Arc<str> = Arc::from(name);
    let in_flight = settings.in_flight;
    let result = timed(producers, |index, producer: FutureProducer| {
        let (topic, payload, count) = (topic.clone(), payload.clone(), settings.share(index));
        let send = move || {
            let record = FutureRecord::<(), [u8]>::to(&topic).payload(&payload[..]);
            let sent = match producer.send_result(record) {
                Ok(delivery) => Sent::Pending(delivery),
                // librdkafka's queue is full: wait for a report first.
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::error::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => Sent::Full,
                Err(_) => Sent::Failed,
            };
            std::future::ready(sent)
        };
        windowed(count, in_flight, send, |report| matches!(report, Ok(Ok(_))))
    })
    .await;
    let deleted = admin.delete_topics(&[name], &options).await;
    if !matches!(&deleted, Ok(results) if results.iter().all(Result::is_ok)) {
        eprintln!("native_publish: could not delete topic {name}: {deleted:?}");
    }
    result
}
