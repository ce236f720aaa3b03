//! This node's share of each app, and how it follows the controller's
//! desired state.
//!
//! A change applied in place (see `share`) promotes replicas. Every other
//! change goes through one mechanism: subscribe the new share's remote
//! inputs, stop the old share at a call boundary, keeping each process's
//! final snapshot, and start the new share, resuming every process that
//! stays from its snapshot and every process that arrives from the newest
//! checkpoint any node holds of it (`checkpoints`). A process that leaves
//! for another node hands its final snapshot over: it becomes the
//! checkpoint this node holds of it, and the node's status says so, so the
//! controller lets the new node start it only once that is so. A replica starts from
//! a checkpoint its primary took after this node subscribed to the
//! replica's inputs, so it sees every input its primary sees; until there
//! is one, it waits. The wait must not move its own goal: a share missing
//! a replica subscribes again at once, and the next attempt, made only
//! when that subscription is old enough, starts from it; so the checkpoint
//! it needs was already on its way. The age wanted doubles with each
//! failed attempt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use weft_fabric::Keys;
use weft_fabric::proto::{
    AppAssignment, ChainMark, FaultNote, HandedOver, ProcessStatus, StatusMark,
};
use weft_manifest::AppManifest;
use weft_manifest::module::DigestDir;
use weft_runtime::{Node, RunningApp, Snapshot, StartOptions};
use weft_types::{AppName, NodeName, ProcessName, ProcessRef, Tag};

use crate::checkpoints::Duties;
use crate::fetch;
use crate::share::{self, Change};
use crate::wiring::{Outbox, PortInlet, subscribe_port};

/// How far past the subscription a replica's starting checkpoint must be,
/// so that messages in flight when the node subscribed are in it.
const REPLICA_SYNC_MARGIN: Duration = Duration::from_millis(200);
/// How old the subscription of the first retry of a missing replica is;
/// each further retry waits twice as long, up to the last.
const REPLICA_RETRY_FIRST: Duration = Duration::from_secs(2);
const REPLICA_RETRY_LAST: Duration = Duration::from_secs(32);
/// Checkpoint fetches a starting share makes at once.
const FETCHES_IN_FLIGHT: usize = 32;
/// How long a handover stays in this node's status.
const HANDED_OVER_KEPT: Duration = Duration::from_secs(60);

/// This node's share of one app.
pub(crate) struct LocalApp {
    pub assignment: AppAssignment,
    running: RunningApp,
    _subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
    /// Checkpoint tag each process was restored from, if any.
    restored_from: HashMap<ProcessName, u64>,
    /// Replicas assigned here that could not start (no fresh enough
    /// checkpoint of their process yet): the next sync tries again.
    missing_replicas: BTreeSet<ProcessName>,
    /// While replicas are missing: the next attempt at them.
    next_attempt: Option<NextAttempt>,
    /// Processes holding their outputs after a stall, with the status the
    /// controller must have seen before its word confirms them.
    stalled: BTreeMap<ProcessName, u64>,
}

/// The next attempt at starting a share's missing replicas: the share
/// subscribed (and buffering) since the last attempt, and when it is old
/// enough to try.
struct NextAttempt {
    prepared: Prepared,
    due: Instant,
    /// How long after this attempt, if it fails, the one after it is due.
    backoff: Duration,
}

impl LocalApp {
    /// Whether the share runs all it can for now: every replica, or a
    /// retry at the missing ones is not due yet.
    fn complete(&self) -> bool {
        self.missing_replicas.is_empty()
            || self
                .next_attempt
                .as_ref()
                .is_some_and(|next| Instant::now() < next.due)
    }

    /// Whether this share needs a `Sync` to move on: processes held after
    /// a stall (noticed or not yet), or replicas still to start.
    pub(crate) fn wants_sync(&self) -> bool {
        !self.stalled.is_empty()
            || !self.running.stalled().is_empty()
            || !self.missing_replicas.is_empty()
    }

