//! The latency mode: open loop, paced publisher threads with blocking sockets, one
//! `poll(2)` receiver thread; latency from the intended send time.
#![allow(unsafe_code)] // poll(2) through libc, commented at the call.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use memchr::memmem;

use crate::figures::{group, new_histogram, percentiles, record};
use crate::host::fine_timer_slack;
use crate::wire::{split_lines, strip_cr, subscribe_line, topic_prefix};
use crate::{
    ACK_BUF_BYTES, Args, DRAIN_TIMEOUT, Delivery, HIST_MAX_NS, IO_TIMEOUT, MAX_PACED_BATCH,
    MAX_REPLY_BYTES, MAX_SLEEP_LATENESS_NS, POLL_INTERVAL, READ_BUF_BYTES, Result, SPIN_MARGIN_NS,
    SUCCESS,
};

/// Waits for due times with `thread::sleep` woken early by the lateness it has learnt
/// (an average of how late past sleeps woke: tens of µs in a VM), then spins to the exact
/// time, so the send delay measures the broker's backpressure rather than timer wake-ups.
struct Pacer {
    lateness_ns: u64,
}

impl Pacer {
    fn new() -> Pacer {
        fine_timer_slack();
        Pacer { lateness_ns: 0 }
    }

    fn wait_until(&mut self, schedule: &Schedule, due: u64) {
        let now = schedule.now_ns();
        let ahead = self.lateness_ns + SPIN_MARGIN_NS;
        if due > now + ahead {
            let target = due - ahead;
            std::thread::sleep(Duration::from_nanos(target - now));
            let late = schedule
                .now_ns()
                .saturating_sub(target)
                .min(MAX_SLEEP_LATENESS_NS);
            self.lateness_ns = (self.lateness_ns * 7 + late) / 8;
        } else {
            // Too close to sleep: forget a little, so that a few very late wake-ups cannot
            // keep the pacer spinning from then on.
            self.lateness_ns -= self.lateness_ns / 16;
        }
        while schedule.now_ns() < due {
            std::hint::spin_loop();
        }
    }
}

/// When each message of one publisher is due: `start + offset + i * interval`, in ns
/// since `base`.
#[derive(Clone, Copy)]
struct Schedule {
    base: Instant,
    start_ns: u64,
    offset_ns: f64,
    interval_ns: f64,
}

impl Schedule {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn intended(&self, i: u64) -> u64 {
        self.start_ns + (self.offset_ns + i as f64 * self.interval_ns) as u64
    }
}

/// The measured window, in ns since the run's base instant: `[from, to)`.
#[derive(Clone, Copy)]
struct Window {
    from: u64,
    to: u64,
}

impl Window {
    fn contains(&self, ns: u64) -> bool {
        (self.from..self.to).contains(&ns)
    }
}

fn std_connect(addr: SocketAddr) -> Result<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

fn std_subscribe(stream: &mut std::net::TcpStream, topic: &str) -> Result<()> {
    stream.write_all(&subscribe_line(topic))?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        if stream.read(&mut byte)? == 0 {
            return Err("the broker closed the connection".into());
        }
        reply.push(byte[0]);
        if reply.len() > MAX_REPLY_BYTES {
            return Err("reply line too long".into());
        }
    }
    if strip_cr(&reply[..reply.len() - 1]) != SUCCESS {
        return Err(format!("subscribe {topic}: {}", String::from_utf8_lossy(&reply)).into());
    }
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

struct PacedOutcome {
    sent: u64,
    send_delay: Histogram<u64>,
}

/// Sends `count` messages on `schedule`; each `msg` is `<intended ns>:<actual ns>:` padded
/// to `size` bytes.
fn paced_publisher(
    mut stream: std::net::TcpStream,
    schedule: Schedule,
    window: Window,
    count: u64,
    topic: &str,
    args: &Args,
) -> Result<PacedOutcome> {
    let mut pacer = Pacer::new();
    let mut send_delay = new_histogram()?;
    let pad = args.size.saturating_sub(42);
    let mut buf = Vec::new();
    let mut i = 0;
    while i < count {
        let due = schedule.intended(i);
        pacer.wait_until(&schedule, due);
        let now = schedule.now_ns();
        buf.clear();
        let mut batch = 0;
        while i < count && batch < MAX_PACED_BATCH {
            let intended = schedule.intended(i);
            if intended > now {
                break;
            }
            write!(
                buf,
                "{{\"command\":\"send\",\"topic\":\"{topic}\",\"msg\":\"{intended:020}:{now:020}:"
            )?;
            buf.resize(buf.len() + pad, b'x');
            writeln!(buf, "\",\"delivery\":\"{}\"}}", args.delivery.as_str())?;
            if window.contains(intended) {
                record(&mut send_delay, now - intended);
            }
            i += 1;
            batch += 1;
        }
        stream.write_all(&buf)?;
    }
    Ok(PacedOutcome {
        sent: i,
        send_delay,
    })
}

/// One socket the receiver thread reads.
struct Inbound {
    stream: std::net::TcpStream,
    source: Source,
    buf: Vec<u8>,
    filled: usize,
}

