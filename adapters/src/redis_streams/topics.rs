//! The stream keys a backend has used, with their retention limits: what publishes need
//! to know (`MAXLEN`) and what teardown deletes.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// Every stream key this backend instance (or a producer or subscription made from it)
/// has declared, written to or read, with its retention limit.
///
/// Keys come into being in Redis when first written (`XADD`) or when a group is created
/// with `MKSTREAM`, so "remember every key touched" is "remember every key created"; the
/// per-run topic names (`bb.<run>.<name>`) keep runs apart.
#[derive(Debug, Default)]
pub(super) struct Topics {
    keys: RwLock<HashMap<Arc<str>, Option<u64>>>,
}

impl Topics {
    /// Records `name` with its retention limit (from [`prepare`](crate::Backend::prepare)).
    pub(super) fn declare(&self, name: &str, max_messages: Option<u64>) {
        self.keys.write().insert(name.into(), max_messages);
    }

    /// Records `name` if it is new, and returns its retention limit. Called on every
    /// publish, so the common case takes only the read lock.
    pub(super) fn touch(&self, name: &Arc<str>) -> Option<u64> {
        if let Some(max) = self.keys.read().get(name) {
            return *max;
        }
        *self.keys.write().entry(name.clone()).or_insert(None)
    }

    /// Every key recorded, sorted (for messages and tests).
    pub(super) fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<_> = self.keys.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Forgets `names` (after they were deleted). A later publish records them again.
    pub(super) fn forget(&self, names: &[Arc<str>]) {
        let mut keys = self.keys.write();
        for name in names {
            keys.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_limits_win_and_touch_records() {
        let topics = Topics::default();
        topics.declare("a", Some(10));
        assert_eq!(topics.touch(&Arc::from("a")), Some(10));
        assert_eq!(topics.touch(&Arc::from("b")), None);
        assert_eq!(topics.names(), [Arc::from("a"), Arc::from("b")]);
        topics.forget(&[Arc::from("a")]);
        assert_eq!(topics.names(), [Arc::from("b")]);
    }
}