    /// Notes the processes newly held after a stall: only a `Sync` written
    /// after the node's next status speaks for the node as it is now.
    fn note_stalled(&mut self, next_status: u64) {
        let now = self.running.stalled();
        self.stalled.retain(|p, _| now.contains(p));
        for p in now {
            self.stalled.entry(p).or_insert(next_status);
        }
    }

    /// Puts the stalled processes the controller still places here live
    /// again, if it wrote `seen` after hearing from the node since.
    fn confirm_stalled(&mut self, ctx: &Context, seen: Option<StatusMark>) {
        let live = share::live(&self.assignment, &ctx.name);
        self.stalled.retain(|process, needs| {
            let confirmed = live.contains(process) && seen_since(seen, *needs);
            if confirmed {
                self.running.promote(process.as_str());
                tracing::warn!(app = %self.assignment.app, process = %process, "still placed here after the stall: its outputs are live again");
            }
            !confirmed
        });
    }
}

/// Whether a `Sync` carrying `seen` was written after the controller had
/// this agent's status `needs` (or a later one).
fn seen_since(seen: Option<StatusMark>, needs: u64) -> bool {
    seen.is_some_and(|m| m.covers(std::process::id(), needs))
}

/// Everything `sync` needs besides the apps themselves.
pub(crate) struct Context {
    pub node: Arc<Node>,
    pub name: NodeName,
    pub session: zenoh::Session,
    pub keys: Keys,
    pub outbox: Outbox,
    pub modules: DigestDir,
    pub checkpoint_every: Duration,
    /// Processes this node handed over lately, for its status.
    pub handed_over: Mutex<Vec<(HandedOver, Instant)>>,
    /// The `seq` of this node's newest status.
    pub status_seq: AtomicU64,
    /// The last `Sync` left nothing to do: every app it named runs here as
    /// it said, whole. Until then the node's status asks for another.
    pub settled: AtomicBool,
}

impl Context {
    /// The handovers to report, forgetting those kept long enough.
    pub(crate) fn handed_over(&self) -> Vec<HandedOver> {
        let mut kept = self.handed_over.lock().unwrap();
        kept.retain(|(_, at)| at.elapsed() < HANDED_OVER_KEPT);
        kept.iter().map(|(h, _)| h.clone()).collect()
    }
}

