//! Routing a process's outputs: into the inboxes of receivers on this node,
//! at the connection's logical delay, and to the fabric for receivers
//! elsewhere.
//!
//! Routes are resolved when an app is wired, into tables indexed by sender
//! id and port handle, so publishing a message looks nothing up by name and
//! allocates nothing but what the message itself needs; a payload is shared
//! (not copied) between the receivers of one output.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weft_types::{PortHandle, PortName, ProcessName, Tag};

use crate::inbox::{Inbox, Refused};
use crate::types::{Message, MessageKey, Output, ProcessId};

/// Where outputs with receivers on other nodes go (the fabric).
pub trait RemoteSink: Send + Sync {
    /// The publisher of `sender`'s output `port`, made once when wiring.
    fn port(&self, sender: &ProcessName, port: &PortName) -> Arc<dyn RemotePort>;
}

/// Publishes one output port's messages to the fabric. Called on the
/// sender's own (possibly rt) thread: it must hand off, not wait on I/O.
pub trait RemotePort: Send + Sync {
    fn publish(&self, tag: Tag, seq: u64, payload: &[u8]);
}

/// A destination of one output port on this node.
#[derive(Clone)]
struct Route {
    inbox: Arc<Inbox>,
    port: PortHandle,
    delay: Duration,
}

/// Everything one output port feeds.
#[derive(Clone, Default)]
struct PortRoutes {
    local: Vec<Route>,
    remote: Option<Arc<dyn RemotePort>>,
}

/// All connections of the processes of one app on this node.
#[derive(Default, Clone)]
pub struct Router {
    /// `[sender][port handle]`.
    senders: Vec<Vec<PortRoutes>>,
}

/// What happened to one published message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivery {
    pub delivered: u64,
    pub refused: u64,
}

impl Router {
    fn routes_mut(&mut self, sender: ProcessId, port: PortHandle) -> &mut PortRoutes {
        let (s, p) = (sender.0 as usize, port.0.max(0) as usize);
        if self.senders.len() <= s {
            self.senders.resize_with(s + 1, Vec::new);
        }
        let ports = &mut self.senders[s];
        if ports.len() <= p {
            ports.resize_with(p + 1, PortRoutes::default);
        }
        &mut ports[p]
    }

    fn routes(&self, sender: ProcessId, port: PortHandle) -> Option<&PortRoutes> {
        self.senders
            .get(sender.0 as usize)?
            .get(usize::try_from(port.0).ok()?)
    }

    /// Delivers `sender`'s output `out` into `inbox` on input `in_port`,
    /// `delay` later.
    pub fn connect(
        &mut self,
        sender: ProcessId,
        out: PortHandle,
        inbox: Arc<Inbox>,
        in_port: PortHandle,
        delay: Duration,
    ) {
        self.routes_mut(sender, out).local.push(Route {
            inbox,
            port: in_port,
            delay,
        });
    }

    /// Sends `sender`'s output `out` to the fabric too.
    pub fn export(&mut self, sender: ProcessId, out: PortHandle, remote: Arc<dyn RemotePort>) {
        self.routes_mut(sender, out).remote = Some(remote);
    }

    /// Delivers one output of a local `sender` produced at `tag` with
    /// sequence `seq`: to local receivers, and to the fabric if exported.
    pub fn publish(&self, sender: ProcessId, tag: Tag, seq: u64, output: &Output) -> Delivery {
        let Some(routes) = self.routes(sender, output.port) else {
            return Delivery::default();
        };
        if let Some(remote) = &routes.remote {
            remote.publish(tag, seq, &output.payload);
        }
        deliver(&routes.local, sender, tag, seq, &output.payload)
    }

    /// Delivers to the receivers on this node only: what arrives from a
    /// sender on another node.
    pub fn deliver_local(
        &self,
        sender: ProcessId,
        port: PortHandle,
        tag: Tag,
        seq: u64,
        payload: &Bytes,
    ) -> Delivery {
        match self.routes(sender, port) {
            Some(routes) => deliver(&routes.local, sender, tag, seq, payload),
            None => Delivery::default(),
        }
    }
}

fn deliver(routes: &[Route], sender: ProcessId, tag: Tag, seq: u64, payload: &Bytes) -> Delivery {
    let mut result = Delivery::default();
    for route in routes {
        let message = Message {
            key: MessageKey {
                tag: tag.after(route.delay),
                source: sender,
                seq,
            },
            port: route.port,
            payload: payload.clone(),
        };
        match route.inbox.push(message) {
            Ok(()) => result.delivered += 1,
            Err(Refused::MailboxFull) => result.refused += 1,
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Roster;

    #[test]
    fn outputs_reach_each_receiver_at_its_delay_and_the_fabric() {
        #[derive(Default)]
        struct Seen(std::sync::Mutex<Vec<(Tag, u64, Vec<u8>)>>);
        impl RemotePort for Seen {
            fn publish(&self, tag: Tag, seq: u64, payload: &[u8]) {
                self.0.lock().unwrap().push((tag, seq, payload.to_vec()));
            }
        }
        let roster = Roster::new(["a", "b"].map(|n| n.parse().unwrap()));
        let (near, far) = (
            Arc::new(Inbox::new(4, roster.clone())),
            Arc::new(Inbox::new(4, roster)),
        );
        let remote = Arc::new(Seen::default());
        let mut router = Router::default();
        let (a, out) = (ProcessId(0), PortHandle(1));
        router.connect(a, out, near.clone(), PortHandle(0), Duration::ZERO);
        router.connect(a, out, far.clone(), PortHandle(0), Duration::from_nanos(10));
        router.export(a, out, remote.clone());
        let output = Output {
            port: out,
            payload: Bytes::from_static(b"x"),
        };
        let delivery = router.publish(a, Tag(5), 1, &output);
        assert_eq!(delivery.delivered, 2);
        assert_eq!(near.pop_next().unwrap().key.tag, Tag(5));
        assert_eq!(far.pop_next().unwrap().key.tag, Tag(15));
        assert_eq!(remote.0.lock().unwrap()[0], (Tag(5), 1, b"x".to_vec()));
        // Another port of the same sender goes nowhere.
        let other = Output {
            port: PortHandle(2),
            payload: Bytes::new(),
        };
        assert_eq!(router.publish(a, Tag(5), 2, &other).delivered, 0);
    }
}
