//! The host side of the ABI: the per-process state a store carries and the
//! `weft` host functions that read and change it.
//!
//! Host functions never trust the guest: every pointer range is checked
//! against the caller's own memory (a bad one traps that process only),
//! every length is bounded, and every failure a guest can cause is a status
//! code or a trap, never a panic in the node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use wasmtime::{Caller, Extern, Linker, Memory, ResourceLimiter};
use wasmtime::{Result, bail};
use weft_abi::{IMPORT_MODULE, exports, imports, log_level, status};
use weft_manifest::ProcessSpec;

use bytes::Bytes;
use weft_types::{PortHandle, Tag};

use crate::device::{Device, Devices};
use crate::inbox::Inbox;
use crate::record::{Event, ProcessRecorder};
use crate::throttle::Throttle;
use crate::types::{LogLine, Output};

/// Longest log line a guest can emit; longer ones are cut.
const MAX_LOG_BYTES: usize = 4096;
/// Most log lines one call hands to the log sink; the rest still reach
/// the node's own log.
const MAX_LOG_LINES_PER_CALL: usize = 256;
/// Longest kv key.
const MAX_KEY_BYTES: usize = 1024;

/// Everything a process's store carries besides its wasm state.
pub struct Host {
    pub(crate) spec: Arc<ProcessSpec>,
    /// The tag of the call in progress.
    pub(crate) tag: Tag,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) kv: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) inbox: Arc<Inbox>,
    /// Outputs of the call in progress; published only if the call succeeds.
    pub(crate) outbox: Vec<Output>,
    /// Messages refused because they were over `max_message`.
    pub(crate) refused: u64,
    pub(crate) devices: Devices,
    /// Devices opened by the guest, by handle; names so a restore can reopen them.
    pub(crate) opened: Vec<String>,
    /// The call's device writes, by handle, in order: all of them go into
    /// the hash chain; those to fenced devices carry the device, to be
    /// applied after the call (see `Device::fenced`).
    pub(crate) writes: Vec<CallWrite>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) wasi: Option<wasmtime_wasi::p1::WasiP1Ctx>,
    /// When the call in progress started and how long it may take (be processes).
    pub(crate) call_started: Instant,
    pub(crate) deadline: Option<Duration>,
    /// Keep the call's log lines for the process's log sink (see
    /// [`LogLine`]); off when nothing publishes them.
    pub(crate) keep_logs: bool,
    /// Log lines of the call in progress.
    pub(crate) logs: Vec<LogLine>,
    pub(crate) recorder: Option<ProcessRecorder>,
    /// The process is one module, so every host call's caller has the same
    /// memory: `memory` keeps it once found. A process of linked modules
    /// looks up each caller's own.
    pub(crate) one_module: bool,
    memory: Option<Memory>,
    /// Rate limits of the warnings this process's calls can trigger.
    warnings: Warnings,
}

/// A device write made during the call in progress.
pub(crate) struct CallWrite {
    pub handle: i32,
    pub data: Vec<u8>,
    /// The device, when it is fenced: the write is applied after the call.
    pub fenced: Option<Arc<dyn Device>>,
}

/// One throttle per kind of warning a guest can trigger (see `throttle`).
#[derive(Default)]
struct Warnings {
    oversized: Throttle,
    not_granted: Throttle,
    write_refused: Throttle,
}

impl Host {
    pub(crate) fn new(
        spec: Arc<ProcessSpec>,
        seed: u64,
        inbox: Arc<Inbox>,
        devices: Devices,
    ) -> Host {
        let limiter = MemoryLimiter {
            spec: spec.clone(),
            exceeded: None,
        };
        Host {
            deadline: spec.effective_deadline(),
            spec,
            tag: Tag::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            kv: BTreeMap::new(),
            inbox,
            outbox: Vec::new(),
            refused: 0,
            devices,
            opened: Vec::new(),
            writes: Vec::new(),
            limiter,
            wasi: None,
            call_started: Instant::now(),
            keep_logs: false,
            logs: Vec::new(),
            recorder: None,
            one_module: false,
            memory: None,
            warnings: Warnings::default(),
        }
    }

