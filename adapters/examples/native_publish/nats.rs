//! NATS core and JetStream: connecting, the core loop confirmed by round trips, and the
//! JetStream loop with a PubAck per message.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;

use crate::{CONFIRM_TIMEOUT, Error, SETUP_TIMEOUT, Sent, Settings, Tally, timed, windowed};

async fn nats_connect(url: &str) -> Result<async_nats::Client, Error> {
    let connect = async_nats::ConnectOptions::new().connect(url);
    Ok(tokio::time::timeout(SETUP_TIMEOUT, connect)
        .await
        .map_err(|_| format!("connecting to nats at {url} timed out"))?
        .map_err(|e| format!("cannot connect to nats at {url}: {e}"))?)
}

pub(crate) async fn nats_core(
    settings: &Settings,
    name: &str,
    payload: Bytes,
) -> Result<(Tally, Duration), Error> {
    let mut clients = Vec::new();
    for _ in 0..settings.producers {
        clients.push(nats_connect(&settings.url).await?);
    }
    let subject = async_nats::Subject::from(name);
    let batch = (settings.in_flight / 2).max(1) as u64;
    timed(clients, |index, client: async_nats::Client| {
        let (subject, payload, count) = (subject.clone(), payload.clone(), settings.share(index));
        async move {
            let mut tally = Tally::default();
            // The round trip confirming the previous batch, and that batch's size.
            let mut flushing: Option<(tokio::task::JoinHandle<bool>, u64)> = None;
            let mut sent = 0;
            while sent < count {
                let this = batch.min(count - sent);
                let mut queued = 0;
                for _ in 0..this {
                    if client
                        .publish(subject.clone(), payload.clone())
                        .await
                        .is_ok()
                    {
                        queued += 1;
                    } else {
                        tally.failed += 1;
                    }
                }
                sent += this;
                if let Some((flush, size)) = flushing.take() {
                    settle(&mut tally, flush.await.unwrap_or(false), size);
                }
                let flush = tokio::spawn(round_trip(client.clone(), index));
                flushing = Some((flush, queued));
            }
            if let Some((flush, size)) = flushing.take() {
                settle(&mut tally, flush.await.unwrap_or(false), size);
            }
            tally
        }
    })
    .await
}

/// A round trip through the server on `client`'s connection: a request to a subject
/// nobody subscribes to comes back as "no responders" after everything sent before it
/// was processed. `true` when it came back.
async fn round_trip(client: async_nats::Client, producer: usize) -> bool {
    use async_nats::RequestErrorKind as K;
    let subject = format!("_bb_native.round_trip.{}.{producer}", std::process::id());
    let request = async_nats::Request::new().timeout(Some(CONFIRM_TIMEOUT));
    match client.send_request(subject, request).await {
        Ok(_) => true,
        Err(error) => matches!(error.kind(), K::NoResponders),
    }
}

fn settle(tally: &mut Tally, ok: bool, size: u64) {
    if ok {
        tally.confirmed += size;
    } else {
        tally.failed += size;
    }
}

pub(crate) async fn jetstream(
    settings: &Settings,
    name: &str,
    payload: Bytes,
) -> Result<(Tally, Duration), Error> {
    let admin = jetstream::new(nats_connect(&settings.url).await?);
    let stream = name.replace('.', "_");
    tokio::time::timeout(
        SETUP_TIMEOUT,
        admin.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![name.to_owned()],
            storage: jetstream::stream::StorageType::Memory,
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| format!("creating stream {stream} timed out"))?
    .map_err(|e| format!("cannot create stream {stream} at {}: {e}", settings.url))?;
    let mut contexts = Vec::new();
    for _ in 0..settings.producers {
        let client = nats_connect(&settings.url).await?;
        contexts.push(
            jetstream::context::ContextBuilder::new()
                .max_ack_inflight(settings.in_flight)
                .timeout(CONFIRM_TIMEOUT)
                .build(client),
        );
    }
    let subject = async_nats::Subject::from(name);
    let in_flight = settings.in_flight;
    let result = timed(contexts, |index, js: jetstream::Context| {
        let (subject, payload, count) = (subject.clone(), payload.clone(), settings.share(index));
        let send = move || {
            let (js, subject, payload) = (js.clone(), subject.clone(), payload.clone());
            async move {
                match js.publish(subject, payload).await {
                    Ok(ack) => Sent::Pending(ack.into_future()),
                    Err(_) => Sent::Failed,
                }
            }
        };
        windowed(count, in_flight, send, |ack| ack.is_ok())
    })
    .await;
    match tokio::time::timeout(SETUP_TIMEOUT, admin.delete_stream(&stream)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("native_publish: could not delete stream {stream}: {e}"),
        Err(_) => eprintln!("native_publish: deleting stream {stream} timed out"),
    }
    result
}
