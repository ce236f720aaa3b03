//! What a client of a weft cluster does, in one place for the CLI, the
//! tests and the benchmarks:
//!
//! * [`Client`]: a session to the controller and its requests, each
//!   answered with the one reply it expects or a typed [`ClientError`].
//! * `bundle`: a deploy bundle built from a manifest file.
//! * `migration`: moving a process live, measured as its consumers see it.
//! * `progress`: how far a deploy has got, and waiting for it.
//! * `cluster`: a local cluster of real controller and node processes
//!   (`weft up`, the tests, `weft bench`).
//!
//! The protocol itself (keys, codecs, messages) is `weft-fabric`.

pub mod bundle;
pub mod cluster;
pub mod migration;
pub mod progress;

use std::collections::BTreeMap;
use std::time::Duration;

use weft_fabric::codec::DeployBundle;
use weft_fabric::proto::{
    ControlRequest, ControlResponse, EventEntry, NodeEntry, NodeMonitor, PsEntry,
};
use weft_fabric::rpc::{self, CallError};
use weft_fabric::{FabricConfig, Keys, Mode};
use weft_types::{AppName, NodeName, ProcessName, ProcessRef, Tag};

pub use bundle::bundle;
pub use cluster::{LocalCluster, free_port};
pub use progress::Progress;

/// Why a request to the cluster did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the cluster at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error(
        "no controller answered at {endpoint} within {timeout:?} (is it running? `weft up` or `weft controller`)"
    )]
    NoController { endpoint: String, timeout: Duration },
    /// The controller refused the request, and says why.
    #[error("{0}")]
    Refused(String),
    #[error("no such {0}")]
    NotFound(String),
    #[error(
        "the controller answered a {request} request with a {answer} reply; is it another version of weft?"
    )]
    Unexpected {
        request: &'static str,
        answer: &'static str,
    },
    /// Something did not happen in time (a move that never completed).
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Whose events to read: everything, one app's, or one process's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub app: Option<AppName>,
    pub process: Option<ProcessName>,
}

impl std::str::FromStr for EventFilter {
    type Err = String;

    /// `APP` or `APP/PROCESS`.
    fn from_str(text: &str) -> Result<EventFilter, String> {
        if text.contains('/') {
            let who: ProcessRef = text.parse().map_err(|e| format!("{e}"))?;
            return Ok(EventFilter {
                app: Some(who.app),
                process: Some(who.process),
            });
        }
        let app = text.parse().map_err(|e| format!("{e}"))?;
        Ok(EventFilter {
            app: Some(app),
            process: None,
        })
    }
}

/// A batch of the controller's events.
#[derive(Debug, Clone)]
pub struct Events {
    /// Oldest first.
    pub events: Vec<EventEntry>,
    /// The newest sequence number the controller has given (read after it
    /// to follow).
    pub last: u64,
    /// The oldest it still keeps.
    pub oldest: u64,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub app: AppName,
    pub generation: u64,
    pub pending: Vec<PsEntry>,
    pub warnings: Vec<String>,
}

/// A session to a cluster's controller.
pub struct Client {
    session: zenoh::Session,
    keys: Keys,
    endpoint: String,
    timeout: Duration,
}

