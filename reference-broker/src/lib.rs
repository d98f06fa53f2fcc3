//! The brokerbench reference broker: an in-memory broker for the JSON-lines pub/sub
//! protocol of `PROTOCOL.md`, complete with its extensions (keys, dedup ids, acks with
//! redelivery and dead-lettering, stats).
//!
//! Layers, each in its own module: line framing ([`codec`]) → typed requests
//! ([`request`]) → shared topic state ([`state`]) → per-connection tasks → the server
//! ([`run`]). The codec and request parsing are sans-I/O.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! reference_broker::run(listener, reference_broker::Config::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

pub mod cli;
pub mod codec;
pub mod config;
mod connection;
pub mod outbound;
pub mod reply;
pub mod request;
pub mod server;
pub mod state;

pub use config::Config;
pub use server::run;
