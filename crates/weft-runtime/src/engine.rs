//! The wasmtime engines a node runs on and the compiled-artefact cache.
//!
//! A node has two engines because the two execution classes need different
//! code: rt processes are metered with fuel (deterministic CPU budget), be
//! processes with epoch interruption (cheap, lets a busy module yield its
//! worker). Both share the deterministic settings: NaN canonicalisation, no
//! threads, no relaxed SIMD, a fixed maximum stack, and the pooling
//! allocator so instantiation is a few microseconds.
//!
//! A compiled module is loaded once per engine and shared by every process
//! that runs it: a thousand processes of one module map its code once, and
//! start without reading the artefact cache again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

use weft_types::ModuleDigest;

use crate::module::{LoadedModule, REWRITE_VERSION};

/// How often the be engine's epoch advances: the granularity at which a busy
/// be process yields and at which its deadline is checked.
pub const EPOCH_PERIOD: Duration = Duration::from_millis(1);

/// Node-wide engine settings, builder style.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instance slots in each engine's pool: the most processes of one class.
    pub max_processes: u32,
    /// Largest linear memory any process may have; a process whose
    /// manifest asks for more is refused when it is prepared.
    pub max_memory: u64,
    /// Wasm stack limit: deep recursion traps here, not in the host.
    pub max_wasm_stack: usize,
    /// Where compiled artefacts are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator (fast instantiation) or on-demand mmap.
    pub pooling: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_processes: 1000,
            max_memory: weft_types::limits::MAX_MEMORY,
            max_wasm_stack: 512 << 10,
            cache_dir: default_cache_dir(),
            pooling: true,
        }
    }
}

impl RuntimeConfig {
    pub fn max_processes(mut self, n: u32) -> Self {
        self.max_processes = n;
        self
    }
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }
    pub fn pooling(mut self, on: bool) -> Self {
        self.pooling = on;
        self
    }
}