    fn opened_device(&self, handle: i32) -> Option<Arc<dyn Device>> {
        let name = self.opened.get(usize::try_from(handle).ok()?)?;
        self.devices.get(name).cloned()
    }

    /// `handle` as one of this process's output ports, if it is one.
    fn output_port(&self, handle: i32) -> Option<PortHandle> {
        let inputs = self.spec.inputs.len() as i32;
        (handle >= inputs && handle < inputs + self.spec.outputs.len() as i32)
            .then_some(PortHandle(handle))
    }

    /// `handle` as one of this process's input ports, if it is one.
    fn input_port(&self, handle: i32) -> Option<PortHandle> {
        (handle >= 0 && handle < self.spec.inputs.len() as i32).then_some(PortHandle(handle))
    }
}

/// Caps linear memory at the process's limit and remembers why a growth
/// was refused, so the fault report can say so instead of "trap".
pub(crate) struct MemoryLimiter {
    spec: Arc<ProcessSpec>,
    pub(crate) exceeded: Option<String>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.spec.memory {
            let reason = format!(
                "memory limit exceeded: process {:?} asked for {} bytes, its limit is {} bytes (grew from {})",
                self.spec.name.as_str(),
                desired,
                self.spec.memory,
                current
            );
            self.exceeded = Some(reason.clone());
            return Err(wasmtime::Error::msg(reason));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The caller's own memory. Every module gets `weft:memory:0` from the
/// loader's rewrite, so this works for linked library modules too.
fn memory(caller: &mut Caller<'_, Host>) -> Result<Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    let Some(Extern::Memory(memory)) = caller.get_export(exports::FIRST_MEMORY) else {
        bail!("host call needs a linear memory but the calling module has none");
    };
    if caller.data().one_module {
        caller.data_mut().memory = Some(memory);
    }
    Ok(memory)
}

fn range(ptr: i32, len: i32, memory_len: usize, what: &str) -> Result<std::ops::Range<usize>> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > i32::MAX as usize {
        bail!("{what}: negative length {}", len as i32);
    }
    let end = start.checked_add(len).filter(|&end| end <= memory_len);
    match end {
        Some(end) => Ok(start..end),
        None => {
            bail!("{what}: buffer {start:#x}+{len} is outside linear memory ({memory_len} bytes)")
        }
    }
}

fn read_guest(caller: &mut Caller<'_, Host>, ptr: i32, len: i32, what: &str) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    Ok(data[range(ptr, len, data.len(), what)?].to_vec())
}

/// Copies guest memory into a message payload. A small payload lives in
/// one allocation that every receiver shares (a `Vec` would take a second
/// one when the first receiver's copy is made).
fn guest_bytes(caller: &mut Caller<'_, Host>, ptr: i32, len: i32, what: &str) -> Result<Bytes> {
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    let bytes = &data[range(ptr, len, data.len(), what)?];
    if bytes.len() > SmallPayload::CAPACITY {
        return Ok(Bytes::copy_from_slice(bytes));
    }
    let mut small = SmallPayload {
        len: bytes.len() as u8,
        buf: [0; SmallPayload::CAPACITY],
    };
    small.buf[..bytes.len()].copy_from_slice(bytes);
    Ok(Bytes::from_owner(small))
}

/// A payload of up to [`SmallPayload::CAPACITY`] bytes, held inline.
struct SmallPayload {
    len: u8,
    buf: [u8; SmallPayload::CAPACITY],
}

impl SmallPayload {
    const CAPACITY: usize = 64;
}

impl AsRef<[u8]> for SmallPayload {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

fn write_guest(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8], what: &str) -> Result<()> {
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let r = range(ptr, bytes.len() as i32, data.len(), what)?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Copies `bytes` to the guest buffer if it fits, returning the length or
/// `BUFFER_TOO_SMALL`.
fn copy_out(
    caller: &mut Caller<'_, Host>,
    ptr: i32,
    cap: i32,
    bytes: &[u8],
    what: &str,
) -> Result<i32> {
    if bytes.len() > cap.max(0) as usize {
        return Ok(status::BUFFER_TOO_SMALL);
    }
    write_guest(caller, ptr, bytes, what)?;
    Ok(bytes.len() as i32)
}

/// Defines every `weft` host function. Which of them a module may import is
/// decided before linking (see `program::check_module`), so defining them
/// all here grants nothing.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> Result<()> {
    add_log(linker)?;
    add_time(linker)?;
    add_random(linker)?;
    add_ports(linker)?;
    add_kv(linker)?;
    add_devices(linker)?;
    Ok(())
}

