use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn urls_keep_everything_but_the_address() {
    let proxy: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    assert_eq!(
        through("amqp://guest:guest@10.0.0.5:5672/%2f?heartbeat=5", proxy),
        "amqp://guest:guest@127.0.0.1:40000/%2f?heartbeat=5"
    );
    assert_eq!(
        through("tcp://127.0.0.1:7000", proxy),
        "tcp://127.0.0.1:40000"
    );
    assert_eq!(
        through("kafka://a:9092,b:9092", proxy),
        "kafka://127.0.0.1:40000"
    );
    assert_eq!(
        through("redis://:pw@h/0", proxy),
        "redis://:pw@127.0.0.1:40000/0"
    );
    assert_eq!(through("h:4222", proxy), "127.0.0.1:40000");
}

#[tokio::test]
async fn relays_then_cuts_then_relays_again() {
    // An echo server upstream.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = Proxy::start(upstream_addr.to_string()).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert!(proxy.bytes() >= 8);
    assert_eq!(proxy.cut(), 1);
    // The old connection is dead: a read ends (reset or EOF).
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    assert!(read.is_err() || rest.is_empty());
    // A new one works.
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    again.write_all(b"pong").await.unwrap();
    again.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(proxy.accepted(), 2);
}

/// A Kafka-speaking stand-in for a broker on `listener`: answers a Metadata v0 request
/// by advertising `brokers`, and any other request with its correlation id and `name`.
fn fake_kafka_broker(listener: TcpListener, name: &'static [u8], brokers: Vec<SocketAddr>) {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let brokers = brokers.clone();
            tokio::spawn(async move {
                let mut size = [0u8; 4];
                while s.read_exact(&mut size).await.is_ok() {
                    let mut request = vec![0u8; i32::from_be_bytes(size) as usize];
                    s.read_exact(&mut request).await.unwrap();
                    let (correlation, call) =
                        kafka::Call::of_request(request[..8].try_into().unwrap());
                    let mut response = correlation.to_be_bytes().to_vec();
                    if call.api_key == kafka::METADATA {
                        response.extend_from_slice(&(brokers.len() as i32).to_be_bytes());
                        for (node, broker) in brokers.iter().enumerate() {
                            let host = broker.ip().to_string();
                            response.extend_from_slice(&(node as i32).to_be_bytes());
                            response.extend_from_slice(&(host.len() as i16).to_be_bytes());
                            response.extend_from_slice(host.as_bytes());
                            response.extend_from_slice(&i32::from(broker.port()).to_be_bytes());
                        }
                        response.extend_from_slice(&0i32.to_be_bytes()); // no topics
                    } else {
                        response.extend_from_slice(name);
                    }
                    let mut frame = (response.len() as i32).to_be_bytes().to_vec();
                    frame.extend_from_slice(&response);
                    if s.write_all(&frame).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Sends one request (`api_key` v0, `correlation`, no body) and reads its response.
async fn call(s: &mut TcpStream, api_key: i16, correlation: i32) -> Vec<u8> {
    let mut frame = 8i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&0i16.to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    s.write_all(&frame).await.unwrap();
    let mut size = [0u8; 4];
    s.read_exact(&mut size).await.unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn kafka_clients_reach_every_advertised_broker_through_the_proxy() {
    let second_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = second_listener.local_addr().unwrap();
    fake_kafka_broker(second_listener, b"second", Vec::new());
    // The bootstrap broker advertises itself (at its real address) and the second.
    let first_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bootstrap = first_listener.local_addr().unwrap();
    fake_kafka_broker(first_listener, b"first", vec![bootstrap, second]);

    let proxy = Proxy::start_kafka(bootstrap.to_string()).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let metadata = kafka::Call {
        api_key: kafka::METADATA,
        api_version: 0,
    };
    let response = call(&mut client, kafka::METADATA, 41).await;
    assert_eq!(&response[..4], &41i32.to_be_bytes());
    let advertised = kafka::advertised(metadata, &response).unwrap();
    let advertised: Vec<(String, i32)> = advertised.into_iter().map(|b| (b.host, b.port)).collect();
    // The bootstrap broker is the proxy's own address; the second one got a listener.
    assert_eq!(
        advertised[0],
        ("127.0.0.1".into(), i32::from(proxy.addr().port()))
    );
    assert_eq!(advertised[1].0, "127.0.0.1");
    assert_ne!(advertised[1].1, i32::from(second.port()));
    assert_ne!(advertised[1].1, i32::from(proxy.addr().port()));
    // Other responses go through unchanged.
    assert_eq!(
        call(&mut client, 18, 42).await,
        [&42i32.to_be_bytes()[..], b"first"].concat()
    );

    let local_second = SocketAddr::from(([127, 0, 0, 1], advertised[1].1 as u16));
    let mut to_second = TcpStream::connect(local_second).await.unwrap();
    assert_eq!(
        call(&mut to_second, 1, 43).await,
        [&43i32.to_be_bytes()[..], b"second"].concat()
    );
    // Asking again hands out the same listener.
    let again = call(&mut client, kafka::METADATA, 44).await;
    assert_eq!(
        kafka::advertised(metadata, &again).unwrap()[1].port,
        advertised[1].1
    );
    assert_eq!(proxy.accepted(), 2);
    assert!(proxy.bytes() > 0);

    // One cut reaches the connections of both listeners.
    assert_eq!(proxy.cut(), 2);
    for mut cut in [client, to_second] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            cut.read_to_end(&mut rest),
        )
        .await
        .unwrap();
        assert!(read.is_err() || rest.is_empty());
    }
    let mut back = TcpStream::connect(local_second).await.unwrap();
    assert_eq!(
        call(&mut back, 1, 45).await,
        [&45i32.to_be_bytes()[..], b"second"].concat()
    );
}
