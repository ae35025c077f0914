//! Cancel forwarding: each client gets warden's own backend key data; a CancelRequest carrying it is
//! forwarded to the upstream backend that serves that client's session.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;
use subtle::ConstantTimeEq;

use crate::upstream::UpstreamTarget;

/// Where a cancel for one client session must go.
#[derive(Clone)]
pub struct CancelTarget {
    pub upstream: Arc<UpstreamTarget>,
    pub process_id: i32,
    pub secret_key: i32,
}

struct Entry {
    secret_key: i32,
    target: Option<CancelTarget>,
    /// Wakes the session when a statement of it is held (waiting for an approval) as the cancel arrives.
    canceled: Arc<tokio::sync::Notify>,
}

/// The live sessions' client-facing keys.
#[derive(Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// Removes a session's key when the session ends.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pub process_id: i32,
    pub secret_key: i32,
    /// Notified (its current waiters only) by each CancelRequest for this session.
    pub canceled: Arc<tokio::sync::Notify>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.entries.lock().remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// A fresh, unique client-facing key for a session whose upstream is `target` (None when the upstream
    /// sent no key data: a cancel is then accepted and dropped, as PostgreSQL does for unknown keys).
    pub fn register(self: &Arc<Self>, target: Option<CancelTarget>) -> CancelKey {
        let mut rng = rand::rng();
        let secret_key: i32 = rng.random();
        let mut entries = self.entries.lock();
        let process_id = loop {
            let candidate = rng.random_range(1..i32::MAX);
            if !entries.contains_key(&candidate) {
                break candidate;
            }
        };
        let canceled = Arc::new(tokio::sync::Notify::new());
        entries.insert(process_id, Entry { secret_key, target, canceled: canceled.clone() });
        CancelKey { registry: self.clone(), process_id, secret_key, canceled }
    }

    /// A client's CancelRequest for `(process_id, secret_key)`: when both match a live session, wakes a statement of
    /// it that is held, and returns the upstream to forward the cancel to.
    pub fn request_cancel(&self, process_id: i32, secret_key: i32) -> Option<CancelTarget> {
        let entries = self.entries.lock();
        let entry = entries.get(&process_id)?;
        let matches: bool = entry.secret_key.to_be_bytes().ct_eq(&secret_key.to_be_bytes()).into();
        if matches {
            entry.canceled.notify_waiters();
            entry.target.clone()
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