fn add_log(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        imports::LOG,
        |mut c: Caller<'_, Host>, level: i32, ptr: i32, len: i32| -> Result<()> {
            let bytes = read_guest(&mut c, ptr, len.min(MAX_LOG_BYTES as i32), "log")?;
            let text = String::from_utf8_lossy(&bytes);
            let (process, tag) = (c.data().spec.name.as_str(), c.data().tag);
            match level {
                log_level::ERROR => tracing::error!(target: "weft::guest", process, %tag, "{text}"),
                log_level::WARN => tracing::warn!(target: "weft::guest", process, %tag, "{text}"),
                log_level::INFO => tracing::info!(target: "weft::guest", process, %tag, "{text}"),
                log_level::DEBUG => tracing::debug!(target: "weft::guest", process, %tag, "{text}"),
                _ => tracing::trace!(target: "weft::guest", process, %tag, "{text}"),
            }
            let host = c.data_mut();
            if host.keep_logs && host.logs.len() < MAX_LOG_LINES_PER_CALL {
                host.logs.push(LogLine {
                    level,
                    text: text.into_owned(),
                });
            }
            Ok(())
        },
    )?;
    Ok(())
}

fn add_time(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(IMPORT_MODULE, imports::NOW, |c: Caller<'_, Host>| -> i64 {
        c.data().tag.0 as i64
    })?;
    Ok(())
}

fn add_random(linker: &mut Linker<Host>) -> Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        imports::RANDOM,
        |mut c: Caller<'_, Host>| -> i64 { c.data_mut().rng.next_u64() as i64 },
    )?;
    Ok(())
}

fn add_ports(linker: &mut Linker<Host>) -> Result<()> {
    let m = IMPORT_MODULE;
    linker.func_wrap(
        m,
        imports::PORT,
        |mut c: Caller<'_, Host>, ptr: i32, len: i32| -> Result<i32> {
            let name = read_guest(&mut c, ptr, len.min(256), "port")?;
            let name = String::from_utf8_lossy(&name);
            Ok(c.data()
                .spec
                .port_handle(&name)
                .map_or(status::UNKNOWN, |h| h.0))
        },
    )?;
    linker
        .func_wrap(m, imports::SEND, |mut c: Caller<'_, Host>, port: i32, ptr: i32, len: i32| -> Result<i32> {
            let host = c.data();
            let Some(port) = host.output_port(port) else {
                return Ok(status::UNKNOWN);
            };
            if len as u32 as usize > host.spec.max_message {
                c.data_mut().refused += 1;
                let host = c.data();
                if let Some(suppressed) = host.warnings.oversized.allow() {
                    tracing::warn!(process = %host.spec.name, len, limit = host.spec.max_message, suppressed, "oversized message refused");
                }
                return Ok(status::TOO_LARGE);
            }
            if host.outbox.len() >= host.spec.mailbox {
                return Ok(status::FULL);
            }
            let payload = guest_bytes(&mut c, ptr, len, "send")?;
            c.data_mut().outbox.push(Output { port, payload });
            Ok(status::OK)
        })?;
    linker.func_wrap(
        m,
        imports::RECV,
        |mut c: Caller<'_, Host>, port: i32, ptr: i32, cap: i32| -> Result<i32> {
            let host = c.data();
            let Some(port) = host.input_port(port) else {
                return Ok(status::UNKNOWN);
            };
            let (tag, inbox) = (host.tag, host.inbox.clone());
            match inbox.pop_visible_if_fits(tag, port, cap.max(0) as usize) {
                Ok(None) => Ok(status::NOT_FOUND),
                Err(_) => Ok(status::BUFFER_TOO_SMALL),
                Ok(Some(message)) => copy_out(&mut c, ptr, cap, &message.payload, "recv"),
            }
        },
    )?;
    Ok(())
}

