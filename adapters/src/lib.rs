//! Backends: one `Backend` abstraction over the reference broker, NATS, JetStream, RabbitMQ, Redis Streams and Kafka.
