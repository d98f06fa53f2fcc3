//! RabbitMQ: publishes to a fanout exchange on confirm-mode channels through lapin.

use std::time::Duration;

use bytes::Bytes;

use crate::{CONFIRM_TIMEOUT, Error, SETUP_TIMEOUT, Sent, Settings, Tally, timed, windowed};

pub(crate) async fn rabbitmq(
    settings: &Settings,
    name: &str,
    payload: Bytes,
) -> Result<(Tally, Duration), Error> {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    };
    use lapin::types::{FieldTable, ShortString};
    use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};

    let connect = |role: &'static str| {
        let url = settings.url.clone();
        async move {
            let properties = ConnectionProperties::default()
                .with_connection_name(format!("native_publish {role}").into());
            tokio::time::timeout(SETUP_TIMEOUT, Connection::connect(&url, properties))
                .await
                .map_err(|_| format!("connecting to rabbitmq at {url} timed out"))?
                .map_err(|e| -> Error {
                    format!("cannot connect to rabbitmq at {url}: {e}").into()
                })
        }
    };
    let admin = connect("admin").await?;
    let admin_channel = admin.create_channel().await?;
    admin_channel
        .exchange_declare(
            ShortString::from(name),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot declare exchange {name}: {e}"))?;
    let mut channels = Vec::new();
    for _ in 0..settings.producers {
        let connection = connect("producer").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channels.push((connection, channel));
    }
    let exchange = ShortString::from(name);
    let in_flight = settings.in_flight;
    let result = timed(
        channels
            .iter()
            .map(|(_, channel)| channel.clone())
            .collect(),
        |index, channel: lapin::Channel| {
            let (exchange, payload, count) =
                (exchange.clone(), payload.clone(), settings.share(index));
            let send = move || {
                let (channel, exchange, payload) =
                    (channel.clone(), exchange.clone(), payload.clone());
                async move {
                    let publish = channel.basic_publish(
                        exchange,
                        ShortString::from(""),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default(),
                    );
                    match publish.await {
                        Ok(confirm) => {
                            Sent::Pending(tokio::time::timeout(CONFIRM_TIMEOUT, confirm))
                        }
                        Err(_) => Sent::Failed,
                    }
                }
            };
            windowed(count, in_flight, send, |confirm| {
                matches!(confirm, Ok(Ok(Confirmation::Ack(_))))
            })
        },
    )
    .await;
    let deleted = admin_channel
        .exchange_delete(ShortString::from(name), ExchangeDeleteOptions::default())
        .await;
    if let Err(e) = deleted {
        eprintln!("native_publish: could not delete exchange {name}: {e}");
    }
    for (connection, _) in channels.iter() {
        let _ = connection.close(200, ShortString::from("done")).await;
    }
    let _ = admin.close(200, ShortString::from("done")).await;
    result
}
