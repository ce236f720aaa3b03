//! Node statuses on their way from the fabric to the controller: the
//! newest of each key waits, nothing else.

use std::collections::HashMap;
use std::sync::Mutex;

use zenoh::bytes::ZBytes;
use zenoh::sample::Sample;

/// Samples received and not handled yet: the newest of each key (a node's
/// status). A busy controller may take longer than a node's status
/// interval to handle one, so a queue
/// would fall further behind with every item (and hold them all in
/// memory); a newer sample replaces the older one of its key here
/// instead, never another key's. Bounded by the number of keys.
#[derive(Default)]
pub(crate) struct Inbound {
    latest: Mutex<HashMap<String, ZBytes>>,
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
        self.latest.lock().unwrap().insert(key, payload);
        self.ready.notify_one();
    }

    /// Waits for samples and takes them all.
    pub(crate) async fn take(&self) -> HashMap<String, ZBytes> {
        loop {
            let batch = std::mem::take(&mut *self.latest.lock().unwrap());
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

    #[tokio::test]
    async fn a_newer_status_replaces_a_waiting_one_of_its_node_only() {
        let inbound = Inbound::default();
        inbound.put("node/a/status".into(), vec![1].into());
        inbound.put("node/b/status".into(), vec![2].into());
        inbound.put("node/a/status".into(), vec![3].into());
        let batch = inbound.take().await;
        let got: std::collections::BTreeMap<_, _> = batch
            .into_iter()
            .map(|(k, v)| (k, v.to_bytes().to_vec()))
            .collect();
        let want = [
            ("node/a/status".to_string(), vec![3]),
            ("node/b/status".to_string(), vec![2]),
        ];
        assert_eq!(got, want.into_iter().collect());
        // Taken: the next take waits for the next arrival.
        let next = tokio::time::timeout(Duration::from_millis(50), inbound.take()).await;
        assert!(next.is_err(), "nothing new arrived");
    }
}
