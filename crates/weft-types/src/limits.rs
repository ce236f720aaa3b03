//! The bounds every hop agrees on.
//!
//! A manifest is checked against these at deploy, so a process whose
//! messages or state could not cross the fabric is refused with a message
//! naming the limit, instead of being dropped as "malformed" later, by a
//! receiver, at run time. The codecs check the same constants on both
//! sides.

/// Largest payload one port message may carry (`max_message` at most).
pub const MAX_MESSAGE: u64 = 16 << 20;

/// Largest port message on the fabric: the payload plus its header
/// (version, tag, sequence, source-name length, a source name of at most
/// 64 bytes).
pub const MAX_PORT_PAYLOAD: u64 = MAX_MESSAGE + 19 + 64;

/// Largest linear memory a process may have (`memory` at most).
pub const MAX_MEMORY: u64 = 256 << 20;

/// Deepest mailbox a process may ask for (`mailbox` at most).
pub const MAX_MAILBOX: u64 = 1 << 16;

/// Largest checkpoint (snapshot plus header) on the fabric and in a store.
/// A snapshot holds the process's memory, what is queued in its mailbox and
/// its kv store, so at deploy `memory + mailbox × max_message` must fit
/// with [`CHECKPOINT_OVERHEAD`] to spare.
pub const MAX_CHECKPOINT: u64 = 640 << 20;

/// Room a checkpoint keeps for everything but memory and mailbox: globals,
/// kv, the hash chain, device models, the header.
pub const CHECKPOINT_OVERHEAD: u64 = 16 << 20;

/// Largest module, in bytes of WebAssembly binary.
pub const MAX_MODULE: u64 = 128 << 20;

/// Largest deploy bundle: a manifest and every module it names.
pub const MAX_BUNDLE: u64 = 512 << 20;

/// Largest JSON control message (requests, replies, statuses).
pub const MAX_CONTROL: u64 = 64 << 20;

/// The worst-case checkpoint of a process with these settings, if it fits
/// [`MAX_CHECKPOINT`]; otherwise `None`.
pub fn checkpoint_bound(memory: u64, mailbox: u64, max_message: u64) -> Option<u64> {
    let bound = memory
        .checked_add(mailbox.checked_mul(max_message)?)?
        .checked_add(CHECKPOINT_OVERHEAD)?;
    (bound <= MAX_CHECKPOINT).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_allowed_settings_are_carried() {
        // The defaults a manifest gets fit easily.
        assert!(checkpoint_bound(16 << 20, 1024, 64 << 10).is_some());
        // The largest memory with a modest mailbox fits too.
        assert!(checkpoint_bound(MAX_MEMORY, 1024, 64 << 10).is_some());
        // A deep mailbox of large messages does not.
        assert!(checkpoint_bound(16 << 20, 1024, MAX_MESSAGE).is_none());
        assert!(checkpoint_bound(u64::MAX, 1, 1).is_none());
        const { assert!(MAX_MODULE < MAX_BUNDLE && MAX_PORT_PAYLOAD < MAX_CONTROL) };
    }
}
