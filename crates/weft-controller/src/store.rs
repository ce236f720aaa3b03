//! The controller's durable state, in one redb file
//! (`<data-dir>/controller.redb`).
//!
//! | table | key | value |
//! |---|---|---|
//! | `apps` | app name | JSON [`StoredApp`] |
//! | `modules` | digest (lowercase hex SHA-256) | module bytes |
//! | `placements` | (app, process, role) | node name |
//! | `moves` | (app, process) | JSON [`MoveIntent`](crate::model::MoveIntent) |
//! | `handovers` | (app, process) | JSON [`Handover`](crate::model::Handover) |
//! | `drained` | node name | `()` |
//! | `events` | sequence number | JSON [`EventEntry`] (the newest [`KEEP`](crate::events::KEEP)) |
//!
//! Checkpoints are not here: nodes hold them, and their statuses say which
//! node holds which (a `checkpoints` table of an older controller is
//! dropped when the file is opened, with the space it took).
//!
//! Every mutation is exactly one committed write transaction, so a
//! controller killed with `kill -9` loses nothing it has acknowledged.
//! Every error names what was being done and the database file. The
//! controller calls these outside its state lock, so a reader of the
//! state never waits for a write.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::warn;
use weft_fabric::proto::EventEntry;
use weft_types::{AppName, ModuleDigest, NodeName, ProcessRef};

use crate::model::{Current, Placed, Unit};

const APPS: TableDefinition<&str, &str> = TableDefinition::new("apps");
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const PLACEMENTS: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("placements");
const MOVES: TableDefinition<(&str, &str), &str> = TableDefinition::new("moves");
const HANDOVERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("handovers");
/// Where controllers before node-held checkpoints kept them.
const OLD_CHECKPOINTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("checkpoints");
const DRAINED: TableDefinition<&str, ()> = TableDefinition::new("drained");
const EVENTS: TableDefinition<u64, &str> = TableDefinition::new("events");

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "controller.redb";

/// One app as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApp {
    /// The manifest text, its modules named by digest.
    pub manifest: String,
    /// 1 at creation, bumped on every manifest change.
    pub generation: u64,
    /// Wall-clock time of the app's tag 0 (ns since the Unix epoch); kept
    /// across updates.
    pub epoch_unix_ns: u64,
}

/// Handle on the database. Cheap to share behind an `Arc`; every method is
/// blocking (call it from `spawn_blocking` in async code when it may write
/// much).
pub struct Store {
    db: Database,
    path: PathBuf,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialise")
}