/// Brings `apps` to the desired state. Returns the errors of apps that
/// could not be started (the others are applied regardless).
pub(crate) async fn sync(
    ctx: &Context,
    apps: &mut BTreeMap<AppName, LocalApp>,
    desired: Vec<AppAssignment>,
    seen: Option<StatusMark>,
) -> Vec<String> {
    let mut errors = Vec::new();
    ctx.outbox
        .checkpoints()
        .set_duties(checkpoint_duties(&desired, &ctx.name));
    let next_status = ctx.status_seq.load(Ordering::SeqCst) + 1;
    let mut desired: BTreeMap<AppName, AppAssignment> = desired
        .into_iter()
        .filter(|a| !share::all(a, &ctx.name).is_empty())
        .map(|a| (a.app.clone(), a))
        .collect();
    let received: Vec<AppAssignment> = desired.values().cloned().collect();
    let names: Vec<AppName> = apps.keys().cloned().collect();
    for name in names {
        let app = apps.get_mut(&name).expect("listed");
        app.note_stalled(next_status);
        match share::change(
            &app.assignment,
            desired.get(&name),
            &ctx.name,
            app.complete(),
        ) {
            Change::None => {
                app.confirm_stalled(ctx, seen);
                desired.remove(&name);
            }
            Change::Promote(promote) => {
                for process in &promote {
                    app.running.promote(process.as_str());
                    tracing::warn!(app = %name, process = %process, "standby promoted: its outputs are live");
                }
                app.assignment = desired.remove(&name).expect("promoted to it");
                app.confirm_stalled(ctx, seen);
            }
            Change::PromoteFirst(promote) => {
                for process in &promote {
                    app.running.promote(process.as_str());
                    tracing::warn!(app = %name, process = %process, "standby promoted: its outputs are live (the rest of the change follows)");
                }
                app.assignment = share::promoted(&app.assignment, &promote, &ctx.name);
                app.confirm_stalled(ctx, seen);
                desired.remove(&name);
            }
            Change::Restart | Change::Stop => {
                if let Err(e) = restart(ctx, apps, &name, desired.remove(&name), seen).await {
                    errors.push(format!("{e:#}"));
                }
            }
        }
    }
    for (name, assignment) in desired {
        let fresh = async {
            let prepared = prepare(ctx, assignment).await?;
            start(
                ctx,
                prepared,
                HashMap::new(),
                BTreeMap::new(),
                REPLICA_RETRY_FIRST,
            )
            .await
        };
        match fresh.await {
            Ok(app) => {
                apps.insert(name, app);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    for e in &errors {
        tracing::error!("{e}");
    }
    let settled = errors.is_empty()
        && apps.len() == received.len()
        && received.iter().all(|a| {
            apps.get(&a.app).is_some_and(|local| {
                local.assignment == *a && local.complete() && !local.wants_sync()
            })
        });
    ctx.settled.store(settled, Ordering::SeqCst);
    errors
}

/// What `desired` asks of this node's checkpoints: the peer of each
/// process placed here, and the processes it is the peer of.
fn checkpoint_duties(desired: &[AppAssignment], me: &NodeName) -> Duties {
    let mut duties = Duties::default();
    for a in desired {
        for (process, peer) in &a.checkpoint_peers {
            let who = ProcessRef::new(a.app.clone(), process.clone());
            if peer == me {
                duties.keep.insert(who);
            } else if a.placement.get(process) == Some(me) {
                duties.peers.insert(who, peer.clone());
            }
        }
    }
    duties
}

/// Stops the share of `name` and starts `next` in its place (if any). The
/// new share subscribes before the old one stops, so no message falls
/// between them (copies of what the old share took are dropped). A
/// process held after a stall stays held in the new share unless `seen`
/// confirms it: a `Sync` written before the controller heard from the node
/// again must not put it live.
async fn restart(
    ctx: &Context,
    apps: &mut BTreeMap<AppName, LocalApp>,
    name: &AppName,
    next: Option<AppAssignment>,
    seen: Option<StatusMark>,
) -> Result<()> {
    let attempt = apps.get_mut(name).and_then(|a| a.next_attempt.take());
    let backoff = attempt.as_ref().map_or(REPLICA_RETRY_FIRST, |a| a.backoff);
    let next = match next {
        Some(assignment) => Some(match attempt {
            Some(attempt) if attempt.prepared.assignment == assignment => Ok(attempt.prepared),
            _ => prepare(ctx, assignment).await,
        }),
        None => None,
    };
    let mut old = apps.remove(name).expect("listed");
    let was_live = share::live(&old.assignment, &ctx.name);
    let stopped = old.running.stop_with_snapshots().await;
    let mut snapshots = stopped.snapshots;
    // A stall noticed only now (the node resumed and this `Sync` was
    // already queued) is one the controller cannot have seen yet.
    let next_status = ctx.status_seq.load(Ordering::SeqCst) + 1;
    for process in stopped.held {
        old.stalled.entry(process).or_insert(next_status);
    }
    old.stalled.retain(|_, needs| !seen_since(seen, *needs));
    tracing::info!(app = %name, "stopped this node's share ({} processes)", snapshots.len());
    let staying = match &next {
        Some(Ok(next)) => next.local(),
        _ => BTreeSet::new(),
    };
    // Live processes leaving hand their state over; a replica leaving
    // just stops, and so does a process still held after a stall: it
    // computed on from a skip, so its state is no longer the process's
    // (the copy the controller placed elsewhere has that).
    for process in old.stalled.keys().filter(|p| !staying.contains(*p)) {
        tracing::warn!(app = %name, process = %process, "held since a stall and placed elsewhere: stopped, its state not handed over");
    }
    snapshots.retain(|p, _| {
        staying.contains(p) || (was_live.contains(p) && !old.stalled.contains_key(p))
    });
    let leaving: Vec<ProcessName> = snapshots
        .keys()
        .filter(|p| !staying.contains(*p))
        .cloned()
        .collect();
    for process in leaving {
        let snapshot = snapshots.remove(&process).expect("listed");
        hand_over(ctx, &old.assignment, process, snapshot);
    }
    match next {
        Some(prepared) => {
            let app = start(ctx, prepared?, snapshots, old.stalled, backoff).await?;
            apps.insert(name.clone(), app);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Keeps the final snapshot of a process that leaves this node as its
/// checkpoint (sent on to its peer), and notes the handover for the
/// node's status.
fn hand_over(ctx: &Context, assignment: &AppAssignment, process: ProcessName, snapshot: Snapshot) {
    let tag = snapshot.last_tag.unwrap_or(Tag::ZERO);
    let who = ProcessRef::new(assignment.app.clone(), process.clone());
    tracing::info!(process = %who, tag = %tag, "handing over");
    ctx.outbox.checkpoint(&who, snapshot);
    let handed = HandedOver {
        app: assignment.app.clone(),
        process,
        generation: assignment.generation,
        tag,
    };
    let mut kept = ctx.handed_over.lock().unwrap();
    kept.retain(|(h, _)| (&h.app, &h.process) != (&handed.app, &handed.process));
    kept.push((handed, Instant::now()));
}

/// A share about to start: its modules fetched, its manifest parsed and
/// its remote inputs subscribed (buffering until it runs).
struct Prepared {
    assignment: AppAssignment,
    manifest: AppManifest,
    live: BTreeSet<ProcessName>,
    replicas: BTreeSet<ProcessName>,
    inlet: PortInlet,
    subscribers: Vec<zenoh::pubsub::Subscriber<()>>,
    /// The app's tag when the subscriptions were in place.
    subscribed_at: Tag,
}

impl Prepared {
    fn local(&self) -> BTreeSet<ProcessName> {
        self.live.union(&self.replicas).cloned().collect()
    }
}

async fn prepare(ctx: &Context, assignment: AppAssignment) -> Result<Prepared> {
    let app = assignment.app.clone();
    let manifest = AppManifest::parse(
        &assignment.manifest,
        format!("app {app:?} from the controller"),
    )?;
    fetch::modules(&ctx.session, &ctx.keys, &ctx.modules, &manifest)
        .await
        .with_context(|| format!("app {:?}", app.as_str()))?;
    let live = share::live(&assignment, &ctx.name);
    let replicas = share::replicas(&assignment, &ctx.name);
    let local: BTreeSet<ProcessName> = live.union(&replicas).cloned().collect();
    let inlet = PortInlet::default();
    let mut subscribers = Vec::new();
    for c in &manifest.connections {
        if local.contains(&c.to.process) && !live.contains(&c.from.process) {
            let s =
                subscribe_port(&ctx.session, &ctx.keys, &manifest, &c.from, inlet.clone()).await?;
            subscribers.push(s);
        }
    }
    Ok(Prepared {
        subscribed_at: tag_now(assignment.epoch_unix_ns),
        assignment,
        manifest,
        live,
        replicas,
        inlet,
        subscribers,
    })
}

/// `held`: live processes that start with their outputs held (after a
/// stall, not confirmed yet), with the status that must be seen first.
/// `retry_in`: when replicas are missing, how long until the next attempt.
async fn start(
    ctx: &Context,
    prepared: Prepared,
    mut snapshots: HashMap<ProcessName, Snapshot>,
    mut held: BTreeMap<ProcessName, u64>,
    retry_in: Duration,
) -> Result<LocalApp> {
    let local = prepared.local();
    let (restored_from, missing_replicas) =
        fetch_checkpoints(ctx, &prepared, &local, &mut snapshots).await;
    let Prepared {
        assignment,
        manifest,
        replicas,
        inlet,
        subscribers,
        ..
    } = prepared;
    let app = assignment.app.clone();
    let running_here: BTreeSet<ProcessName> =
        local.difference(&missing_replicas).cloned().collect();
    held.retain(|p, _| running_here.contains(p) && !replicas.contains(p));
    let options = StartOptions {
        only: Some(running_here.clone()),
        restore: snapshots,
        remote: Some(ctx.outbox.remote_sink(&app)),
        start_ns: Some(start_ns(assignment.epoch_unix_ns)),
        checkpointing: Some(ctx.outbox.checkpointing(&app, ctx.checkpoint_every)),
        log_sink: Some(ctx.outbox.log_sink(&app)),
        record: None,
        standby: replicas.difference(&missing_replicas).cloned().collect(),
        held: held.keys().cloned().collect(),
        supervised: true,
    };
    let running = ctx
        .node
        .start_with(
            &manifest,
            &ctx.modules,
            &tokio::runtime::Handle::current(),
            options,
        )
        .with_context(|| format!("app {:?}", app.as_str()))?;
    inlet.connect(running.inlet());
    // A process running here again is no longer handed over from here.
    ctx.handed_over
        .lock()
        .unwrap()
        .retain(|(h, _)| h.app != app || !running_here.contains(&h.process));
    // Only the count at info: an app of thousands would log a page a line.
    tracing::info!(app = %app, generation = assignment.generation, processes = running_here.len(), "started this node's share");
    tracing::debug!(app = %app, processes = ?running_here, "this node's share");
    let next_attempt = match missing_replicas.is_empty() {
        true => None,
        false => next_attempt(ctx, &assignment, &missing_replicas, retry_in).await,
    };
    Ok(LocalApp {
        assignment,
        running,
        _subscribers: subscribers,
        restored_from,
        missing_replicas,
        next_attempt,
        stalled: held,
    })
}

/// Subscribes the next attempt at a share's `missing` replicas, due in
/// `retry_in`. If it cannot subscribe, the share runs on as it is and the
/// next sync prepares an attempt afresh.
async fn next_attempt(
    ctx: &Context,
    assignment: &AppAssignment,
    missing: &BTreeSet<ProcessName>,
    retry_in: Duration,
) -> Option<NextAttempt> {
    let app = &assignment.app;
    match prepare(ctx, assignment.clone()).await {
        Ok(prepared) => {
            tracing::info!(app = %app, replicas = ?missing, "next attempt at the missing replicas in {retry_in:?}");
            Some(NextAttempt {
                prepared,
                due: Instant::now() + retry_in,
                backoff: (retry_in * 2).min(REPLICA_RETRY_LAST),
            })
        }
        Err(e) => {
            tracing::warn!(app = %app, replicas = ?missing, "cannot subscribe the next attempt at the missing replicas: {e:#}");
            None
        }
    }
}

/// Adds the newest checkpoint any node holds of each process in `local`
/// that `snapshots` lacks. Returns the checkpoint tag each was restored
/// from, and the replicas that have no fresh enough checkpoint yet.
async fn fetch_checkpoints(
    ctx: &Context,
    prepared: &Prepared,
    local: &BTreeSet<ProcessName>,
    snapshots: &mut HashMap<ProcessName, Snapshot>,
) -> (HashMap<ProcessName, u64>, BTreeSet<ProcessName>) {
    let mut restored_from = HashMap::new();
    let mut missing_replicas = BTreeSet::new();
    // Each fetch asks every node and waits for all their answers: one at
    // a time, a share of hundreds of processes took seconds to start.
    let limit = Arc::new(Semaphore::new(FETCHES_IN_FLIGHT));
    let mut fetches = JoinSet::new();
    let mut found_here = Vec::new();
    let assignment = &prepared.assignment;
    for process in local.iter().filter(|p| !snapshots.contains_key(*p)) {
        let who = ProcessRef::new(assignment.app.clone(), process.clone());
        let replica = prepared.replicas.contains(process);
        let newest = assignment.checkpointed.get(process).copied();
        if !replica && newest.is_none() {
            continue;
        }
        let here = newest.filter(|_| !replica).and_then(|tag| {
            let own = ctx.outbox.checkpoints().newest_here(&who, tag)?;
            tracing::info!(process = %who, tag = %tag, "resuming from this node's copy of its newest checkpoint");
            Some(own)
        });
        if let Some(snapshot) = here {
            found_here.push((process.clone(), snapshot));
            continue;
        }
        let fresh = replica.then(|| prepared.subscribed_at.after(REPLICA_SYNC_MARGIN));
        let (session, keys, limit) = (ctx.session.clone(), ctx.keys.clone(), limit.clone());
        fetches.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let snapshot = fetch::checkpoint(&session, &keys, &who, fresh).await;
            (who, replica, snapshot)
        });
    }
    for (process, snapshot) in found_here {
        restored_from.insert(process.clone(), snapshot.last_tag.map_or(0, |t| t.0));
        snapshots.insert(process, snapshot);
    }
    while let Some(fetched) = fetches.join_next().await {
        let Ok((who, replica, snapshot)) = fetched else {
            continue;
        };
        let process = who.process.clone();
        match snapshot {
            Some(snapshot) => {
                restored_from.insert(process.clone(), snapshot.last_tag.map_or(0, |t| t.0));
                snapshots.insert(process, snapshot);
            }
            // A replica started fresh, or from a checkpoint older than its
            // subscription, would compute something else than its process,
            // and could later take over with the wrong state.
            None if replica => {
                tracing::warn!(process = %who, "no checkpoint of the process since this node subscribed to its inputs yet; its replica waits for one");
                missing_replicas.insert(process);
            }
            None => {}
        }
    }
    (restored_from, missing_replicas)
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The app's current tag, from its wall-clock epoch (0 before it).
fn tag_now(epoch_unix_ns: u64) -> Tag {
    Tag(unix_now_ns().saturating_sub(epoch_unix_ns))
}

/// `CLOCK_MONOTONIC` time of the app's tag 0, from its wall-clock epoch.
fn start_ns(epoch_unix_ns: u64) -> u64 {
    let unix_now = unix_now_ns();
    let mono_now = weft_runtime::rt::monotonic_ns();
    if epoch_unix_ns >= unix_now {
        mono_now + (epoch_unix_ns - unix_now)
    } else {
        mono_now.saturating_sub(unix_now - epoch_unix_ns)
    }
}

impl LocalApp {
    pub(crate) fn status(&self) -> Vec<ProcessStatus> {
        self.running
            .brief_reports()
            .into_iter()
            .map(|p| ProcessStatus {
                app: self.assignment.app.clone(),
                restored_from_tag: self.restored_from.get(&p.name).copied(),
                generation: self.assignment.generation,
                state: p.state,
                reason: p.reason,
                ticks: p.ticks,
                messages_in: p.messages_in,
                messages_out: p.messages_out,
                faults: p.faults,
                restarts: p.restarts,
                deadline_misses: p.deadline_misses,
                tardy: p.tardy,
                output_hash: p.output_hash,
                last_tag_ns: p.last_tag_ns,
                first_tag_ns: p.first_tag_ns,
                resume_lateness_ns: p.resume_lateness_ns,
                replica: p.standby,
                chain_mark: p.chain_marks.last().map(|m| ChainMark {
                    tag_ns: m.tag_ns,
                    output_hash: m.output_hash.clone(),
                }),
                last_output_hex: p.last_output_hex,
                last_fault: p.last_fault.map(|f| FaultNote {
                    kind: f.kind,
                    tag: f.tag,
                    message: f.message,
                }),
                name: p.name,
            })
            .collect()
    }

    /// The metrics of this app's processes here, for `/metrics` and the
    /// task monitor.
    pub(crate) fn metrics(&self) -> crate::metrics::AppMetrics {
        crate::metrics::AppMetrics {
            app: self.assignment.app.clone(),
            manifest: self.running.manifest().clone(),
            processes: self.running.metrics().to_vec(),
        }
    }

    /// The processes of this app that have a replica somewhere, whose
    /// progress the controller compares with their replica's.
    pub(crate) fn replicated(&self) -> impl Iterator<Item = ProcessRef> + '_ {
        let app = &self.assignment.app;
        self.assignment
            .standby
            .keys()
            .map(|p| ProcessRef::new(app.clone(), p.clone()))
    }

    pub(crate) async fn stop(self) {
        self.running.stop().await;
    }
}
