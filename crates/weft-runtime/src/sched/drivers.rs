//! The loops that drive a process: one dedicated rt thread, or one be task
//! on tokio. Each starts an incarnation, runs calls at their releases (or
//! as messages arrive), books them with the supervisor, and restarts or
//! stops as the supervisor decides.

use std::time::Duration;

use super::releases::Release;
use super::supervisor::{Supervisor, Timing};
use crate::process::{Process, run_sync};
use crate::rt::{self, monotonic_ns};
use crate::types::Fault;

/// How often a waiting rt thread looks at the stop flag.
const STOP_SLICE: Duration = Duration::from_millis(20);

/// Drives an rt process on the calling (dedicated) thread until stopped,
/// failed or parked.
pub(crate) fn run_rt(mut sup: Supervisor) {
    let deadline = sup
        .program
        .spec
        .effective_deadline()
        .expect("rt processes have a period")
        .as_nanos() as u64;
    let thread = rt::RtThread::current(rt::RT_PRIORITY, rt::rt_cpu());
    let mut process: Option<Process> = None;
    while !sup.stop.is_set() {
        let Some(p) = process.as_mut() else {
            match thread.off_rt(|| run_sync(sup.start())) {
                Ok((p, _)) => {
                    thread.rt();
                    process = Some(p);
                }
                Err(fault) => {
                    if !rt_backoff(&mut sup, fault) {
                        break;
                    }
                }
            }
            continue;
        };
        let release = next_release(&mut sup);
        rt::sleep_until_ns(release.at_ns);
        if sup.stop.is_set() {
            break;
        }
        let woke = monotonic_ns();
        let result = run_sync(p.tick(release.tag));
        let done = monotonic_ns();
        sup.releases.as_mut().expect("periodic").advance();
        let timing = Timing {
            jitter: Some(Duration::from_nanos(woke.saturating_sub(release.at_ns))),
            exec: Duration::from_nanos(done - woke),
            missed_deadline: !release.catching_up && done > release.at_ns + deadline,
            catching_up: release.catching_up,
        };
        match sup.complete(p, release.tag, result, timing) {
            Err(fault) => {
                process = None;
                if !rt_backoff(&mut sup, fault) {
                    break;
                }
            }
            // Catching up runs releases back to back; let the other rt
            // threads of the same priority on this CPU have their turn.
            Ok(()) if release.catching_up => std::thread::yield_now(),
            Ok(()) => {}
        }
    }
    thread.off_rt(|| sup.finish(process));
}

/// The next release of a periodic process, after a skip-ahead if it fell
/// too far behind.
fn next_release(sup: &mut Supervisor) -> Release {
    let releases = sup.releases.as_mut().expect("a periodic process");
    let (release, skip) = releases.next(monotonic_ns());
    if let Some(skip) = skip {
        sup.skipped(skip);
    }
    release
}

/// Books a fault and waits out its backoff; false when the process is
/// done (failed, parked or stopped).
fn rt_backoff(sup: &mut Supervisor, fault: Fault) -> bool {
    match sup.on_fault(fault) {
        Some(at) => rt::sleep_until_or_stop(at, sup.stop.flag(), STOP_SLICE),
        None => false,
    }
}

/// Sleeps until `at_ns` (monotonic) unless stopped first; false if stopped.
async fn sleep_or_stop(sup: &Supervisor, at_ns: u64) -> bool {
    let delay = Duration::from_nanos(at_ns.saturating_sub(monotonic_ns()));
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = sup.stop.wait() => false,
    }
}

/// What a be loop does after a call or a start.
enum Next {
    Go,
    /// A stop cancelled a call midway: that state is not a call boundary.
    Cancelled,
    Done,
}