#[derive(Clone, Copy)]
enum Source {
    /// Subscriber `j`: pushes whose `msg` starts with the two timestamps.
    Pushes(usize),
    /// Publisher `p`: reply k answers message k, due at `schedules[p].intended(k)`, so
    /// publish-ack latency needs no shared state.
    Replies(usize),
}

/// What the receiver thread measured.
struct Received {
    end_to_end: Histogram<u64>,
    uncorrected: Histogram<u64>,
    ack_latency: Histogram<u64>,
    clamped: u64,
    unparsable: u64,
    failed_replies: u64,
}

/// Reads every subscriber and every publisher's replies on one thread, waiting in
/// `poll(2)`: a push and its publisher's reply that arrive together cost one wake-up, and
/// the driver keeps to P + 1 threads however many sockets there are.
fn receiver(
    mut sockets: Vec<Inbound>,
    schedules: &[Schedule],
    window: Window,
    received: &[AtomicU64],
    answered: &[AtomicU64],
    stop: &AtomicBool,
) -> Result<Received> {
    use std::os::fd::AsRawFd as _;
    let finder = memmem::Finder::new(b"\"msg\":\"");
    let mut out = Received {
        end_to_end: new_histogram()?,
        uncorrected: new_histogram()?,
        ack_latency: new_histogram()?,
        clamped: 0,
        unparsable: 0,
        failed_replies: 0,
    };
    let mut replies_seen = vec![0u64; answered.len()];
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Acquire) {
        // SAFETY: `fds` is an exclusively borrowed array of `fds.len()` initialised pollfd
        // structs whose descriptors stay open (owned by `sockets`) during the call.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                POLL_INTERVAL.as_millis() as libc::c_int,
            )
        };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for (fd, socket) in fds.iter_mut().zip(&mut sockets) {
            if fd.revents == 0 {
                continue;
            }
            fd.revents = 0;
            if socket.filled == socket.buf.len() {
                return Err("a line longer than the read buffer".into());
            }
            // Readable (or hung up): this read returns at once.
            let n = match socket.stream.read(&mut socket.buf[socket.filled..]) {
                Ok(0) => return Err("the broker closed a connection".into()),
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let now = schedules[0].now_ns();
            socket.filled += n;
            match socket.source {
                Source::Pushes(j) => {
                    let mut lines = 0;
                    socket.filled = split_lines(&mut socket.buf, socket.filled, n, |line| {
                        lines += 1;
                        let stamps = finder.find(line).and_then(|at| {
                            let msg = line.get(at + 7..at + 7 + 41)?;
                            Some((parse_stamp(&msg[..20])?, parse_stamp(&msg[21..41])?))
                        });
                        let Some((intended, actual)) = stamps else {
                            out.unparsable += 1;
                            return;
                        };
                        if window.contains(intended) {
                            let latency = now.saturating_sub(intended);
                            out.clamped += u64::from(record(&mut out.end_to_end, latency));
                            record(&mut out.uncorrected, now.saturating_sub(actual));
                        }
                    });
                    received[j].fetch_add(lines, Ordering::Release);
                }
                Source::Replies(p) => {
                    let seen = &mut replies_seen[p];
                    let before = *seen;
                    socket.filled = split_lines(&mut socket.buf, socket.filled, n, |line| {
                        if strip_cr(line) != SUCCESS {
                            out.failed_replies += 1;
                        }
                        let intended = schedules[p].intended(*seen);
                        if window.contains(intended) {
                            record(&mut out.ack_latency, now.saturating_sub(intended));
                        }
                        *seen += 1;
                    });
                    answered[p].fetch_add(*seen - before, Ordering::Release);
                }
            }
        }
    }
    Ok(out)
}

