//! What a failed command tells its caller: a sentence on stderr, and an
//! exit status that says what kind of failure it was (the table is in
//! `weft --help`).

use weft_client::ClientError;

/// Exit statuses, as `weft --help` lists them.
pub const EXIT_STATUSES: &str = "\
Exit status:
  0   success
  1   a check failed: `weft replay` found a chain that differs from the live run
  2   invalid input: the command line, a manifest, a module or a recording
  3   the cluster cannot be reached, or no controller answers there
  4   no such app, process or node
  5   the controller refused the request (the message says why)
  6   what was asked did not happen in time (a live move)
  10  any other failure
`weft run MODULE.wasm` exits with the module's own exit status instead.";

pub const INVALID_INPUT: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const REFUSED: u8 = 5;
pub const TIMED_OUT: u8 = 6;
pub const OTHER: u8 = 10;

/// Marks an error as the user's input being wrong.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct BadInput(pub anyhow::Error);

/// `.bad_input()?` on a result whose error is the user's input.
pub trait InputResult<T> {
    fn bad_input(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> InputResult<T> for Result<T, E> {
    fn bad_input(self) -> anyhow::Result<T> {
        self.map_err(|e| BadInput(e.into()).into())
    }
}

/// The exit status for `error`.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<BadInput>() {
            return INVALID_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return match e {
                ClientError::Unreachable { .. } | ClientError::NoController { .. } => UNREACHABLE,
                ClientError::NotFound(_) => NOT_FOUND,
                ClientError::Refused(_) => REFUSED,
                ClientError::Timeout(_) => TIMED_OUT,
                ClientError::Unexpected { .. } => OTHER,
                ClientError::Other(_) => continue,
            };
        }
    }
    OTHER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_status() {
        let bad: anyhow::Error = BadInput(anyhow::anyhow!("x")).into();
        assert_eq!(exit_status(&bad.context("reading")), INVALID_INPUT);
        let client = |e: ClientError| exit_status(&anyhow::Error::from(e));
        assert_eq!(client(ClientError::NotFound("app".into())), NOT_FOUND);
        assert_eq!(client(ClientError::Refused("no".into())), REFUSED);
        assert_eq!(client(ClientError::Timeout("late".into())), TIMED_OUT);
        assert_eq!(
            client(ClientError::NoController {
                endpoint: "e".into(),
                timeout: std::time::Duration::ZERO
            }),
            UNREACHABLE
        );
        assert_eq!(exit_status(&anyhow::anyhow!("disk full")), OTHER);
    }
}