fn add_kv(linker: &mut Linker<Host>) -> Result<()> {
    let m = IMPORT_MODULE;
    linker.func_wrap(
        m,
        imports::KV_GET,
        |mut c: Caller<'_, Host>, kp: i32, kl: i32, vp: i32, vcap: i32| -> Result<i32> {
            let key = read_guest(&mut c, kp, kl.min(MAX_KEY_BYTES as i32), "kv_get")?;
            match c.data().kv.get(&key).cloned() {
                None => Ok(status::NOT_FOUND),
                Some(value) => copy_out(&mut c, vp, vcap, &value, "kv_get"),
            }
        },
    )?;
    linker.func_wrap(
        m,
        imports::KV_SET,
        |mut c: Caller<'_, Host>, kp: i32, kl: i32, vp: i32, vl: i32| -> Result<i32> {
            if kl as u32 as usize > MAX_KEY_BYTES
                || (kl as u32 as usize + vl as u32 as usize) > c.data().spec.max_message
            {
                return Ok(status::TOO_LARGE);
            }
            let key = read_guest(&mut c, kp, kl, "kv_set")?;
            let value = read_guest(&mut c, vp, vl, "kv_set")?;
            c.data_mut().kv.insert(key, value);
            Ok(status::OK)
        },
    )?;
    linker.func_wrap(
        m,
        imports::KV_DELETE,
        |mut c: Caller<'_, Host>, kp: i32, kl: i32| -> Result<i32> {
            let key = read_guest(&mut c, kp, kl.min(MAX_KEY_BYTES as i32), "kv_delete")?;
            Ok(match c.data_mut().kv.remove(&key) {
                Some(_) => status::OK,
                None => status::NOT_FOUND,
            })
        },
    )?;
    Ok(())
}

fn add_devices(linker: &mut Linker<Host>) -> Result<()> {
    let m = IMPORT_MODULE;
    linker
        .func_wrap(m, imports::DEVICE_OPEN, |mut c: Caller<'_, Host>, ptr: i32, len: i32| -> Result<i32> {
            let name = read_guest(&mut c, ptr, len.min(256), "device_open")?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let host = c.data_mut();
            if host.devices.get(&name).is_none() {
                return Ok(status::UNKNOWN);
            }
            if !host.spec.grants(&weft_abi::Capability::Device(name.clone())) {
                if let Some(suppressed) = host.warnings.not_granted.allow() {
                    tracing::warn!(process = %host.spec.name, device = %name, suppressed, "device not granted (add \"device:{name}\" to capabilities)");
                }
                return Ok(status::DENIED);
            }
            host.opened.push(name);
            Ok(host.opened.len() as i32 - 1)
        })?;
    linker.func_wrap(
        m,
        imports::DEVICE_READ,
        |mut c: Caller<'_, Host>, dev: i32, ptr: i32, cap: i32| -> Result<i32> {
            let host = c.data();
            let Some(device) = host.opened_device(dev) else {
                return Ok(status::UNKNOWN);
            };
            let sample = device.read(host.devices.read_at(host.tag));
            if let Some(recorder) = &host.recorder {
                let device = host.opened[dev as usize].clone();
                recorder.record(
                    host.tag,
                    Event::Sample {
                        device,
                        bytes: sample.to_vec(),
                    },
                );
            }
            copy_out(&mut c, ptr, cap, &sample, "device_read")
        },
    )?;
    linker.func_wrap(
        m,
        imports::DEVICE_WRITE,
        |mut c: Caller<'_, Host>, dev: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(device) = c.data().opened_device(dev) else {
                return Ok(status::UNKNOWN);
            };
            let data = read_guest(&mut c, ptr, len.min(4096), "device_write")?;
            let fenced = device.fenced();
            let accepted = match fenced {
                true => device.check_write(&data),
                false => device.write(c.data().tag, &data),
            };
            match accepted {
                Ok(()) => {
                    c.data_mut().writes.push(CallWrite {
                        handle: dev,
                        data,
                        fenced: fenced.then_some(device),
                    });
                    Ok(status::OK)
                }
                Err(reason) => {
                    let host = c.data();
                    if let Some(suppressed) = host.warnings.write_refused.allow() {
                        tracing::warn!(process = %host.spec.name, suppressed, "device write refused: {reason}");
                    }
                    Ok(status::UNKNOWN)
                }
            }
        },
    )?;
    Ok(())
}
