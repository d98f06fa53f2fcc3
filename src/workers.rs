//! How many runtime worker threads a load-generating command gets: `--workers`, else one
//! per core (tokio's own default).
//!
//! Beside a broker on the same machine the best count depends on the workload, so it is
//! a flag and not a rule. Measured on the 2-core development VM with `brokerbench
//! capacity` (issue 16, two searches each): one worker beside a local NATS server
//! published ~10 % more than two (540k vs 478k-498k msgs/s), while two workers took
//! 10-20 % more fan-out 10 deliveries from the reference broker (223k-250k vs 204k-206k
//! msgs/s published), where reading and checking every delivery keeps one worker busy;
//! 1→1 on the reference broker and publishing to Redis were the same either way.

/// The worker threads for a command: `requested` when given (at least one), else one
/// per core this process may use.
pub fn count(requested: Option<u16>) -> usize {
    requested.map_or_else(available_cores, |n| usize::from(n).max(1))
}

/// The logical CPUs this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_the_default_is_one_per_core() {
        assert_eq!(count(Some(3)), 3);
        assert_eq!(count(Some(0)), 1);
        assert_eq!(count(None), available_cores());
        assert!(available_cores() >= 1);
    }
}
