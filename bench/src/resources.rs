//! CPU and memory of a broker process on this machine, read from `/proc`.

use std::time::Instant;

/// Kernel clock ticks per second for `/proc/<pid>/stat` times. `USER_HZ` is 100 on every
/// Linux architecture brokerbench runs on.
const USER_HZ: f64 = 100.0;

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceSample {
    /// CPU used since the previous sample, in % of one core (200 = two cores busy).
    pub cpu_percent: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

/// Samples one process. The first [`sample`](Self::sample) reports CPU since the
/// sampler was made.
#[derive(Debug)]
pub struct ProcessSampler {
    pid: u32,
    last_ticks: u64,
    last_at: Instant,
}

impl ProcessSampler {
    /// A sampler for `pid`; `None` when the process cannot be read.
    pub fn new(pid: u32) -> Option<Self> {
        let ticks = cpu_ticks(pid)?;
        Some(Self {
            pid,
            last_ticks: ticks,
            last_at: Instant::now(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reads CPU since the last sample and current RSS; `None` once the process is gone.
    pub fn sample(&mut self) -> Option<ResourceSample> {
        let ticks = cpu_ticks(self.pid)?;
        let rss_bytes = rss_bytes(self.pid)?;
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_at).as_secs_f64();
        let cpu_percent = if elapsed > 0.0 {
            (ticks.saturating_sub(self.last_ticks)) as f64 / USER_HZ / elapsed * 100.0
        } else {
            0.0
        };
        self.last_ticks = ticks;
        self.last_at = now;
        Some(ResourceSample {
            cpu_percent,
            rss_bytes,
        })
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let mut sampler = ProcessSampler::new(std::process::id()).unwrap();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let sample = sampler.sample().unwrap();
        assert!(sample.rss_bytes > 1024 * 1024, "{sample:?} {x}");
        assert!(sample.cpu_percent >= 0.0);
    }

    #[test]
    fn missing_process_is_none() {
        assert!(ProcessSampler::new(u32::MAX - 1).is_none());
    }
}
