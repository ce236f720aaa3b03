//! The checkpoints this node holds, and how they reach a peer.
//!
//! Checkpoints live on nodes; the controller only learns, from each
//! node's status, which node holds which process's checkpoint at which
//! tag. A node holds two kinds:
//!
//! * **its own**: a process's thread hands over a base or an increment
//!   (the pages written since its previous checkpoint: see
//!   `weft_runtime::snapshot`) and goes on; it never encodes, waits or
//!   sends. A task of its own applies each link, in order, to the node's
//!   whole copy of the process's latest checkpoint, kept sparse;
//! * **kept for a peer**: the controller names, per process, one other
//!   node as its checkpoint peer (see `docs/fabric.md`). The task sends
//!   that node what changed since it last acknowledged (the links, merged
//!   into one), or the whole copy when the peer has no base of this chain,
//!   and the peer applies it to its own whole copy. What goes to one peer
//!   goes in batches of about a mebibyte, one query each, so the cost is
//!   the bytes, not a round trip per process. A peer that refuses a
//!   link (a gap, a corrupt one) keeps its previous good copy and is sent
//!   the whole one next time.
//!
//! A node that needs a checkpoint asks every node at once
//! (`checkpoint/*/<app>/<process>`) and takes the newest good answer, so
//! no blob passes through the controller. The node running the process
//! waits briefly for one at or past the asker's `min_tag` (a replica needs
//! one taken after it subscribed to its inputs).
//!
//! Links wait per process until the task takes them; a base makes every
//! link before it moot, so what waits is at most one base and the
//! increments after it. A checkpoint nobody updates any more (its process
//! moved away or ended) is forgotten after [`FORGET_AFTER`], unless the
//! controller names this node as its peer: the copy a dead node's process
//! resumes from must outlive the wait for a node with room for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use weft_fabric::codec::{self, CheckpointFrame, ReplicaBatch};
use weft_fabric::keys::MIN_TAG;
use weft_fabric::proto::{HeldCheckpoint, ReplicaRefusals};
use weft_fabric::{Keys, rpc};
use weft_runtime::Snapshot;
use weft_types::{NodeName, ProcessRef, Tag};

/// How long the node keeps a checkpoint nobody updates and that it is
/// not a peer for (about a hundred checkpoint intervals).
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(60);
/// How long a query waits for the process's own checkpoint to reach its
/// `min_tag`.
const FRESH_WAIT: Duration = Duration::from_millis(1500);
/// How long a peer has to take a link.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches of links sent to peers at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// How many bytes of links go to a peer in one query, about.
const BATCH_BYTES: usize = 1 << 20;

/// A whole checkpoint, with when it last changed. Its memories are kept
/// sparse (zero pages dropped), so holding and sending a small process's
/// checkpoint costs the pages it wrote, not the memory it has.
struct Whole {
    snapshot: Snapshot,
    touched: Instant,
}

impl Whole {
    fn new(mut snapshot: Snapshot) -> Whole {
        snapshot.compact();
        Whole {
            snapshot,
            touched: Instant::now(),
        }
    }

    fn tag(&self) -> Tag {
        self.snapshot.last_tag.unwrap_or(Tag::ZERO)
    }

    /// Applies `link`; a refused one changes nothing.
    fn apply(&mut self, link: Snapshot) -> Result<()> {
        self.snapshot.apply(link)?;
        self.snapshot.compact();
        self.touched = Instant::now();
        Ok(())
    }

    fn frame(&self) -> Vec<u8> {
        CheckpointFrame::encode_parts(self.tag(), &self.snapshot.encode())
    }
}

/// What the controller asked of this node's checkpoints in its last
/// `Sync`: where each of its own processes' checkpoints go, and which
/// processes it keeps for their nodes.
#[derive(Default)]
pub(crate) struct Duties {
    pub peers: HashMap<ProcessRef, NodeName>,
    pub keep: HashSet<ProcessRef>,
}

/// Where a peer stands in the chain of one process: the link it applied
/// last.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PeerHas {
    chain: u64,
    index: u32,
}

#[derive(Default)]
struct Held {
    own: HashMap<ProcessRef, Whole>,
    kept: HashMap<ProcessRef, Whole>,
}

impl Held {
    /// The newest checkpoint held of `who`, of either kind.
    fn best(&self, who: &ProcessRef) -> Option<&Whole> {
        [self.own.get(who), self.kept.get(who)]
            .into_iter()
            .flatten()
            .max_by_key(|w| w.tag())
    }
}