/// Parses exactly 20 ASCII digits.
fn parse_stamp(digits: &[u8]) -> Option<u64> {
    if digits.len() != 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub(crate) fn latency(args: &Args, addr: SocketAddr, label: &str) -> Result<bool> {
    if args.publishers == 0 || args.topics == 0 || args.subscribers == 0 || args.rate == 0 {
        return Err("--publishers, --subscribers, --topics and --rate must be at least 1".into());
    }
    let prefix = topic_prefix();
    let topics: Vec<String> = (0..args.topics).map(|t| format!("{prefix}{t}")).collect();
    let mut sockets = Vec::new();
    for j in 0..args.subscribers {
        let mut stream = std_connect(addr)?;
        std_subscribe(&mut stream, &topics[j % args.topics])?;
        sockets.push(Inbound {
            stream,
            source: Source::Pushes(j),
            buf: vec![0u8; READ_BUF_BYTES],
            filled: 0,
        });
    }
    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let stream = std_connect(addr)?;
        sockets.push(Inbound {
            stream: stream.try_clone()?,
            source: Source::Replies(p),
            buf: vec![0u8; ACK_BUF_BYTES],
            filled: 0,
        });
        publishers.push(stream);
    }

    let base = Instant::now();
    let start_ns = 200_000_000; // time for every thread to start before the first message
    let warmup_ns = args.warmup.as_nanos() as u64;
    let duration_ns = args.duration.as_nanos() as u64;
    let window = Window {
        from: start_ns + warmup_ns,
        to: start_ns + warmup_ns + duration_ns,
    };
    let rate = args.rate as f64;
    let interval_ns = 1e9 * args.publishers as f64 / rate;
    let per_publisher = ((warmup_ns + duration_ns) as f64 / interval_ns).floor() as u64;
    // Publisher p is shifted by p/rate, so together they send evenly spaced messages.
    let schedules: Vec<Schedule> = (0..args.publishers)
        .map(|p| Schedule {
            base,
            start_ns,
            offset_ns: 1e9 * p as f64 / rate,
            interval_ns,
        })
        .collect();
    let stop = AtomicBool::new(false);
    let received: Vec<AtomicU64> = (0..args.subscribers).map(|_| AtomicU64::new(0)).collect();
    let answered: Vec<AtomicU64> = (0..args.publishers).map(|_| AtomicU64::new(0)).collect();

    let (paced, measured) = std::thread::scope(|scope| -> Result<_> {
        let (schedules, received, answered, stop) = (&schedules, &received, &answered, &stop);
        let receiver =
            scope.spawn(move || receiver(sockets, schedules, window, received, answered, stop));
        let publisher_threads: Vec<_> = publishers
            .into_iter()
            .enumerate()
            .map(|(p, stream)| {
                let topic = topics[p % args.topics].as_str();
                scope.spawn(move || {
                    paced_publisher(stream, schedules[p], window, per_publisher, topic, args)
                })
            })
            .collect();
        let mut paced = Vec::new();
        for thread in publisher_threads {
            match thread.join() {
                Ok(outcome) => paced.push(outcome),
                Err(_) => paced.push(Err("a publisher thread panicked".into())),
            }
        }
        // Deliveries expected per topic, from what was actually sent.
        let mut expected_on_topic = vec![0u64; args.topics];
        let mut subscribers_on_topic = vec![0u64; args.topics];
        for j in 0..args.subscribers {
            subscribers_on_topic[j % args.topics] += 1;
        }
        for (p, outcome) in paced.iter().enumerate() {
            let sent = outcome.as_ref().map(|o| o.sent).unwrap_or(0);
            let subs = subscribers_on_topic[p % args.topics];
            expected_on_topic[p % args.topics] += match args.delivery {
                Delivery::All => sent * subs,
                Delivery::One if subs > 0 => sent,
                Delivery::One => 0,
            };
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let mut got_on_topic = vec![0u64; args.topics];
            for (j, r) in received.iter().enumerate() {
                got_on_topic[j % args.topics] += r.load(Ordering::Acquire);
            }
            let delivered = got_on_topic
                .iter()
                .zip(&expected_on_topic)
                .all(|(got, expected)| got >= expected);
            let all_answered = paced
                .iter()
                .zip(answered.iter())
                .all(|(o, a)| a.load(Ordering::Acquire) >= o.as_ref().map(|o| o.sent).unwrap_or(0));
            if (delivered && all_answered) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Release);
        let measured = receiver
            .join()
            .map_err(|_| "the receiver thread panicked")??;
        let paced = paced.into_iter().collect::<Result<Vec<_>>>()?;
        Ok((paced, (measured, expected_on_topic.iter().sum::<u64>())))
    })?;
    let (measured, expected) = measured;

    let mut send_delay = new_histogram()?;
    for o in &paced {
        send_delay.add(&o.send_delay)?;
    }
    let sent: u64 = paced.iter().map(|o| o.sent).sum();
    let replies: u64 = answered.iter().map(|a| a.load(Ordering::Acquire)).sum();
    let received_total: u64 = received.iter().map(|r| r.load(Ordering::Acquire)).sum();
    let lost = expected.saturating_sub(received_total);

    println!("== load latency ==");
    println!("broker            {label}");
    println!(
        "workload          open loop {} msgs/s over {} publisher(s), {} subscriber(s), {} topic(s), delivery {}, msg {} B",
        group(args.rate),
        args.publishers,
        args.subscribers,
        args.topics,
        args.delivery.as_str(),
        args.size.max(42)
    );
    println!(
        "warm-up/measured  {:?} / {:?} (by intended send time)",
        args.warmup, args.duration
    );
    println!(
        "messages          {} sent, {} answered ({} failed), {} deliveries expected, {} received, {} lost, {} unparsable",
        group(sent),
        group(replies),
        group(measured.failed_replies),
        group(expected),
        group(received_total),
        group(lost),
        group(measured.unparsable)
    );
    println!("end-to-end        {}", percentiles(&measured.end_to_end));
    println!("  uncorrected     {}", percentiles(&measured.uncorrected));
    println!("  send delay      {}", percentiles(&send_delay));
    println!("publish ack       {}", percentiles(&measured.ack_latency));
    if measured.clamped > 0 {
        println!(
            "clamped           {} end-to-end samples above {} s",
            measured.clamped,
            HIST_MAX_NS / 1_000_000_000
        );
    }
    Ok(lost == 0 && measured.failed_replies == 0 && measured.unparsable == 0 && replies == sent)
}
