//! The key space. Everything lives under `weft/<cluster>/`:
//!
//! | key | what |
//! |---|---|
//! | `node/<node>/alive` | liveliness token of a node |
//! | `node/<node>/status` | a node's periodic [`NodeStatus`](crate::proto::NodeStatus) |
//! | `node/<node>/rpc` | queryable: [`NodeRequest`](crate::proto::NodeRequest) |
//! | `controller/alive` | liveliness token of the controller |
//! | `controller/rpc` | queryable: [`ControlRequest`](crate::proto::ControlRequest) |
//! | `controller/deploy` | queryable: a [`DeployBundle`](crate::codec::DeployBundle) |
//! | `module/<digest>` | queryable: a module's bytes |
//! | `port/<app>/<process>/<port>` | tagged messages an output port publishes |
//! | `checkpoint/<app>/<process>` | put: a process's checkpoint; queryable: its latest |
//! | `log/<app>/<process>` | guest log lines |
//!
//! Every segment is a typed name (`weft_types`), which can never contain
//! key-expression syntax.

use weft_types::{AppName, ModuleDigest, NodeName, PortName, ProcessName, ProcessRef};

/// The selector parameter of a checkpoint query: the oldest tag wanted.
pub const MIN_TAG: &str = "min_tag";

/// Key builder for one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    root: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            root: format!("weft/{cluster}"),
        }
    }

    pub fn node_alive(&self, node: &NodeName) -> String {
        format!("{}/node/{node}/alive", self.root)
    }
    pub fn all_nodes_alive(&self) -> String {
        format!("{}/node/*/alive", self.root)
    }
    pub fn node_status(&self, node: &NodeName) -> String {
        format!("{}/node/{node}/status", self.root)
    }
    pub fn all_node_status(&self) -> String {
        format!("{}/node/*/status", self.root)
    }
    pub fn node_rpc(&self, node: &NodeName) -> String {
        format!("{}/node/{node}/rpc", self.root)
    }
    pub fn controller_alive(&self) -> String {
        format!("{}/controller/alive", self.root)
    }
    pub fn controller_rpc(&self) -> String {
        format!("{}/controller/rpc", self.root)
    }
    pub fn controller_deploy(&self) -> String {
        format!("{}/controller/deploy", self.root)
    }
    pub fn module(&self, digest: &ModuleDigest) -> String {
        format!("{}/module/{digest}", self.root)
    }
    pub fn all_modules(&self) -> String {
        format!("{}/module/*", self.root)
    }
    pub fn port(&self, app: &AppName, process: &ProcessName, port: &PortName) -> String {
        format!("{}/port/{app}/{process}/{port}", self.root)
    }
    /// Every output port of one process.
    pub fn ports_of(&self, app: &AppName, process: &ProcessName) -> String {
        format!("{}/port/{app}/{process}/*", self.root)
    }
    pub fn checkpoint(&self, app: &AppName, process: &ProcessName) -> String {
        format!("{}/checkpoint/{app}/{process}", self.root)
    }
    pub fn all_checkpoints(&self) -> String {
        format!("{}/checkpoint/*/*", self.root)
    }
    pub fn log(&self, app: &AppName, process: &ProcessName) -> String {
        format!("{}/log/{app}/{process}", self.root)
    }

    fn under<'a>(&self, key: &'a str, prefix: &str) -> Option<&'a str> {
        key.strip_prefix(&self.root)?.strip_prefix(prefix)
    }

    /// The `<node>` of a `node/<node>/...` key.
    pub fn node_of(&self, key: &str) -> Option<NodeName> {
        self.under(key, "/node/")?.split('/').next()?.parse().ok()
    }

    /// The process of a `checkpoint/<app>/<process>` key.
    pub fn checkpoint_of(&self, key: &str) -> Option<ProcessRef> {
        self.under(key, "/checkpoint/")?.parse().ok()
    }

    /// The digest of a `module/<digest>` key.
    pub fn module_of(&self, key: &str) -> Option<ModuleDigest> {
        self.under(key, "/module/")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("c1");
        let node: NodeName = name("edge-1");
        assert_eq!(k.node_of(&k.node_status(&node)), Some(node));
        let (app, process): (AppName, ProcessName) = (name("app"), name("pid"));
        assert_eq!(
            k.checkpoint_of(&k.checkpoint(&app, &process)),
            Some(ProcessRef::new(app.clone(), process.clone()))
        );
        assert_eq!(k.port(&app, &process, &name("o")), "weft/c1/port/app/pid/o");
        let digest = ModuleDigest([5; 32]);
        assert_eq!(k.module_of(&k.module(&digest)), Some(digest));
        assert_eq!(k.node_of("weft/c1/node/a b/status"), None);
        assert_eq!(k.checkpoint_of("weft/other/checkpoint/a/b"), None);
    }
}
