//! Precise wake-ups for the open-loop schedule.
//!
//! tokio's timer has millisecond resolution: at 20,000 msgs/s (one message every 50 µs)
//! it would bunch messages into 1 ms clumps and add up to a millisecond of send delay that
//! the broker never caused. The pacer is one OS thread with a heap of deadlines; it sleeps
//! on a condition variable with a 1 ns timer slack and wakes each waiting producer at its
//! due time. A producer already at or past its due time never waits.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

#[derive(Debug)]
struct Entry {
    due: Instant,
    id: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.id) == (other.due, other.id)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.id).cmp(&(other.due, other.id))
    }
}

#[derive(Debug, Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    next_id: u64,
    stopped: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// A clock thread that wakes tasks at precise instants. Stops when dropped.
#[derive(Debug)]
pub struct Pacer {
    shared: Arc<Shared>,
}

impl Pacer {
    /// Starts the clock thread.
    ///
    /// # Errors
    ///
    /// When the OS refuses a new thread.
    pub fn start() -> std::io::Result<Pacer> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        thread::Builder::new()
            .name("brokerbench-pacer".into())
            .spawn(move || clock(&worker))?;
        Ok(Pacer { shared })
    }

    /// Completes at `due` (at once if it has passed).
    pub async fn sleep_until(&self, due: Instant) {
        if due <= Instant::now() {
            return;
        }
        let (wake, woken) = oneshot::channel();
        {
            let mut state = self.shared.state.lock();
            let id = state.next_id;
            state.next_id += 1;
            let earliest = state.heap.peek().is_none_or(|Reverse(e)| due < e.due);
            state.heap.push(Reverse(Entry { due, id, wake }));
            if earliest {
                self.shared.changed.notify_one();
            }
        }
        let _ = woken.await;
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.state.lock().stopped = true;
        self.shared.changed.notify_one();
    }
}

fn clock(shared: &Shared) {
    precise_timer_slack();
    let mut due_now = Vec::new();
    let mut state = shared.state.lock();
    loop {
        if state.stopped {
            return;
        }
        let now = Instant::now();
        while state.heap.peek().is_some_and(|Reverse(e)| e.due <= now) {
            if let Some(Reverse(entry)) = state.heap.pop() {
                due_now.push(entry.wake);
            }
        }
        if !due_now.is_empty() {
            drop(state);
            for wake in due_now.drain(..) {
                let _ = wake.send(());
            }
            state = shared.state.lock();
            continue;
        }
        match state.heap.peek().map(|Reverse(e)| e.due) {
            Some(due) => {
                shared.changed.wait_until(&mut state, due);
            }
            None => shared.changed.wait(&mut state),
        }
    }
}

/// Asks Linux for 1 ns timer slack on this thread (the default 50 µs would make every
/// wake-up up to 50 µs late).
#[allow(unsafe_code)]
fn precise_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes plain integers and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_in_order_and_not_early() {
        let pacer = Arc::new(Pacer::start().unwrap());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for ms in [30u64, 10, 20] {
            let pacer = pacer.clone();
            tasks.push(tokio::spawn(async move {
                let due = start + Duration::from_millis(ms);
                pacer.sleep_until(due).await;
                assert!(Instant::now() >= due);
                ms
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        pacer.sleep_until(start).await;
    }
}
