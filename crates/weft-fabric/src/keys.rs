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
//! | `checkpoint/<node>/<app>/<process>` | queryable on `<node>`: the latest checkpoint of the process it holds |
//! | `replica/<node>` | queryable on `<node>`: takes a batch of checkpoint links of processes it holds for their nodes |
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
    /// Where a node answers with its task monitor ([`crate::proto::NodeMonitor`]).
    pub fn node_monitor(&self, node: &NodeName) -> String {
        format!("{}/node/{node}/monitor", self.root)
    }
    pub fn all_node_monitors(&self) -> String {
        format!("{}/node/*/monitor", self.root)
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
    /// The checkpoint of `who` that `node` holds.
    pub fn held_checkpoint(&self, node: &NodeName, who: &ProcessRef) -> String {
        format!(
            "{}/checkpoint/{node}/{}/{}",
            self.root, who.app, who.process
        )
    }
    /// Every checkpoint `node` holds (what it serves).
    pub fn checkpoints_held_by(&self, node: &NodeName) -> String {
        format!("{}/checkpoint/{node}/*/*", self.root)
    }
    /// The checkpoint of `who` on every node that holds one (what a node
    /// that needs it asks).
    pub fn checkpoint_anywhere(&self, who: &ProcessRef) -> String {
        format!("{}/checkpoint/*/{}/{}", self.root, who.app, who.process)
    }
    /// Where nodes send `peer` the checkpoint links it keeps for them, a
    /// batch at a time (what `peer` serves).
    pub fn replicas_to(&self, peer: &NodeName) -> String {
        format!("{}/replica/{peer}", self.root)
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

    /// The node and process of a `checkpoint/<node>/<app>/<process>` key.
    pub fn held_checkpoint_of(&self, key: &str) -> Option<(NodeName, ProcessRef)> {
        node_and_process(self.under(key, "/checkpoint/")?)
    }

    /// The process of a checkpoint query's key, whatever its node segment
    /// (a query for a checkpoint anywhere names `*` there).
    pub fn checkpoint_query_of(&self, key: &str) -> Option<ProcessRef> {
        let (_, process) = self.under(key, "/checkpoint/")?.split_once('/')?;
        process.parse().ok()
    }

    /// The digest of a `module/<digest>` key.
    pub fn module_of(&self, key: &str) -> Option<ModuleDigest> {
        self.under(key, "/module/")?.parse().ok()
    }
}

fn node_and_process(rest: &str) -> Option<(NodeName, ProcessRef)> {
    let (node, process) = rest.split_once('/')?;
    Some((node.parse().ok()?, process.parse().ok()?))
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
        assert_eq!(k.node_of(&k.node_status(&node)), Some(node.clone()));
        let (app, process): (AppName, ProcessName) = (name("app"), name("pid"));
        let who = ProcessRef::new(app.clone(), process.clone());
        assert_eq!(
            k.held_checkpoint_of(&k.held_checkpoint(&node, &who)),
            Some((node.clone(), who.clone()))
        );
        assert_eq!(k.replicas_to(&node), "weft/c1/replica/edge-1");
        assert_eq!(k.checkpoint_anywhere(&who), "weft/c1/checkpoint/*/app/pid");
        assert_eq!(
            k.checkpoint_query_of(&k.checkpoint_anywhere(&who)),
            Some(who.clone())
        );
        assert_eq!(k.port(&app, &process, &name("o")), "weft/c1/port/app/pid/o");
        let digest = ModuleDigest([5; 32]);
        assert_eq!(k.module_of(&k.module(&digest)), Some(digest));
        assert_eq!(k.node_of("weft/c1/node/a b/status"), None);
        assert_eq!(k.held_checkpoint_of("weft/other/checkpoint/n/a/b"), None);
        assert_eq!(k.held_checkpoint_of("weft/c1/checkpoint/a/b"), None);
    }
}