impl Client {
    /// Opens a client session to `endpoint` (the controller's, or any
    /// router's) in `cluster`.
    pub async fn connect(cluster: &str, endpoint: &str) -> Result<Client, ClientError> {
        let config = FabricConfig::default()
            .cluster(cluster)
            .mode(Mode::Client)
            .connect([endpoint.to_string()]);
        let session = config.open().await.map_err(|e| ClientError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: format!("{e:#}"),
        })?;
        Ok(Client {
            session,
            keys: Keys::new(cluster),
            endpoint: endpoint.to_string(),
            timeout: rpc::DEFAULT_TIMEOUT,
        })
    }

    pub fn session(&self) -> &zenoh::Session {
        &self.session
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub async fn close(self) {
        let _ = self.session.close().await;
    }

    fn failed(&self, e: anyhow::Error) -> ClientError {
        match e.downcast::<CallError>() {
            Ok(CallError::NoAnswer { timeout, .. }) => ClientError::NoController {
                endpoint: self.endpoint.clone(),
                timeout,
            },
            Ok(CallError::Refused { message, .. }) => ClientError::Refused(message),
            Err(e) => ClientError::Other(e),
        }
    }

    /// One request; `Error` and `NotFound` answers become errors.
    pub async fn request(&self, request: &ControlRequest) -> Result<ControlResponse, ClientError> {
        let key = self.keys.controller_rpc();
        let response = rpc::call(&self.session, &key, request, self.timeout)
            .await
            .map_err(|e| self.failed(e))?;
        answer(response)
    }

    pub async fn deploy(&self, bundle: &DeployBundle) -> Result<Deployed, ClientError> {
        let key = self.keys.controller_deploy();
        let response = rpc::call_raw(&self.session, &key, bundle.encode(), self.timeout)
            .await
            .map_err(|e| self.failed(e))?;
        match answer(response)? {
            ControlResponse::Deployed {
                app,
                generation,
                pending,
                warnings,
            } => Ok(Deployed {
                app,
                generation,
                pending,
                warnings,
            }),
            other => Err(unexpected("deploy", &other)),
        }
    }

    pub async fn ps(&self) -> Result<Vec<PsEntry>, ClientError> {
        match self.request(&ControlRequest::Ps).await? {
            ControlResponse::Ps { processes } => Ok(processes),
            other => Err(unexpected("ps", &other)),
        }
    }

    pub async fn nodes(&self) -> Result<Vec<NodeEntry>, ClientError> {
        match self.request(&ControlRequest::Nodes).await? {
            ControlResponse::Nodes { nodes } => Ok(nodes),
            other => Err(unexpected("nodes", &other)),
        }
    }

    pub async fn remove(&self, app: AppName) -> Result<AppName, ClientError> {
        match self.request(&ControlRequest::Remove { app }).await? {
            ControlResponse::Removed { app } => Ok(app),
            other => Err(unexpected("remove", &other)),
        }
    }

    /// Drains `node`; returns the processes moving off it.
    pub async fn drain(&self, node: NodeName) -> Result<Vec<ProcessRef>, ClientError> {
        match self.request(&ControlRequest::Drain { node }).await? {
            ControlResponse::Drained { moved, .. } => Ok(moved),
            other => Err(unexpected("drain", &other)),
        }
    }

    pub async fn undrain(&self, node: NodeName) -> Result<(), ClientError> {
        match self.request(&ControlRequest::Undrain { node }).await? {
            ControlResponse::Undrained { .. } => Ok(()),
            other => Err(unexpected("undrain", &other)),
        }
    }

    /// Asks for `who` to move to `to`; returns the node it leaves.
    pub async fn migrate(&self, who: &ProcessRef, to: &NodeName) -> Result<NodeName, ClientError> {
        let request = ControlRequest::Migrate {
            app: who.app.clone(),
            process: who.process.clone(),
            to: to.clone(),
        };
        match self.request(&request).await? {
            ControlResponse::Migrating { from, .. } => Ok(from),
            other => Err(unexpected("migrate", &other)),
        }
    }

    /// The tag and size of the newest checkpoint the nodes hold of `who`.
    pub async fn checkpoint_info(
        &self,
        who: &ProcessRef,
    ) -> Result<(Option<Tag>, u64), ClientError> {
        let (tag, bytes, _) = self.checkpoint_holders(who).await?;
        Ok((tag, bytes))
    }

    /// The newest checkpoint of `who` (tag, size) and every alive node
    /// that holds one, with its tag.
    pub async fn checkpoint_holders(
        &self,
        who: &ProcessRef,
    ) -> Result<(Option<Tag>, u64, BTreeMap<NodeName, Tag>), ClientError> {
        let request = ControlRequest::CheckpointInfo {
            app: who.app.clone(),
            process: who.process.clone(),
        };
        match self.request(&request).await? {
            ControlResponse::CheckpointInfo {
                tag,
                bytes,
                holders,
            } => Ok((tag, bytes, holders)),
            other => Err(unexpected("checkpoint_info", &other)),
        }
    }

    /// The events after `after` (every one kept if `None`) that pass
    /// `filter`. With `wait`, an answer that would be empty waits up to
    /// that long (at most 5 s) for the next event.
    pub async fn events(
        &self,
        after: Option<u64>,
        filter: &EventFilter,
        wait: Option<Duration>,
    ) -> Result<Events, ClientError> {
        let request = ControlRequest::Events {
            after,
            app: filter.app.clone(),
            process: filter.process.clone(),
            limit: None,
            wait_ms: wait.map(|w| w.as_millis() as u64),
        };
        match self.request(&request).await? {
            ControlResponse::Events {
                events,
                last,
                oldest,
            } => Ok(Events {
                events,
                last,
                oldest,
            }),
            other => Err(unexpected("events", &other)),
        }
    }

    /// The task monitor of every node that answers within `timeout`,
    /// by node name.
    pub async fn monitors(&self, timeout: Duration) -> Result<Vec<NodeMonitor>, ClientError> {
        Ok(rpc::node_monitors(&self.session, &self.keys, timeout).await?)
    }

    /// The `ps` entry of one process.
    pub async fn process(
        &self,
        app: &AppName,
        process: &ProcessName,
    ) -> Result<Option<PsEntry>, ClientError> {
        Ok(self
            .ps()
            .await?
            .into_iter()
            .find(|p| p.status.app == *app && p.status.name == *process))
    }
}

fn answer(response: ControlResponse) -> Result<ControlResponse, ClientError> {
    match response {
        ControlResponse::Error { message } => Err(ClientError::Refused(message)),
        ControlResponse::NotFound { what } => Err(ClientError::NotFound(what)),
        other => Ok(other),
    }
}

fn unexpected(request: &'static str, answer: &ControlResponse) -> ClientError {
    ClientError::Unexpected {
        request,
        answer: answer.kind(),
    }
}