/// `$WEFT_CACHE_DIR`, else `$XDG_CACHE_HOME/weft`, else `~/.cache/weft`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_CACHE_DIR") {
        return Some(dir.into());
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(Path::new(&dir).join("weft"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/weft"))
}

/// Memory mappings (VMAs) the pooling allocator reserves per instance slot
/// of an engine with fiber stacks (the be engine) at start: a stack and its
/// guard page.
const MAPPINGS_PER_SLOT: u64 = 2;
/// Mappings a running process adds: its memory made accessible inside the
/// slot's reservation splits it in three.
const MAPPINGS_PER_PROCESS: u64 = 2;
/// Room left for everything else (threads, heap, compiled code, sockets).
const MAPPING_HEADROOM: u64 = 1024;

/// Refuses a pool that the kernel's limit on memory mappings
/// (`vm.max_map_count`) cannot hold once its processes run, before any is
/// reserved: otherwise `engines` engines of `max_processes` slots either
/// fail to start with a bare ENOMEM or start and fail at some later
/// instantiation. `engines` counts the engines that reserve fiber stacks;
/// `in_use` is how many mappings the process has already.
pub fn check_mapping_budget(
    max_processes: u32,
    engines: u64,
    max_map_count: u64,
    in_use: u64,
) -> Result<()> {
    let n = u64::from(max_processes);
    let per_process = engines * MAPPINGS_PER_SLOT + MAPPINGS_PER_PROCESS;
    let needed = n * per_process + MAPPING_HEADROOM;
    let room = max_map_count.saturating_sub(in_use);
    if needed <= room {
        return Ok(());
    }
    let fits = room.saturating_sub(MAPPING_HEADROOM) / per_process;
    anyhow::bail!(
        "room for {n} processes needs about {needed} memory mappings ({} per process slot \
         reserved at start, {MAPPINGS_PER_PROCESS} more per running process), but this kernel \
         allows {max_map_count} (vm.max_map_count) and {in_use} are in use: allow at most \
         {fits} processes, or raise the limit (for example `sysctl -w vm.max_map_count=262144`)",
        engines * MAPPINGS_PER_SLOT
    )
}

/// [`check_mapping_budget`] against this machine's limit; a kernel that
/// does not say (not Linux) is not checked.
pub(crate) fn check_mappings_here(config: &RuntimeConfig, engines: u64) -> Result<()> {
    if !config.pooling {
        return Ok(());
    }
    check_address_budget(config.max_processes, config.max_memory)?;
    let limit = max_map_count();
    let in_use = std::fs::read_to_string("/proc/self/maps").map(|s| s.lines().count() as u64);
    match (limit, in_use) {
        (Some(limit), Ok(in_use)) => {
            check_mapping_budget(config.max_processes, engines, limit, in_use)
        }
        _ => Ok(()),
    }
}

/// The address space a process may use on x86-64 and aarch64 Linux.
const USER_ADDRESS_SPACE: u64 = 1 << 47;
/// Memory a process needs at the least: one 64 KiB page and its host state.
const MIN_PROCESS_MEMORY: u64 = 80 << 10;

/// How many processes a node fits, when it is not told: half of what the
/// kernel's mapping limit leaves room for (threads, sockets and checkpoint
/// tracking take more as the node runs), half of the address space at one
/// reservation of `max_memory` per memory slot (two engines, two memories
/// per process), and what the machine's memory holds at the smallest
/// process. The least of the three, at least 1.
pub fn fitting_processes(max_map_count: u64, in_use: u64, max_memory: u64, memory: u64) -> u32 {
    let per_process = MAPPINGS_PER_SLOT + MAPPINGS_PER_PROCESS;
    let by_maps = max_map_count.saturating_sub(in_use + MAPPING_HEADROOM) / per_process / 2;
    let by_address = USER_ADDRESS_SPACE / 2 / (4 * (max_memory + (64 << 10)));
    let by_memory = memory / MIN_PROCESS_MEMORY;
    let fits = by_maps.min(by_address).min(by_memory).max(1);
    u32::try_from(fits).unwrap_or(u32::MAX)
}

/// Refuses a pool whose memory reservations (two engines, two memories per
/// process, each `max_memory` plus a guard) do not fit in the address space.
pub fn check_address_budget(max_processes: u32, max_memory: u64) -> Result<()> {
    let per_process = 4 * (max_memory + (64 << 10));
    let fits = USER_ADDRESS_SPACE / per_process;
    if u64::from(max_processes) <= fits {
        return Ok(());
    }
    anyhow::bail!(
        "room for {max_processes} processes needs {} TiB of address space ({} MiB reserved per \
         process for memories of up to {} MiB), but a process has 128 TiB: allow at most {fits} \
         processes, or a smaller largest memory",
        u64::from(max_processes).saturating_mul(per_process) >> 40,
        per_process >> 20,
        max_memory >> 20
    )
}

/// [`fitting_processes`] for this machine and `config`'s `max_memory`,
/// rounded down to a hundred. It counts none of the mappings the node
/// already has (the headroom is for them), so machines alike get the same
/// default, and their nodes offer placement the same room.
pub fn machine_max_processes(config: &RuntimeConfig) -> u32 {
    let limit = max_map_count().unwrap_or(65_530);
    let fits = fitting_processes(limit, 0, config.max_memory, total_memory());
    (fits / 100 * 100).max(fits.min(100))
}

/// The kernel's limit on memory mappings per process, where it says.
fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// This machine's memory in bytes.
pub fn total_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages.max(0) as u64) * (size.max(0) as u64)
}

/// Which metering an engine compiles in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metering {
    Fuel,
    Epoch,
    None,
}

