//! Writing to standard output without panicking.
//!
//! `println!` panics when stdout is closed (`weft logs … | head`). Every
//! command prints through [`outln!`] and [`out!`] instead, which return the
//! write error; `main` ends the command quietly when that error is a
//! broken pipe, as a reader that stopped reading is not a failure.

use std::io::Write;

/// Writes formatted text to stdout.
pub fn write(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    std::io::stdout().lock().write_fmt(args)
}

/// `println!` that returns the write error with `?`.
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n"))? };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))? };
}

/// `print!` that returns the write error with `?`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*))? };
}

pub(crate) use {out, outln};

/// True when `error` is stdout closed under us.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
