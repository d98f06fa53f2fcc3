//! brokerbench's fault injection, a room of its own that depends on nothing else of the
//! workspace.
//!
//! - [`FaultSpec`]: one fault of a run (`kind`, `at`, `duration`, parameters, `targets`),
//!   read from a scenario's `[[fault]]` table or a `--fault 'kind=...,at=...'` flag;
//!   [`check_all`] checks a run's faults together.
//! - [`Proxy`]: the in-process TCP fault proxy in front of a broker: latency (delay,
//!   jitter, direction), bandwidth, reset (RST), partition (black hole), down (cut and
//!   refuse); Kafka-aware, so a Kafka client's connections to every broker go through it.
//! - [`Injector`]: plays a run's faults on its clock through the proxies of the
//!   publishers and of the subscribers, or restarts the broker through a [`Restarter`]
//!   ([`ShellRestarter`] for an external broker's stop and start commands).

mod inject;
mod kafka;
pub mod proxy;
mod shaping;
mod spec;

pub use inject::{
    Injected, Injector, Proxies, RestartStep, RestartWith, Restarter, ShellRestarter,
};
pub use proxy::{Proxy, through};
pub use spec::{Direction, FaultError, FaultKind, FaultSpec, KEYS, Targets, check_all};