/// The common deterministic configuration; `metering` picks fuel or epochs.
pub fn engine_config(config: &RuntimeConfig, metering: Metering) -> Config {
    let mut c = Config::new();
    // The threads proposal is off because wasmtime's `threads` cargo
    // feature is not enabled: shared memories do not even validate.
    c.cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(false)
        .max_wasm_stack(config.max_wasm_stack)
        .consume_fuel(metering == Metering::Fuel)
        .epoch_interruption(metering == Metering::Epoch);
    if config.pooling {
        let mut pool = PoolingAllocationConfig::default();
        // A process may be a small group of linked modules.
        pool.total_core_instances(config.max_processes.saturating_mul(2))
            .total_memories(config.max_processes.saturating_mul(2))
            .total_tables(config.max_processes.saturating_mul(2))
            // Only calls that may suspend (be processes, epoch-metered)
            // run on fiber stacks; each reserved stack costs two memory
            // mappings, so the rt engine reserves none.
            .total_stacks(if metering == Metering::Epoch {
                config.max_processes
            } else {
                0
            })
            .max_memory_size(config.max_memory as usize)
            // Keep one page of each freed memory resident so re-instantiation
            // does not fault it in again; more would keep every slot ever
            // used resident (64 KiB each kept 280 MB resident on a node
            // that had run 4,400 small processes).
            .linear_memory_keep_resident(4 << 10);
        // Reserve only `max_memory` of address space per memory slot instead
        // of wasmtime's 4 GiB + guard: with 4 GiB slots a node runs out of
        // 47-bit address space near 5,000 processes. The price is explicit
        // bounds checks, paid equally by every engine weft compares.
        c.memory_reservation(config.max_memory)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(0);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// A compiled module ready to instantiate in one engine.
#[derive(Clone)]
pub struct CompiledModule {
    pub loaded: Arc<LoadedModule>,
    pub module: Module,
    /// True when the artefact came from the cache instead of Cranelift.
    pub from_cache: bool,
}

/// One engine plus its artefact cache.
#[derive(Clone)]
pub struct WeftEngine {
    pub engine: Engine,
    pub metering: Metering,
    cache_dir: Option<PathBuf>,
    compat: u64,
    max_memory: u64,
    /// Modules compiled or loaded, by digest; emptied when it reaches
    /// [`MODULES_KEPT`] (a module still running stays alive in its
    /// processes, and is loaded once more by the next that needs it).
    loaded: Arc<Mutex<HashMap<ModuleDigest, Module>>>,
}

/// How many compiled modules an engine keeps for processes to come.
const MODULES_KEPT: usize = 256;

impl WeftEngine {
    pub fn new(config: &RuntimeConfig, metering: Metering) -> Result<WeftEngine> {
        let engine = Engine::new(&engine_config(config, metering))
            .map_err(anyhow::Error::from)
            .context("cannot create the wasmtime engine")?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        REWRITE_VERSION.hash(&mut hasher);
        Ok(WeftEngine {
            engine,
            metering,
            cache_dir: config.cache_dir.clone(),
            compat: hasher.finish(),
            max_memory: config.max_memory,
            loaded: Arc::default(),
        })
    }

    /// Refuses a process this engine's pool cannot hold.
    pub fn check_limits(&self, spec: &weft_manifest::ProcessSpec) -> Result<()> {
        if spec.memory > self.max_memory {
            anyhow::bail!(
                "process {:?}: memory {} bytes is more than this node's max_memory ({} bytes)",
                spec.name.as_str(),
                spec.memory,
                self.max_memory
            );
        }
        Ok(())
    }

    /// The compiled module for `loaded`: one this engine has already, or
    /// its artefact from the cache, or compiled now.
    pub fn compile(&self, loaded: Arc<LoadedModule>) -> Result<CompiledModule> {
        let known = self.loaded.lock().unwrap().get(&loaded.digest).cloned();
        if let Some(module) = known {
            return Ok(CompiledModule {
                loaded,
                module,
                from_cache: true,
            });
        }
        let compiled = self.load_or_compile(loaded)?;
        let mut kept = self.loaded.lock().unwrap();
        if kept.len() >= MODULES_KEPT {
            kept.clear();
        }
        kept.insert(compiled.loaded.digest, compiled.module.clone());
        Ok(compiled)
    }

    /// Loads the artefact from the cache when one exists for this module
    /// digest and engine configuration, or compiles the module.
    fn load_or_compile(&self, loaded: Arc<LoadedModule>) -> Result<CompiledModule> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{:016x}.cwasm", loaded.digest, self.compat)));
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the cache directory holds only artefacts this code
            // serialised for this exact engine configuration (the file name
            // carries the compatibility hash); wasmtime checks the header too.
            match unsafe { Module::deserialize_file(&self.engine, path) } {
                Ok(module) => {
                    return Ok(CompiledModule {
                        loaded,
                        module,
                        from_cache: true,
                    });
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached artefact: {e}")
                }
            }
        }
        let module = Module::new(&self.engine, &loaded.rewritten)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot compile module {:?}", loaded.info.name))?;
        if let Some(path) = cached
            && let Err(e) = store_artefact(&path, &module)
        {
            tracing::warn!(path = %path.display(), "cannot cache compiled module: {e:#}");
        }
        Ok(CompiledModule {
            loaded,
            module,
            from_cache: false,
        })
    }
}

