//! Names of apps, processes, nodes and ports, and the one rule they follow.
//!
//! A name is 1 to 64 ASCII letters, digits, `-` and `_`, starting with a
//! letter or a digit. The same rule serves every kind of name because each
//! of them ends up as a segment of a Zenoh key (`weft/<cluster>/port/<app>/
//! <process>/<port>`), in a `process.port` reference, in `APP/PROCESS` on
//! the command line and in file names: no `/`, `.`, `*`, `$` or spaces, and
//! no leading `-` that would read as a flag.
//!
//! A name is validated when it is made (`FromStr`, `TryFrom<String>`,
//! deserialization), so code that holds one never checks it again.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Why a text is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// `app`, `process`, `node` or `port`.
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} name {:?} {}; a name is 1 to {MAX_NAME_LEN} letters, digits, '-' or '_', starting with a letter or digit",
            self.kind, self.name, self.reason
        )
    }
}

impl std::error::Error for NameError {}

fn check(kind: &'static str, name: &str) -> Result<(), NameError> {
    let fail = |reason| {
        Err(NameError {
            kind,
            name: name.to_string(),
            reason,
        })
    };
    let Some(first) = name.chars().next() else {
        return fail("is empty");
    };
    if name.len() > MAX_NAME_LEN {
        return fail("is too long");
    }
    if !first.is_ascii_alphanumeric() {
        return fail("does not start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return fail("has a character other than letters, digits, '-' and '_'");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                check($kind, text)?;
                Ok($name(text.to_string()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(text: String) -> Result<Self, NameError> {
                check($kind, &text)?;
                Ok($name(text))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(text: &str) -> Result<Self, NameError> {
                text.parse()
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so tables can align names with `{:<10}`.
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// The name of an app (its manifest's `name`).
    AppName,
    "app"
);
name_type!(
    /// The name of a process within its app.
    ProcessName,
    "process"
);
name_type!(
    /// The name of a node in its cluster.
    NodeName,
    "node"
);
name_type!(
    /// The name of a process's input or output port.
    PortName,
    "port"
);
name_type!(
    /// The name of a device a node offers (`device:<name>` in a manifest).
    DeviceName,
    "device"
);

/// One process of one app, written `app/process`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessRef {
    pub app: AppName,
    pub process: ProcessName,
}

impl ProcessRef {
    pub fn new(app: AppName, process: ProcessName) -> ProcessRef {
        ProcessRef { app, process }
    }
}

impl fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.process)
    }
}

impl fmt::Debug for ProcessRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Why a text is not `APP/PROCESS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRefError {
    Shape(String),
    Name(NameError),
}

impl fmt::Display for ProcessRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessRefError::Shape(text) => {
                write!(
                    f,
                    "{text:?} is not APP/PROCESS (for example cluster-cell/pid)"
                )
            }
            ProcessRefError::Name(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ProcessRefError {}

impl FromStr for ProcessRef {
    type Err = ProcessRefError;
    fn from_str(text: &str) -> Result<ProcessRef, ProcessRefError> {
        let (app, process) = text
            .split_once('/')
            .ok_or_else(|| ProcessRefError::Shape(text.to_string()))?;
        Ok(ProcessRef {
            app: app.parse().map_err(ProcessRefError::Name)?,
            process: process.parse().map_err(ProcessRefError::Name)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_name() {
        for good in ["pid", "edge-1", "cloud_2", "A9", &"x".repeat(MAX_NAME_LEN)] {
            assert!(good.parse::<NodeName>().is_ok(), "{good}");
            assert!(good.parse::<ProcessName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "-x",
            "_x",
            "a.b",
            "a/b",
            "a b",
            "*",
            "é",
            &"x".repeat(65),
        ] {
            let e = bad.parse::<AppName>().unwrap_err();
            assert_eq!(e.kind, "app");
            assert!(e.to_string().contains("letters, digits"), "{e}");
        }
    }

    #[test]
    fn serde_validates_and_keeps_the_text() {
        let name: NodeName = serde_json::from_str("\"edge-1\"").unwrap();
        assert_eq!(name, "edge-1");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"edge-1\"");
        let bad = serde_json::from_str::<NodeName>("\"a/b\"").unwrap_err();
        assert!(bad.to_string().contains("node name \"a/b\""), "{bad}");
    }

    #[test]
    fn process_refs_parse_and_print() {
        let r: ProcessRef = "cell/pid".parse().unwrap();
        assert_eq!(r.to_string(), "cell/pid");
        assert!(matches!(
            "cellpid".parse::<ProcessRef>(),
            Err(ProcessRefError::Shape(_))
        ));
        assert!(matches!(
            "cell/p.d".parse::<ProcessRef>(),
            Err(ProcessRefError::Name(_))
        ));
    }

    #[test]
    fn maps_look_up_by_str() {
        let map = std::collections::BTreeMap::from([("a".parse::<NodeName>().unwrap(), 1)]);
        assert_eq!(map.get("a"), Some(&1));
    }
}