/// Drives a be process on the tokio runtime until stopped, failed or parked.
pub(crate) async fn run_be(mut sup: Supervisor) {
    let mut process: Option<Process> = None;
    let mut cancelled = false;
    while !sup.stop.is_set() {
        let Some(p) = process.as_mut() else {
            match sup.start().await {
                Ok((p, _)) => process = Some(p),
                Err(fault) => match sup.on_fault(fault) {
                    Some(at) if sleep_or_stop(&sup, at).await => {}
                    _ => break,
                },
            }
            continue;
        };
        let outcome = if sup.releases.is_some() {
            be_tick(&mut sup, p).await
        } else {
            be_message(&mut sup, p).await
        };
        let fault = match outcome {
            Ok(Next::Go) => continue,
            Ok(Next::Cancelled) => {
                cancelled = true;
                break;
            }
            Ok(Next::Done) => break,
            Err(fault) => fault,
        };
        process = None;
        match sup.on_fault(fault) {
            Some(at) if sleep_or_stop(&sup, at).await => {}
            _ => break,
        }
    }
    sup.finish(if cancelled { None } else { process });
}

/// How long a be call in progress when its process is stopped may still
/// run to its end.
const STOP_GRACE: Duration = Duration::from_millis(250);

/// Runs a be call to its end, or `None` if the process was stopped and the
/// call did not end within [`STOP_GRACE`] after. A be call yields at epoch
/// checks (every millisecond of its run, and at its first check after the
/// process slept), so cancelling it at the first yield after a stop threw
/// away the final snapshot of a process that was about to reach a boundary
/// (a handover then restarted it from an older checkpoint); only a call that
/// is still busy after the grace is cancelled mid-way, and has none.
async fn finish_or_cancel<T>(
    sup: &Supervisor,
    call: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(call);
    tokio::select! {
        biased;
        result = &mut call => Some(result),
        _ = sup.stop.wait() => tokio::time::timeout(STOP_GRACE, &mut call).await.ok(),
    }
}

/// One periodic be call at its release.
async fn be_tick(sup: &mut Supervisor, p: &mut Process) -> Result<Next, Fault> {
    let release = next_release(sup);
    sup.releases.as_mut().expect("periodic").advance();
    if !sleep_or_stop(sup, release.at_ns).await {
        return Ok(Next::Done);
    }
    let woke = monotonic_ns();
    // A stop that came before the call is a stop at a boundary: the call
    // is not started at all. One that comes during it lets it finish (see
    // `finish_or_cancel`).
    if sup.stop.is_set() {
        return Ok(Next::Done);
    }
    let Some(result) = finish_or_cancel(sup, p.tick(release.tag)).await else {
        return Ok(Next::Cancelled);
    };
    let timing = Timing {
        jitter: Some(Duration::from_nanos(woke.saturating_sub(release.at_ns))),
        exec: Duration::from_nanos(monotonic_ns() - woke),
        missed_deadline: false,
        catching_up: release.catching_up,
    };
    sup.complete(p, release.tag, result, timing)?;
    Ok(Next::Go)
}

/// One message-driven be call, once a message is there.
async fn be_message(sup: &mut Supervisor, p: &mut Process) -> Result<Next, Fault> {
    let inbox = sup.env.inbox.clone();
    inbox.watch();
    let Some(message) = inbox.pop_next() else {
        tokio::select! {
            _ = inbox.arrived.notified() => {}
            _ = sup.stop.wait() => return Ok(Next::Done),
        }
        return Ok(Next::Go);
    };
    let woke = monotonic_ns();
    // The message is taken: a stop that comes meanwhile lets the call
    // finish (see `finish_or_cancel`).
    let Some(result) = finish_or_cancel(sup, p.message(&message)).await else {
        return Ok(Next::Cancelled);
    };
    let (source, seq) = (
        sup.env.inbox.roster().name(message.key.source).clone(),
        message.key.seq,
    );
    sup.record(message.key.tag, || crate::record::Event::Handled {
        source,
        seq,
    });
    let timing = Timing {
        jitter: None,
        exec: Duration::from_nanos(monotonic_ns() - woke),
        missed_deadline: false,
        catching_up: false,
    };
    sup.complete(p, message.key.tag, result, timing)?;
    Ok(Next::Go)
}
