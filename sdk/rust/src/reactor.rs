//! The [`Reactor`] trait and the [`reactor!`](crate::reactor!) macro.
//!
//! A reactor is the recommended module style: the host calls `weft_init`
//! once, then `weft_tick(tag)` at every release of a periodic process and
//! `weft_message(port, ptr, len, tag)` for every delivered message. All
//! state lives in linear memory between calls, so the host can snapshot
//! and migrate the process at any call boundary.
//!
//! `reactor!(MyType)` keeps one `MyType` in a static (wasm is
//! single-threaded, and the host never calls into a module re-entrantly),
//! creates it with [`Reactor::init`] in `weft_init` and forwards the other
//! exports to it. `weft_alloc` hands the host a reusable buffer (grown as
//! needed, never shrunk) for incoming messages.
//!
//! ## Choosing exports
//!
//! Which exports a module has changes how the host drives it, so the macro
//! takes an optional list:
//!
//! | invocation | exports |
//! |---|---|
//! | `reactor!(T)` | `weft_init`, `weft_tick`, `weft_message`, `weft_alloc` |
//! | `reactor!(T: tick)` | `weft_init`, `weft_tick` |
//! | `reactor!(T: message)` | `weft_init`, `weft_message`, `weft_alloc` |
//! | `reactor!(T: tick, message)` | same as `reactor!(T)` |
//!
//! A periodic process that exports `weft_message` gets every message that is
//! visible at a tag delivered to [`Reactor::message`] *before*
//! [`Reactor::tick`] runs for that tag, so its mailbox is empty by the time
//! `tick` runs and [`Port::recv`](crate::Port::recv) finds nothing. Use
//! `reactor!(T: tick)` for a periodic process that pulls its inputs with
//! `recv`/[`latest_f64`](crate::Port::latest_f64) during the tick instead.

use core::cell::UnsafeCell;

use crate::port::Port;
use crate::tag::Tag;

/// A weft reactor: state plus handlers for the host's calls.
///
/// Every handler has an empty default, so implement only what the process
/// needs. See the [module docs](self) for how the exports are generated.
pub trait Reactor: Sized + 'static {
    /// Creates the state. Called from `weft_init`, once per process
    /// instance (not again when a process is restored from a snapshot).
    /// Resolve ports and open devices here.
    fn init() -> Self;

    /// One release of a periodic process at logical `tag`.
    fn tick(&mut self, tag: Tag) {
        let _ = tag;
    }

    /// One message delivered on input `port` at logical `tag`. `data` is only
    /// valid during the call.
    fn message(&mut self, port: Port, data: &[u8], tag: Tag) {
        let _ = (port, data, tag);
    }
}

/// Holder of the single reactor instance (and of the message buffer).
///
/// Not thread-safe: sound only because wasm32 guests are single-threaded and
/// the host never re-enters a module. Used by [`reactor!`](crate::reactor!).
pub struct ReactorCell<T>(UnsafeCell<Option<T>>);

// SAFETY: weft guests run on one thread (no wasm threads or shared memory:
// the loader rejects them), so there is never concurrent access.
unsafe impl<T> Sync for ReactorCell<T> {}

impl<T> ReactorCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        ReactorCell(UnsafeCell::new(None))
    }

    /// Stores `value`, replacing any previous one.
    ///
    /// # Safety
    /// No reference returned by [`get_or_init`](Self::get_or_init) may be alive.
    pub unsafe fn set(&self, value: T) {
        unsafe { *self.0.get() = Some(value) }
    }

    /// The stored value, created with `init` if there is none yet.
    ///
    /// # Safety
    /// The returned reference must not outlive the current host call, and
    /// no other reference from this cell may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_or_init(&self, init: impl FnOnce() -> T) -> &mut T {
        let slot = unsafe { &mut *self.0.get() };
        slot.get_or_insert_with(init)
    }
}

impl<T> Default for ReactorCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The reusable buffer behind `weft_alloc`.
static MESSAGE_BUFFER: ReactorCell<Vec<u8>> = ReactorCell::new();

/// `weft_alloc(len)`: a pointer to at least `len` writable bytes that stay
/// valid until the next call. Grows a single buffer; never shrinks it.
#[doc(hidden)]
pub fn alloc(len: i32) -> *mut u8 {
    let len = len.max(0) as usize;
    // SAFETY: single-threaded; the host does not call weft_alloc while a
    // message slice from the buffer is alive (it calls weft_message after).
    let buf = unsafe { MESSAGE_BUFFER.get_or_init(Vec::new) };
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf.as_mut_ptr()
}

/// The message the host wrote at `ptr..ptr+len` for `weft_message`.
///
/// # Safety
/// `ptr..ptr+len` must be valid linear memory for the duration of `'a`
/// (the host wrote it into the `weft_alloc` buffer).
#[doc(hidden)]
pub unsafe fn message_slice<'a>(ptr: *const u8, len: i32) -> &'a [u8] {
    if len <= 0 || ptr.is_null() {
        &[]
    } else {
        unsafe { core::slice::from_raw_parts(ptr, len as usize) }
    }
}

/// Generates the weft exports for a type implementing [`Reactor`].
///
/// ```ignore
/// weft::reactor!(Pid);                 // weft_init, weft_tick, weft_message, weft_alloc
/// weft::reactor!(Poller: tick);        // weft_init, weft_tick
/// weft::reactor!(Sink: message);       // weft_init, weft_message, weft_alloc
/// ```
///
/// Use it once per module, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! reactor {
    ($ty:ty) => {
        $crate::reactor!($ty: tick, message);
    };
    ($ty:ty: $($export:ident),+ $(,)?) => {
        const _: () = {
            static __WEFT_STATE: $crate::__rt::ReactorCell<$ty> = $crate::__rt::ReactorCell::new();

            #[unsafe(export_name = "weft_init")]
            extern "C" fn __weft_init() {
                let state = <$ty as $crate::Reactor>::init();
                // SAFETY: single-threaded; no reference into the cell is alive
                // between host calls.
                unsafe { __WEFT_STATE.set(state) }
            }

            #[allow(dead_code)]
            fn __weft_state() -> &'static mut $ty {
                // SAFETY: as above; the reference is used only within one host call.
                unsafe { __WEFT_STATE.get_or_init(<$ty as $crate::Reactor>::init) }
            }

            $( $crate::reactor!(@export $ty, $export); )+
        };
    };
    (@export $ty:ty, tick) => {
        #[unsafe(export_name = "weft_tick")]
        extern "C" fn __weft_tick(tag: i64) {
            $crate::Reactor::tick(__weft_state(), $crate::Tag(tag));
        }
    };
    (@export $ty:ty, message) => {
        #[unsafe(export_name = "weft_alloc")]
        extern "C" fn __weft_alloc(len: i32) -> *mut u8 {
            $crate::__rt::alloc(len)
        }

        #[unsafe(export_name = "weft_message")]
        extern "C" fn __weft_message(port: i32, ptr: *const u8, len: i32, tag: i64) {
            // SAFETY: the host wrote `len` bytes at `ptr` (our weft_alloc buffer).
            let data = unsafe { $crate::__rt::message_slice(ptr, len) };
            $crate::Reactor::message(
                __weft_state(),
                $crate::Port::from_raw(port),
                data,
                $crate::Tag(tag),
            );
        }
    };
}
