//! The guest modules the benchmarks run, as WAT text, and the scratch
//! directory they are written to (the runtime loads modules from files).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The smallest useful process: one memory page, `weft_init` touches one
/// byte of it (so exactly one OS page of linear memory is touched), and
/// `weft_tick` bumps a counter. No imports.
pub const TINY: &str = r#"(module
  (memory (export "memory") 1)
  (global $n (mut i64) (i64.const 0))
  (func (export "weft_init") (i32.store8 (i32.const 0) (i32.const 1)))
  (func (export "weft_tick") (param i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))))
"#;

/// Sends its tick counter (8 bytes) on output port `out` every tick.
pub const SENDER: &str = r#"(module
  (import "weft" "port" (func $port (param i32 i32) (result i32)))
  (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "out")
  (global $out (mut i32) (i32.const -4))
  (global $n (mut i64) (i64.const 0))
  (func (export "weft_init") (global.set $out (call $port (i32.const 16) (i32.const 3))))
  (func (export "weft_tick") (param $tag i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))
    (i64.store (i32.const 0) (global.get $n))
    (drop (call $send (global.get $out) (i32.const 0) (i32.const 8)))))
"#;

/// Receives 8-byte messages and adds them up.
pub const RECEIVER: &str = r#"(module
  (memory (export "memory") 1)
  (global $sum (mut i64) (i64.const 0))
  (func (export "weft_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_message") (param $port i32) (param $ptr i32) (param $len i32) (param $tag i64)
    (global.set $sum (i64.add (global.get $sum) (i64.load (local.get $ptr))))))
"#;

/// Two compute kernels: `kernel(rounds)`, passes of FNV-1a over 64 KiB of
/// linear memory writing the running hash back (a tight loop), and
/// `fib(n)`, naive recursive Fibonacci (calls and branches).
pub const KERNEL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "kernel") (param $rounds i32) (result i32)
    (local $h i32) (local $i i32)
    (local.set $h (i32.const 0x811c9dc5))
    (block $done (loop $outer
      (br_if $done (i32.eqz (local.get $rounds)))
      (local.set $i (i32.const 0))
      (block $end (loop $inner
        (br_if $end (i32.ge_u (local.get $i) (i32.const 65536)))
        (local.set $h (i32.mul (i32.xor (local.get $h) (i32.load8_u (local.get $i))) (i32.const 16777619)))
        (i32.store8 (local.get $i) (local.get $h))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $inner)))
      (local.set $rounds (i32.sub (local.get $rounds) (i32.const 1)))
      (br $outer)))
    (local.get $h))
  ;; Call-heavy: naive recursive Fibonacci.
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2))))))))
"#;

/// A be tick that burns CPU for tens of milliseconds; with a period
/// shorter than that it runs back to back, keeping a core busy, yet it
/// returns often enough for the app to stop promptly.
pub const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (global $x (mut i64) (i64.const 0))
  (func (export "weft_tick") (param i64)
    (local $i i64)
    (loop $l
      (global.set $x (i64.add (global.get $x) (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $l (i64.lt_u (local.get $i) (i64.const 30000000))))))
"#;

/// A process holding `bytes` of state (a multiple of 64 KiB): its memory
/// is fixed at that size, `weft_init` writes a 64-bit LCG stream over all
/// of it (every page touched, no two alike), and each tick rewrites one
/// word in each of four pages spread over the memory, then sends its tick
/// count (8 bytes, kept at address 0) on its first output port.
pub fn stateful(bytes: u64) -> String {
    let pages = (bytes / 65536).max(1);
    STATEFUL
        .replace("PAGES", &pages.to_string())
        .replace("QUARTER", &(pages / 4).max(1).to_string())
        .replace("BYTES", &(pages * 65536).to_string())
}

/// The WAT of [`stateful`]; `PAGES`, `QUARTER` and `BYTES` are filled in.
const STATEFUL: &str = r#"(module
  (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory (export "memory") PAGES PAGES)
  (global $x (mut i64) (i64.const 12345))
  (global $ticks (mut i32) (i32.const 0))
  (func $next (result i64)
    (global.set $x (i64.add (i64.mul (global.get $x) (i64.const 6364136223846793005))
                            (i64.const 1442695040888963407)))
    (global.get $x))
  (func (export "weft_init") (local $i i32)
    (loop $fill
      (i64.store (local.get $i) (call $next))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const BYTES)))))
  (func (export "weft_tick") (param i64) (local $k i32) (local $page i32)
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    (loop $pages
      (local.set $page (i32.rem_u
        (i32.add (i32.mul (global.get $ticks) (i32.const 7)) (i32.mul (local.get $k) (i32.const QUARTER)))
        (i32.const PAGES)))
      (i64.store
        (i32.add (i32.shl (local.get $page) (i32.const 16))
                 (i32.and (i32.wrap_i64 (global.get $x)) (i32.const 0xfff8)))
        (call $next))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $pages (i32.lt_u (local.get $k) (i32.const 4))))
    (i64.store (i32.const 0) (i64.extend_i32_u (global.get $ticks)))
    (drop (call $send (i32.const 0) (i32.const 0) (i32.const 8)))))
"#;

/// A message-driven process that counts the messages it receives (the
/// consumer whose node makes a producer publish on the fabric).
pub const COUNT_MESSAGES: &str = r#"(module
  (memory 1)
  (global $n (mut i64) (i64.const 0))
  (func (export "weft_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "weft_message") (param i32 i32 i32 i64)
    (global.set $n (i64.add (global.get $n) (i64.const 1)))))
"#;

/// A scratch directory removed when dropped.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch { dir })
    }

    /// Writes `text` to `name` in the scratch directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
