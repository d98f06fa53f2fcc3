//! The bounded queue of output waiting for one connection.
//!
//! Replies and pushed messages go through the same queue, so they reach the client in the
//! order the server produced them. Pushed messages are shared [`Bytes`]: a message sent to
//! ten subscribers is rendered once and queued ten times by reference. The connection's
//! writer takes everything queued at once and writes it in as few syscalls as it can,
//! flushing when the queue runs dry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What happened to a message offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for writing.
    Queued,
    /// The queue is over its limit: this offer made the connection a slow consumer. The
    /// queue was emptied and the connection is being closed.
    Overflowed,
    /// The connection is closing (or already overflowed); nothing was queued.
    Closed,
}

/// Why the writer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Flush what is queued, then close.
    Drain,
    /// The reader fell behind: drop everything, tell it, close.
    SlowConsumer,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Bytes>,
    bytes: usize,
    ending: Option<Ending>,
}

/// A connection's outbound queue, shared by the connection's tasks and every topic it
/// subscribed to.
#[derive(Debug)]
pub struct Outbound {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Lets the topic code skip a closing connection without taking its lock.
    closing: AtomicBool,
    /// Cancelled on overflow, so a writer blocked on a peer that stopped reading gives up.
    overflow: CancellationToken,
    limit: usize,
}

/// What the writer gets from [`Outbound::take`].
#[derive(Debug)]
pub enum Batch {
    /// Messages to write, in order.
    Items(VecDeque<Bytes>),
    /// The connection ends this way; nothing more will come.
    End(Ending),
}

impl Outbound {
    /// A queue that holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            closing: AtomicBool::new(false),
            overflow: CancellationToken::new(),
            limit,
        }
    }

    /// Queues a message.
    pub fn offer(&self, item: Bytes) -> Offer {
        let mut queue = self.queue.lock();
        if queue.ending.is_some() {
            return Offer::Closed;
        }
        if queue.bytes + item.len() > self.limit {
            queue.items = VecDeque::new();
            queue.bytes = 0;
            queue.ending = Some(Ending::SlowConsumer);
            self.closing.store(true, Ordering::Relaxed);
            drop(queue);
            self.overflow.cancel();
            self.ready.notify_one();
            return Offer::Overflowed;
        }
        queue.bytes += item.len();
        let was_empty = queue.items.is_empty();
        queue.items.push_back(item);
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
        Offer::Queued
    }

    /// Queues a static reply.
    pub fn offer_static(&self, reply: &'static [u8]) -> Offer {
        self.offer(Bytes::from_static(reply))
    }

    /// Asks the writer to flush what is queued and close.
    pub fn close(&self) {
        let mut queue = self.queue.lock();
        if queue.ending.is_none() {
            queue.ending = Some(Ending::Drain);
        }
        self.closing.store(true, Ordering::Relaxed);
        drop(queue);
        self.ready.notify_one();
    }

    /// True once the connection is closing, for whatever reason.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Completes once the queue has overflowed.
    pub async fn overflowed(&self) {
        self.overflow.cancelled().await;
    }

    /// Waits for output and takes all of it, reusing `spare` as the next empty queue.
    pub async fn take(&self, spare: VecDeque<Bytes>) -> Batch {
        let mut spare = Some(spare);
        loop {
            {
                let mut queue = self.queue.lock();
                if !queue.items.is_empty() {
                    queue.bytes = 0;
                    let empty = spare.take().unwrap_or_default();
                    return Batch::Items(std::mem::replace(&mut queue.items, empty));
                }
                if let Some(ending) = queue.ending {
                    return Batch::End(ending);
                }
            }
            // `notify_one` stores a permit when nobody waits, so an offer made between the
            // check above and this await is not missed.
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_and_hands_over_everything_queued() {
        let out = Outbound::new(1000);
        assert_eq!(out.offer_static(b"a"), Offer::Queued);
        assert_eq!(out.offer(Bytes::from_static(b"b")), Offer::Queued);
        match out.take(VecDeque::new()).await {
            Batch::Items(items) => assert_eq!(items, [&b"a"[..], &b"b"[..]]),
            other => panic!("{other:?}"),
        }
        out.offer_static(b"c");
        out.close();
        assert_eq!(out.offer_static(b"d"), Offer::Closed);
        assert!(matches!(out.take(VecDeque::new()).await, Batch::Items(i) if i.len() == 1));
        assert!(matches!(
            out.take(VecDeque::new()).await,
            Batch::End(Ending::Drain)
        ));
    }

    #[tokio::test]
    async fn overflow_drops_the_backlog_and_ends_as_slow_consumer() {
        let out = Outbound::new(10);
        assert_eq!(out.offer_static(b"12345"), Offer::Queued);
        assert_eq!(out.offer_static(b"12345"), Offer::Queued);
        assert_eq!(out.offer_static(b"1"), Offer::Overflowed);
        assert_eq!(out.offer_static(b"1"), Offer::Closed);
        assert!(out.is_closing());
        assert!(matches!(
            out.take(VecDeque::new()).await,
            Batch::End(Ending::SlowConsumer)
        ));
    }

    #[tokio::test]
    async fn wakes_a_waiting_writer() {
        let out = std::sync::Arc::new(Outbound::new(100));
        let writer = {
            let out = out.clone();
            tokio::spawn(async move { out.take(VecDeque::new()).await })
        };
        tokio::task::yield_now().await;
        out.offer_static(b"x");
        assert!(matches!(writer.await.unwrap(), Batch::Items(i) if i.len() == 1));
    }
}