fn store_artefact(path: &Path, module: &Module) -> Result<()> {
    let dir = path.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir)?;
    let bytes = module.serialize().map_err(anyhow::Error::from)?;
    // Write then rename so a concurrent reader never sees half a file.
    let tmp = dir.join(format!(
        ".{}.{}",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Advances an engine's epoch every [`EPOCH_PERIOD`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_PERIOD);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_mapping_budget;

    #[test]
    fn a_pool_must_fit_the_address_space() {
        assert!(super::check_address_budget(150_000, 256 << 20).is_err());
        assert!(super::check_address_budget(100_000, 256 << 20).is_ok());
        assert!(super::check_address_budget(100_000, 64 << 20).is_ok());
        let e = super::check_address_budget(200_000, 256 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("address space") && e.contains("at most 131040"),
            "{e}"
        );
    }

    /// The default node size: the least of what mappings, address space
    /// and memory allow.
    #[test]
    fn a_node_fits_what_the_machine_allows() {
        const GIB: u64 = 1 << 30;
        // (max_map_count, in_use, max_memory, memory, fits)
        let cases = [
            (65_530, 500, 256 << 20, 16 * GIB, 8_000),
            (1_048_576, 500, 256 << 20, 16 * GIB, 65_520),
            (1_048_576, 500, 64 << 20, 16 * GIB, 130_881),
            (1_048_576, 500, 64 << 20, GIB, 13_107),
            (1_000, 2_000, 64 << 20, GIB, 1),
        ];
        for (limit, in_use, max_memory, memory, fits) in cases {
            assert_eq!(
                super::fitting_processes(limit, in_use, max_memory, memory),
                fits,
                "limit {limit}, {in_use} in use, max_memory {max_memory}, memory {memory}"
            );
        }
    }

    #[test]
    fn the_mapping_budget_follows_the_kernel_limit() {
        // (max_processes, engines, max_map_count, in_use, fits)
        let cases = [
            (256, 1, 65_530, 100, true),
            (16_000, 1, 65_530, 100, true),
            (10_000, 2, 65_530, 100, true),
            (11_000, 2, 65_530, 100, false),
            (17_000, 1, 65_530, 100, false),
            (60_000, 1, 262_144, 100, true),
            (16_000, 1, 65_530, 10_000, false),
            (0, 1, 0, 0, false),
        ];
        for (n, engines, limit, in_use, fits) in cases {
            let got = check_mapping_budget(n, engines, limit, in_use);
            assert_eq!(
                got.is_ok(),
                fits,
                "{n} processes, limit {limit}, {in_use} in use: {got:?}"
            );
        }
        let e = check_mapping_budget(20_000, 1, 65_530, 100)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vm.max_map_count") && e.contains("at most 16101 processes"),
            "{e}"
        );
    }
}
