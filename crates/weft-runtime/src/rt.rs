//! Real-time plumbing for rt threads: `SCHED_FIFO`, CPU pinning, memory
//! locking and absolute-deadline sleeps on `CLOCK_MONOTONIC`.
//!
//! Releases use `clock_nanosleep(TIMER_ABSTIME)` on a precomputed release
//! time, never a relative sleep or a tokio timer: lateness in one period
//! does not accumulate, and the kernel's timer slack is the only error.

use std::sync::OnceLock;
use std::time::Duration;

use weft_types::RtClass;

/// Priority of rt process threads (of 1..=99; leaves room above for IRQ threads).
pub const RT_PRIORITY: i32 = 80;

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `deadline_ns` on `CLOCK_MONOTONIC` (returns at once if past).
pub fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; a null remainder is allowed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

/// Makes the calling thread an rt thread as far as permitted: SCHED_FIFO at
/// `priority` and pinned to `cpu`. Returns the class actually obtained.
pub fn make_current_thread_rt(priority: i32, cpu: Option<usize>) -> RtClass {
    if let Some(cpu) = cpu {
        // SAFETY: cpu_set_t is plain data; CPU_SET stays within its bounds for cpu < CPU_SETSIZE.
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
            set
        };
        if let Err(e) = set_affinity(&set) {
            tracing::warn!(cpu, "cannot pin rt thread: {e}");
        }
    }
    if set_policy(libc::SCHED_FIFO, priority).is_ok() {
        RtClass::Hard
    } else {
        RtClass::Soft
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_policy(policy: libc::c_int, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: valid policy and parameter for the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An rt process's thread, which leaves the rt CPU for work that takes as
/// long as the process's state is large (instantiating and restoring it,
/// its final snapshot): at `SCHED_FIFO` that work would hold the one rt
/// CPU from every other rt process for its whole length (a 64 MiB restore
/// kept a neighbour from running for 85 ms).
pub struct RtThread {
    priority: i32,
    cpu: Option<usize>,
    /// The CPUs the thread could run on before it was pinned.
    normal_cpus: libc::cpu_set_t,
}

impl RtThread {
    /// The calling thread, at normal priority until [`RtThread::rt`].
    pub fn current(priority: i32, cpu: Option<usize>) -> RtThread {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most its size.
        let normal_cpus = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            set
        };
        RtThread {
            priority,
            cpu,
            normal_cpus,
        }
    }

    /// SCHED_FIFO, pinned: see [`make_current_thread_rt`].
    pub fn rt(&self) -> RtClass {
        make_current_thread_rt(self.priority, self.cpu)
    }

    /// Runs `work` at normal priority on any of the thread's former CPUs.
    /// The thread is left at normal priority: call [`RtThread::rt`] to
    /// take up the rt schedule again.
    pub fn off_rt<T>(&self, work: impl FnOnce() -> T) -> T {
        if let Err(e) = set_policy(libc::SCHED_OTHER, 0) {
            tracing::debug!("cannot leave SCHED_FIFO: {e}");
        }
        if let Err(e) = set_affinity(&self.normal_cpus) {
            tracing::debug!("cannot unpin the rt thread: {e}");
        }
        work()
    }
}

/// The node's rt class, probed once on a throw-away thread (so the probe
/// does not change the caller's own scheduling). Warns when only soft.
pub fn node_rt_class() -> RtClass {
    static CLASS: OnceLock<RtClass> = OnceLock::new();
    *CLASS.get_or_init(|| {
        let class = std::thread::spawn(|| make_current_thread_rt(1, None)).join().unwrap_or(RtClass::Soft);
        if class == RtClass::Soft {
            tracing::warn!(
                "SCHED_FIFO is not permitted here: rt processes run at normal priority and this node is soft real-time \
                 (run as root or grant CAP_SYS_NICE for hard real-time scheduling)"
            );
        }
        class
    })
}

/// Locks the node's memory so rt threads never page-fault on swapped-out
/// pages. `MCL_ONFAULT` locks pages as they are touched instead of
/// populating every mapping at once (the pooling allocator reserves
/// terabytes of address space it never touches).
pub fn lock_memory() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: mlockall has no memory-safety preconditions.
        let rc =
            unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
        if rc != 0 {
            tracing::warn!(
                "mlockall failed ({}); rt threads may page-fault",
                std::io::Error::last_os_error()
            );
        }
    });
}

/// The CPU rt threads are pinned to: the last one, leaving the others to
/// the best-effort workers. `None` on a single-CPU machine.
pub fn rt_cpu() -> Option<usize> {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (n > 1).then_some(n - 1)
}

/// Sleeps until `deadline_ns` but wakes every `slice` to check `stop`;
/// returns false if stopped first. For long waits such as restart backoff.
pub fn sleep_until_or_stop(
    deadline_ns: u64,
    stop: &std::sync::atomic::AtomicBool,
    slice: Duration,
) -> bool {
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        let now = monotonic_ns();
        if now >= deadline_ns {
            return true;
        }
        sleep_until_ns(deadline_ns.min(now + slice.as_nanos() as u64));
    }
}
