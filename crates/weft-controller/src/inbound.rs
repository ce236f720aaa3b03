//! Node statuses on their way from the fabric to the controller: every
//! status of a node in order, up to a bound per node.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use zenoh::bytes::ZBytes;
use zenoh::sample::Sample;

/// How many statuses of one node may wait (16 s of them at the default
/// interval). Past that the oldest goes: the reader then sees a gap and
/// waits for the node's next full status, so a controller that cannot keep
/// up holds a bounded backlog and loses time, never memory.
pub(crate) const WAITING_PER_KEY: usize = 64;

/// Samples received and not handled yet, per key (a node's status), in
/// the order they arrived. A node's status is a delta of the one before
/// it (`weft_fabric::status`), so none may be skipped: keeping only the
/// newest of each node, as this did when statuses were whole, made the
/// controller lose a delta whenever two arrived between two takes (as
/// they do after a link was busy) and then ignore the node until its next
/// full status, up to 10 s later.
#[derive(Default)]
pub(crate) struct Inbound {
    waiting: Mutex<HashMap<String, VecDeque<ZBytes>>>,
    ready: tokio::sync::Notify,
}

impl Inbound {
    pub(crate) fn arrived(&self, sample: Sample) {
        self.put(
            sample.key_expr().as_str().to_string(),
            sample.payload().clone(),
        );
    }

    fn put(&self, key: String, payload: ZBytes) {
        let mut waiting = self.waiting.lock().unwrap();
        let queue = waiting.entry(key).or_default();
        if queue.len() == WAITING_PER_KEY {
            queue.pop_front();
        }
        queue.push_back(payload);
        drop(waiting);
        self.ready.notify_one();
    }

    /// Waits for samples and takes them all: each key's in arrival order.
    pub(crate) async fn take(&self) -> HashMap<String, VecDeque<ZBytes>> {
        loop {
            let batch = std::mem::take(&mut *self.waiting.lock().unwrap());
            if !batch.is_empty() {
                return batch;
            }
            self.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bytes(queue: &VecDeque<ZBytes>) -> Vec<Vec<u8>> {
        queue.iter().map(|p| p.to_bytes().to_vec()).collect()
    }

    #[tokio::test]
    async fn every_status_of_a_node_waits_in_order() {
        let inbound = Inbound::default();
        inbound.put("node/a/status".into(), vec![1].into());
        inbound.put("node/b/status".into(), vec![2].into());
        inbound.put("node/a/status".into(), vec![3].into());
        let batch = inbound.take().await;
        assert_eq!(bytes(&batch["node/a/status"]), [vec![1], vec![3]]);
        assert_eq!(bytes(&batch["node/b/status"]), [vec![2]]);
        // Taken: the next take waits for the next arrival.
        let next = tokio::time::timeout(Duration::from_millis(50), inbound.take()).await;
        assert!(next.is_err(), "nothing new arrived");
    }

    #[tokio::test]
    async fn a_node_that_sends_faster_than_it_is_read_loses_its_oldest_only() {
        let inbound = Inbound::default();
        for i in 0..WAITING_PER_KEY + 2 {
            inbound.put("node/a/status".into(), vec![i as u8].into());
        }
        inbound.put("node/b/status".into(), vec![0].into());
        let batch = inbound.take().await;
        let a = bytes(&batch["node/a/status"]);
        assert_eq!(a.len(), WAITING_PER_KEY);
        assert_eq!(a[0], vec![2], "the two oldest went");
        assert_eq!(a.last(), Some(&vec![WAITING_PER_KEY as u8 + 1]));
        assert_eq!(
            bytes(&batch["node/b/status"]),
            [vec![0]],
            "another node's stays"
        );
    }
}