impl Store {
    /// Opens (or creates) `<data_dir>/controller.redb`, creating the
    /// directory and every table.
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).with_context(|| {
            format!(
                "cannot create the controller data directory {}",
                data_dir.display()
            )
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(err)
            .with_context(|| format!("cannot open the controller database {}", path.display()))?;
        let store = Store { db, path };
        store.write("create the tables", |tx| {
            tx.open_table(APPS)?;
            tx.open_table(MODULES)?;
            tx.open_table(PLACEMENTS)?;
            tx.open_table(MOVES)?;
            tx.open_table(HANDOVERS)?;
            tx.open_table(DRAINED)?;
            tx.open_table(EVENTS)?;
            tx.delete_table(OLD_CHECKPOINTS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` in one write transaction and commits it.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let context = || format!("cannot {what} in {}", self.path.display());
        let tx = self.db.begin_write().map_err(err).with_context(context)?;
        let value = f(&tx).map_err(err).with_context(context)?;
        tx.commit().map_err(err).with_context(context)?;
        Ok(value)
    }

    fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let context = || format!("cannot {what} in {}", self.path.display());
        let tx = self.db.begin_read().map_err(err).with_context(context)?;
        f(&tx).map_err(err).with_context(context)
    }

    fn corrupt(&self, what: &str) -> String {
        format!("corrupt record of {what} in {}", self.path.display())
    }

    /// Stores an app together with any modules it brings, in one transaction.
    pub fn put_app(
        &self,
        name: &AppName,
        app: &StoredApp,
        modules: &BTreeMap<ModuleDigest, Vec<u8>>,
    ) -> Result<()> {
        let record = json(app);
        self.write(&format!("store app \"{name}\""), |tx| {
            let mut table = tx.open_table(MODULES)?;
            for (digest, bytes) in modules {
                table.insert(digest.to_string().as_str(), bytes.as_slice())?;
            }
            tx.open_table(APPS)?
                .insert(name.as_str(), record.as_str())?;
            Ok(())
        })
    }

    /// Every app by name. A record that does not decode is an error naming it.
    pub fn apps(&self) -> Result<BTreeMap<AppName, StoredApp>> {
        let raw = self.read("list the apps", |tx| {
            let table = tx.open_table(APPS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value().to_string()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(name, record)| {
                let what = || self.corrupt(&format!("app \"{name}\""));
                let app = serde_json::from_str(&record).with_context(what)?;
                Ok((name.parse().with_context(what)?, app))
            })
            .collect()
    }

    /// Removes an app, its placements and intents (modules
    /// stay: other apps may share them). Returns whether the app existed.
    pub fn remove_app(&self, name: &AppName) -> Result<bool> {
        let name = name.as_str();
        self.write(&format!("remove app \"{name}\""), |tx| {
            let existed = tx.open_table(APPS)?.remove(name)?.is_some();
            tx.open_table(PLACEMENTS)?
                .retain(|(app, _, _), _| app != name)?;
            tx.open_table(MOVES)?.retain(|(app, _), _| app != name)?;
            tx.open_table(HANDOVERS)?
                .retain(|(app, _), _| app != name)?;
            Ok(existed)
        })
    }

    pub fn module(&self, digest: &ModuleDigest) -> Result<Option<Vec<u8>>> {
        self.read(&format!("read module {digest}"), |tx| {
            Ok(tx
                .open_table(MODULES)?
                .get(digest.to_string().as_str())?
                .map(|v| v.value().to_vec()))
        })
    }

    pub fn has_module(&self, digest: &ModuleDigest) -> Result<bool> {
        self.read(&format!("look up module {digest}"), |tx| {
            Ok(tx
                .open_table(MODULES)?
                .get(digest.to_string().as_str())?
                .is_some())
        })
    }

    /// Stores what changed between `old` and `new` decisions, in one
    /// transaction: the placements of every app whose placement differs,
    /// and the intents in flight.
    pub fn save_current(&self, old: &Current, new: &Current) -> Result<()> {
        let apps: BTreeSet<&AppName> = old.placed.keys().chain(new.placed.keys()).collect();
        let changed: Vec<(&AppName, Option<&Placed>)> = apps
            .into_iter()
            .filter(|app| old.placed.get(*app) != new.placed.get(*app))
            .map(|app| (app, new.placed.get(app)))
            .collect();
        let intents = old.moves != new.moves || old.handovers != new.handovers;
        if changed.is_empty() && !intents {
            return Ok(());
        }
        self.write("store placements and intents", |tx| {
            let mut table = tx.open_table(PLACEMENTS)?;
            for (app, placed) in changed {
                table.retain(|(a, _, _), _| a != app.as_str())?;
                for (unit, node) in placed.into_iter().flatten() {
                    let key = (app.as_str(), unit.process.as_str(), unit.role.as_str());
                    table.insert(key, node.as_str())?;
                }
            }
            if intents {
                rewrite(tx, MOVES, &new.moves)?;
                rewrite(tx, HANDOVERS, &new.handovers)?;
            }
            Ok(())
        })
    }

    /// The decisions stored: placements and intents.
    pub fn current(&self) -> Result<Current> {
        let placements = self.read("list the placements", |tx| {
            let table = tx.open_table(PLACEMENTS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (app, process, role) = k.value();
                out.push((
                    app.to_string(),
                    process.to_string(),
                    role.to_string(),
                    v.value().to_string(),
                ));
            }
            Ok(out)
        })?;
        let mut current = Current::default();
        for (app, process, role, node) in placements {
            let what = || self.corrupt(&format!("the placement of {app}/{process} ({role})"));
            let unit = Unit {
                process: process.parse().with_context(what)?,
                role: role.parse().with_context(what)?,
            };
            current
                .placed
                .entry(app.parse().with_context(what)?)
                .or_default()
                .insert(unit, node.parse().with_context(what)?);
        }
        current.moves = self.intents(MOVES, "move")?;
        current.handovers = self.intents(HANDOVERS, "handover")?;
        Ok(current)
    }

    fn intents<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<(&str, &str), &str>,
        what: &str,
    ) -> Result<BTreeMap<ProcessRef, T>> {
        let raw = self.read(&format!("list the {what}s"), |tx| {
            let table = tx.open_table(table)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (app, process) = k.value();
                out.push((format!("{app}/{process}"), v.value().to_string()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(who, record)| {
                let context = || self.corrupt(&format!("the {what} of {who}"));
                Ok((
                    who.parse().with_context(context)?,
                    serde_json::from_str(&record).with_context(context)?,
                ))
            })
            .collect()
    }

    /// Marks a node drained (returns whether it was not already).
    pub fn drain(&self, node: &NodeName) -> Result<bool> {
        self.write(&format!("mark node \"{node}\" drained"), |tx| {
            Ok(tx.open_table(DRAINED)?.insert(node.as_str(), ())?.is_none())
        })
    }

    /// Clears the drained mark of a node (returns whether it was set).
    pub fn undrain(&self, node: &NodeName) -> Result<bool> {
        self.write(
            &format!("clear the drained mark of node \"{node}\""),
            |tx| Ok(tx.open_table(DRAINED)?.remove(node.as_str())?.is_some()),
        )
    }

    pub fn drained(&self) -> Result<BTreeSet<NodeName>> {
        let raw = self.read("list the drained nodes", |tx| {
            let table = tx.open_table(DRAINED)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                out.push(entry?.0.value().to_string());
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|n| {
                n.parse()
                    .with_context(|| self.corrupt(&format!("drained node {n:?}")))
            })
            .collect()
    }
}

impl Store {
    /// Appends `events` and drops all but the newest `keep`, in one
    /// transaction.
    pub fn append_events(&self, events: &[EventEntry], keep: usize) -> Result<()> {
        let Some(newest) = events.last().map(|e| e.seq) else {
            return Ok(());
        };
        self.write("store events", |tx| {
            let mut table = tx.open_table(EVENTS)?;
            for e in events {
                table.insert(e.seq, json(e).as_str())?;
            }
            let cutoff = newest.saturating_sub(keep as u64 - 1);
            table.retain_in(..cutoff, |_, _| false)?;
            Ok(())
        })
    }

    /// The stored events, oldest first. One that does not decode is left
    /// out with a warning naming it: a damaged event loses that event only.
    pub fn events(&self) -> Result<Vec<EventEntry>> {
        let raw = self.read("list the events", |tx| {
            let table = tx.open_table(EVENTS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value(), v.value().to_string()));
            }
            Ok(out)
        })?;
        let decoded = raw.into_iter().filter_map(|(seq, record)| {
            match serde_json::from_str::<EventEntry>(&record) {
                Ok(event) if event.seq == seq => Some(event),
                Ok(_) | Err(_) => {
                    warn!("{}; left out", self.corrupt(&format!("event {seq}")));
                    None
                }
            }
        });
        Ok(decoded.collect())
    }
}

/// Replaces a whole intent table by `records`.
fn rewrite<T: Serialize>(
    tx: &redb::WriteTransaction,
    table: TableDefinition<(&str, &str), &str>,
    records: &BTreeMap<ProcessRef, T>,
) -> Result<(), redb::Error> {
    let mut table = tx.open_table(table)?;
    table.retain(|_, _| false)?;
    for (who, record) in records {
        table.insert(
            (who.app.as_str(), who.process.as_str()),
            json(record).as_str(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
