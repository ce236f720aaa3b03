//! Execution classes, lifecycle states and replica roles.
//!
//! Each of these is an enum with one text form per variant. `Display`,
//! `FromStr` and serde all use that same text (defined once, in the table of
//! each `text_enum!`), so the JSON a node reports, the column `weft ps`
//! prints and the value a manifest holds can never disagree.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A text that is not one of an enum's forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was being parsed (`rt class`, `process state`, ...).
    pub what: &'static str,
    pub text: String,
    /// Every accepted form.
    pub expected: &'static [&'static str],
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expected: Vec<String> = self.expected.iter().map(|e| format!("{e:?}")).collect();
        write!(
            f,
            "unknown {} {:?}; use {}",
            self.what,
            self.text,
            expected.join(" or ")
        )
    }
}

impl std::error::Error for ParseError {}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every text form, in declaration order.
            pub const TEXTS: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(text: &str) -> Result<Self, ParseError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError { what: $what, text: text.to_string(), expected: Self::TEXTS }),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

text_enum!(
    /// The execution class of a process.
    Class, "class" {
        /// Periodic, deterministic, on a dedicated real-time thread, fuel-metered.
        Rt => "rt",
        /// Best-effort, on the async worker pool, epoch-interrupted.
        Be => "be",
    }
);

text_enum!(
    /// What a node can offer rt processes.
    RtClass, "rt class" {
        /// `SCHED_FIFO` is permitted: rt threads preempt everything else.
        Hard => "hard",
        /// No `SCHED_FIFO`: rt threads run at normal priority.
        Soft => "soft",
    }
);

text_enum!(
    /// How a node finds the memory pages a process wrote since its last
    /// checkpoint (incremental checkpoints carry only those).
    DirtyTracking, "dirty-page tracking" {
        /// userfaultfd write-protection read with `PAGEMAP_SCAN` (Linux ≥ 6.7).
        WriteProtect => "write-protect",
        /// A hash of every page, compared at each checkpoint.
        PageHash => "page-hash",
    }
);

text_enum!(
    /// Where a process is in its life, as its node or the controller sees it.
    ProcessState, "process state" {
        /// No node can take it (the controller says why).
        Pending => "pending",
        /// Placed, and not yet reported running by its node.
        Starting => "starting",
        Running => "running",
        /// Waiting out its restart backoff after a fault.
        Backoff => "backoff",
        /// Faulted with restart policy `never`.
        Failed => "failed",
        /// Crash-looped: faulted more than `max_restarts` times in a row.
        Parked => "parked",
        Stopped => "stopped",
    }
);

text_enum!(
    /// Why a process stopped running a call.
    FaultKind, "fault kind" {
        /// The module does not start: missing grant, link error, bad module.
        Instantiate => "instantiate",
        FuelExhausted => "fuel_exhausted",
        MemoryLimit => "memory_limit",
        StackOverflow => "stack_overflow",
        /// Over its wall-clock deadline (be processes are interrupted).
        Deadline => "deadline",
        /// Any other trap: unreachable, out-of-bounds access, bad host call...
        Trap => "trap",
    }
);

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Instantiate,
        FaultKind::FuelExhausted,
        FaultKind::MemoryLimit,
        FaultKind::StackOverflow,
        FaultKind::Deadline,
        FaultKind::Trap,
    ];
}