/// This node's checkpoints, shared by the task that applies and sends its
/// own, the queryables that serve and keep them, and the status.
pub(crate) struct Checkpoints {
    node: NodeName,
    session: zenoh::Session,
    keys: Keys,
    pending: Mutex<BTreeMap<ProcessRef, Vec<Snapshot>>>,
    ready: Notify,
    held: Mutex<Held>,
    changed: Notify,
    duties: Mutex<Duties>,
    /// Bytes sent to other nodes: links pushed, checkpoints served.
    sent: AtomicU64,
}

impl Checkpoints {
    /// Starts the tasks that apply, send, serve and keep checkpoints.
    pub(crate) fn start(session: zenoh::Session, keys: Keys, node: NodeName) -> Arc<Checkpoints> {
        let this = Arc::new(Checkpoints {
            node,
            session,
            keys,
            pending: Mutex::default(),
            ready: Notify::new(),
            held: Mutex::default(),
            changed: Notify::new(),
            duties: Mutex::default(),
            sent: AtomicU64::new(0),
        });
        tokio::spawn(this.clone().apply_and_send());
        tokio::spawn(this.clone().serve());
        tokio::spawn(this.clone().keep_for_peers());
        this
    }

    /// Queues the next link of `who`, a process of this node.
    pub(crate) fn push(&self, who: ProcessRef, snapshot: Snapshot) {
        let mut pending = self.pending.lock().unwrap();
        let waiting = pending.entry(who).or_default();
        if snapshot.is_base() {
            waiting.clear();
        }
        waiting.push(snapshot);
        drop(pending);
        self.ready.notify_one();
    }

    /// This node's copy of `who`'s checkpoint, if it is at `newest` or
    /// later: the newest any node holds, so nobody need be asked.
    pub(crate) fn newest_here(&self, who: &ProcessRef, newest: Tag) -> Option<Snapshot> {
        let held = self.held.lock().unwrap();
        let best = held.best(who).filter(|w| w.tag() >= newest)?;
        Some(best.snapshot.clone())
    }

