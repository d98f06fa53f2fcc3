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

/// The process listening on TCP `port` on this machine (any local address, IPv4 or IPv6):
/// the socket's inode from `/proc/net/tcp{,6}`, then the process holding a descriptor to
/// it. `None` when nothing listens there, or the owner's `/proc/<pid>/fd` is not readable
/// (another user's process, without root).
pub fn listening_pid(port: u16) -> Option<u32> {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return None;
    }
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        })
    })
}

/// Inodes of the sockets in state LISTEN on `port`.
fn listening_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                if let Ok(inode) = inode.parse::<u64>() {
                    inodes.push(inode);
                }
            }
        }
    }
    inodes
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
    fn finds_this_process_by_its_listening_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pid(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(listening_pid(port), None);
    }

    #[test]
    fn missing_process_is_none() {
        assert!(ProcessSampler::new(u32::MAX - 1).is_none());
    }
}