text_enum!(
    /// What happened, in the controller's event stream (`weft events`).
    EventKind, "event kind" {
        /// An app was deployed or updated.
        Deployed => "deployed",
        Removed => "removed",
        /// A process (or a replica) was given a node.
        Placed => "placed",
        /// Placement moved a process to another node (handed over, not live).
        Moved => "moved",
        /// A process lost its node and waits for another.
        Lost => "lost",
        /// No node can take a process.
        Pending => "pending",
        /// A new run of a process reports running: fresh, restored from a
        /// checkpoint, or a replica that took over.
        Started => "started",
        Fault => "fault",
        /// A process restarted after a fault.
        Restart => "restart",
        /// A process crash-looped and is not restarted any more.
        Parked => "parked",
        /// A process faulted with restart policy `never`.
        Failed => "failed",
        /// A process missed deadlines (one event per burst).
        DeadlineMisses => "deadline_misses",
        /// Messages reached a process after their tag had run (one event per burst).
        Tardy => "tardy",
        MigrationBegun => "migration_begun",
        MigrationDone => "migration_done",
        MigrationAbandoned => "migration_abandoned",
        /// A process's node died and its replica took over.
        Takeover => "takeover",
        /// A process and its hot standby swapped nodes.
        StandbySwap => "standby_swap",
        HandoverBegun => "handover_begun",
        HandoverDone => "handover_done",
        HandoverGivenUp => "handover_given_up",
        NodeUp => "node_up",
        NodeDead => "node_dead",
        NodeDrained => "node_drained",
        NodeUndrained => "node_undrained",
        /// A node's link to a device went stale or down.
        DeviceDown => "device_down",
        /// A node's link to a device is connected again.
        DeviceUp => "device_up",
        /// A placement the controller advises against.
        Warning => "warning",
    }
);

text_enum!(
    /// The state of a process's hot standby in `weft ps`.
    ReplicaState, "standby state" {
        /// No node can take it.
        Pending => "pending",
        /// Placed, not yet reported by its node.
        Starting => "starting",
        /// Running in step with its process, outputs held back.
        InStep => "standby",
    }
);

text_enum!(
    /// A node as the controller sees it.
    NodeState, "node state" {
        Alive => "alive",
        /// Its liveliness token is gone.
        Dead => "dead",
        /// Alive, but takes nothing new and moves what it runs away.
        Draining => "draining",
    }
);

text_enum!(
    /// What a placed copy of a process is for.
    Role, "replica role" {
        /// The process itself: its outputs are live.
        Primary => "primary",
        /// Its hot standby: in step, outputs held back, takes over when the
        /// primary's node dies.
        Standby => "standby",
        /// The replica of a live move: in step, outputs held back, takes
        /// over once caught up.
        Moving => "moving",
    }
);

text_enum!(
    /// How a process is kept available when its node dies.
    StandbyMode, "standby mode" {
        /// A replica on another node computes in step, outputs held back,
        /// and takes over without a missed tag.
        Hot => "hot",
    }
);

/// A port as the guest sees it: its index among the process's inputs, then
/// outputs (`weft::port` returns it; `send` and `recv` take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PortHandle(pub i32);

impl fmt::Display for PortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_enum!(
    /// What a device is and which bridge drives it (`kind` in a node
    /// config, `docs/devices.md`).
    DeviceKind, "device kind" {
        /// The thermal plant model, integrated at tag time (deterministic).
        SimThermal => "sim-thermal",
        /// A Modbus TCP server, polled by the node.
        ModbusTcp => "modbus-tcp",
        /// Topics on an MQTT broker (optionally a Sparkplug B edge node).
        Mqtt => "mqtt",
    }
);

text_enum!(
    /// The state of a node's link to a device.
    LinkState, "device link state" {
        /// The last scan succeeded within the device's `stale_after`.
        Connected => "connected",
        /// Connected, but no scan has succeeded within `stale_after`.
        Stale => "stale",
        /// The link is down (refused, reset or timed out); the node
        /// reconnects with backoff.
        Disconnected => "disconnected",
        /// A model inside the node: always there.
        Simulated => "simulated",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_agree_everywhere() {
        for text in ProcessState::TEXTS {
            let state: ProcessState = text.parse().unwrap();
            assert_eq!(state.to_string(), *text);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<ProcessState>(&format!("\"{text}\"")).unwrap(),
                state
            );
        }
        assert_eq!(ReplicaState::InStep.to_string(), "standby");
        let e = "medium".parse::<RtClass>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown rt class \"medium\"; use \"hard\" or \"soft\""
        );
        assert!(serde_json::from_str::<Class>("\"fast\"").is_err());
    }
}