    /// Checkpoint bytes this node has sent to other nodes so far.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn set_duties(&self, duties: Duties) {
        *self.duties.lock().unwrap() = duties;
    }

    /// Every checkpoint held, newest per process, for the node's status.
    pub(crate) fn list(&self) -> Vec<HeldCheckpoint> {
        let held = self.held.lock().unwrap();
        let who: HashSet<&ProcessRef> = held.own.keys().chain(held.kept.keys()).collect();
        let mut list: Vec<HeldCheckpoint> = who
            .into_iter()
            .filter_map(|w| {
                let best = held.best(w)?;
                Some(HeldCheckpoint {
                    app: w.app.clone(),
                    process: w.process.clone(),
                    tag: best.tag(),
                    bytes: best.snapshot.memory_bytes(),
                })
            })
            .collect();
        list.sort_by(|a, b| (&a.app, &a.process).cmp(&(&b.app, &b.process)));
        list
    }

    fn forget_idle(&self) {
        let keep = self.duties.lock().unwrap().keep.clone();
        let mut held = self.held.lock().unwrap();
        held.own.retain(|_, w| w.touched.elapsed() < FORGET_AFTER);
        held.kept
            .retain(|who, w| keep.contains(who) || w.touched.elapsed() < FORGET_AFTER);
    }

    /// Applies this node's links as they come and sends each process's
    /// change to its peer, until the session ends.
    async fn apply_and_send(self: Arc<Self>) {
        let mut peers_have: HashMap<ProcessRef, (NodeName, PeerHas)> = HashMap::new();
        loop {
            self.ready.notified().await;
            self.forget_idle();
            let taken = std::mem::take(&mut *self.pending.lock().unwrap());
            let mut outgoing: HashMap<NodeName, Vec<Outgoing>> = HashMap::new();
            for (who, links) in taken {
                let peer = self.duties.lock().unwrap().peers.get(&who).cloned();
                let has = peer
                    .as_ref()
                    .and_then(|p| peers_have.get(&who).filter(|(on, _)| on == p))
                    .map(|(_, has)| *has);
                let Some(push) = self.apply_own(&who, links, has) else {
                    continue;
                };
                self.changed.notify_waiters();
                if let Some(peer) = peer {
                    outgoing
                        .entry(peer)
                        .or_default()
                        .push(Outgoing { who, push });
                }
            }
            self.send_batches(outgoing, &mut peers_have).await;
        }
    }

    /// Sends each peer its links, [`BATCH_BYTES`] at a time, and notes
    /// where each peer then stands. A peer that does not answer one batch
    /// is not sent the rest this round.
    async fn send_batches(
        &self,
        outgoing: HashMap<NodeName, Vec<Outgoing>>,
        peers_have: &mut HashMap<ProcessRef, (NodeName, PeerHas)>,
    ) {
        let mut sends = JoinSet::new();
        let limit = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        let failing: Arc<Mutex<HashSet<NodeName>>> = Arc::default();
        for (peer, links) in outgoing {
            for batch in batches(links) {
                let key = self.keys.replicas_to(&peer);
                let (session, limit, failing, peer) = (
                    self.session.clone(),
                    limit.clone(),
                    failing.clone(),
                    peer.clone(),
                );
                sends.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let skip = failing.lock().unwrap().contains(&peer);
                    let sent = match skip {
                        true => Err(anyhow!("it did not answer another batch just now")),
                        false => send_batch(&session, &key, &batch).await,
                    };
                    if sent.is_err() {
                        failing.lock().unwrap().insert(peer.clone());
                    }
                    (peer, batch, sent)
                });
            }
        }
        while let Some(Ok((peer, batch, sent))) = sends.join_next().await {
            let refused: HashMap<ProcessRef, String> = match sent {
                Ok(refusals) => refusals.refused.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(peer = %peer, links = batch.len(), "checkpoint peer did not take a batch of links; each gets its whole checkpoint next: {e:#}");
                    for o in &batch {
                        peers_have.remove(&o.who);
                    }
                    continue;
                }
            };
            for Outgoing { who, push } in batch {
                if let Some(why) = refused.get(&who) {
                    tracing::warn!(process = %who, peer = %peer, "checkpoint peer refused the link; it gets the whole checkpoint next: {why}");
                    peers_have.remove(&who);
                    continue;
                }
                self.sent
                    .fetch_add(push.frame.len() as u64, Ordering::Relaxed);
                peers_have.insert(who, (peer.clone(), push.leads_to));
            }
        }
    }

    /// Merges `links` into one and applies it to the node's whole copy of
    /// `who`; returns what to send a peer that `has` the given link (the
    /// merged links when it can apply them, else the whole copy). `None`
    /// when nothing applied.
    fn apply_own(
        &self,
        who: &ProcessRef,
        links: Vec<Snapshot>,
        has: Option<PeerHas>,
    ) -> Option<Push> {
        let mut links = links.into_iter();
        let mut delta = links.next()?;
        for link in links {
            if let Err(e) = delta.apply(link) {
                tracing::warn!(process = %who, "checkpoint links do not follow each other; waiting for the next base: {e}");
                return None;
            }
        }
        let leads_to = PeerHas {
            chain: delta.link.chain,
            index: delta.link.index,
        };
        let follows =
            has.is_some_and(|h| h.chain == delta.link.chain && delta.link.parent == Some(h.index));
        let tag = delta.last_tag.unwrap_or(Tag::ZERO);
        let as_link = follows.then(|| CheckpointFrame::encode_parts(tag, &delta.encode()));
        let mut held = self.held.lock().unwrap();
        match held.own.get_mut(who) {
            Some(whole) => {
                if let Err(e) = whole.apply(delta) {
                    tracing::warn!(process = %who, "checkpoint link refused; the previous good checkpoint stays until the next base: {e:#}");
                    return None;
                }
            }
            None if delta.is_base() => {
                held.own.insert(who.clone(), Whole::new(delta));
            }
            None => {
                tracing::debug!(process = %who, "checkpoint increment without its base; waiting for the next base");
                return None;
            }
        }
        let frame = as_link.unwrap_or_else(|| held.own[who].frame());
        Some(Push { frame, leads_to })
    }

    /// Serves the checkpoints held here to nodes that need them. A query
    /// names the process and may name any node (`*`); the answer comes on
    /// this node's own key, so the asker knows who holds what.
    async fn serve(self: Arc<Self>) {
        let key = self.keys.checkpoints_held_by(&self.node);
        let queryable = match self.session.declare_queryable(&key).await {
            Ok(q) => q,
            Err(e) => {
                tracing::error!("cannot serve this node's checkpoints on {key}: {e}");
                return;
            }
        };
        while let Ok(query) = queryable.recv_async().await {
            let this = self.clone();
            tokio::spawn(async move {
                let asked = query.key_expr().as_str().to_string();
                let answer = match this.keys.checkpoint_query_of(&asked) {
                    Some(who) => {
                        let frame = this.answer(&who, query.parameters().as_str()).await;
                        this.sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
                        query
                            .reply(this.keys.held_checkpoint(&this.node, &who), frame)
                            .await
                    }
                    None => {
                        query
                            .reply_err(format!("{asked} does not name a process"))
                            .await
                    }
                };
                if let Err(e) = answer {
                    tracing::warn!(key = %asked, "cannot answer a checkpoint query: {e}");
                }
            });
        }
    }

    /// The newest checkpoint held of `who`, waiting up to [`FRESH_WAIT`]
    /// for this node's own to reach the query's `min_tag`; empty when
    /// there is none.
    async fn answer(&self, who: &ProcessRef, params: &str) -> Vec<u8> {
        let min_tag = zenoh::query::Parameters::from(params)
            .get(MIN_TAG)
            .and_then(|t| t.parse().ok())
            .map(Tag);
        let deadline = tokio::time::Instant::now() + FRESH_WAIT;
        loop {
            let changed = self.changed.notified();
            {
                let held = self.held.lock().unwrap();
                let best = held.best(who);
                let fresh = min_tag.is_none_or(|min| best.is_some_and(|w| w.tag() >= min));
                // Only the process's own node gets newer ones by itself.
                let waits = !fresh && held.own.contains_key(who);
                if !waits || tokio::time::Instant::now() >= deadline {
                    return best.map_or_else(Vec::new, Whole::frame);
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    /// Takes the links peers send for this node to keep.
    async fn keep_for_peers(self: Arc<Self>) {
        let key = self.keys.replicas_to(&self.node);
        let this = self.clone();
        let served = rpc::serve_raw(self.session.clone(), key, move |_, _, payload| {
            let this = this.clone();
            async move {
                let batch = ReplicaBatch::decode(&payload).map_err(|e| {
                    tracing::warn!("checkpoint links from a peer refused: {e}");
                    format!("{e}")
                })?;
                let refused = batch
                    .links
                    .into_iter()
                    .filter_map(|(who, frame)| {
                        let kept = this.keep(&who, &frame);
                        kept.err().map(|e| (who, format!("{e:#}")))
                    })
                    .collect();
                Ok(codec::encode(&ReplicaRefusals { refused }))
            }
        })
        .await;
        if let Err(e) = served {
            tracing::error!("cannot keep checkpoints for peers: {e:#}");
        }
    }

    fn keep(&self, who: &ProcessRef, frame: &[u8]) -> Result<()> {
        let frame = CheckpointFrame::decode(frame)?;
        let link = Snapshot::decode(&frame.snapshot)
            .with_context(|| format!("checkpoint of {who} at {}", frame.tag))?;
        let mut held = self.held.lock().unwrap();
        match held.kept.get_mut(who) {
            Some(whole) => whole
                .apply(link)
                .with_context(|| format!("checkpoint of {who} at {}", frame.tag))?,
            None if link.is_base() => {
                held.kept.insert(who.clone(), Whole::new(link));
            }
            None => anyhow::bail!(
                "no base of {who} here to apply an increment to; send a whole checkpoint"
            ),
        }
        drop(held);
        self.changed.notify_waiters();
        Ok(())
    }
}

/// Sends one batch of links to the peer that `key` names, at background
/// priority so that no port message waits behind it; the links the peer
/// refused once it applied the batch.
async fn send_batch(
    session: &zenoh::Session,
    key: &str,
    batch: &[Outgoing],
) -> Result<ReplicaRefusals> {
    use zenoh::qos::{CongestionControl, Priority};
    let payload = ReplicaBatch::encode_links(batch.iter().map(|o| (&o.who, &o.push.frame[..])));
    let replies = session
        .get(key)
        .payload(payload)
        .priority(Priority::Background)
        .congestion_control(CongestionControl::Block)
        .timeout(PUSH_TIMEOUT)
        .await
        .map_err(|e| anyhow!("cannot query {key}: {e}"))?;
    let reply = replies
        .recv_async()
        .await
        .map_err(|_| anyhow!("no answer from {key} within {PUSH_TIMEOUT:?}"))?;
    match reply.result() {
        Ok(sample) => Ok(codec::decode(&sample.payload().to_bytes())?),
        Err(e) => Err(anyhow!(
            "{}",
            String::from_utf8_lossy(&e.payload().to_bytes())
        )),
    }
}

/// One process's link on its way to its peer.
struct Outgoing {
    who: ProcessRef,
    push: Push,
}

/// `links` in batches of about [`BATCH_BYTES`] (a bigger link goes alone).
fn batches(links: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut batches: Vec<Vec<Outgoing>> = Vec::new();
    let mut size = 0;
    for link in links {
        let bytes = link.push.frame.len() + ReplicaBatch::PER_LINK;
        if batches.is_empty() || size + bytes > BATCH_BYTES {
            batches.push(Vec::new());
            size = 0;
        }
        size += bytes;
        batches.last_mut().unwrap().push(link);
    }
    batches
}

/// What goes to a peer, and the link it then has.
struct Push {
    frame: Vec<u8>,
    leads_to: PeerHas,
}
