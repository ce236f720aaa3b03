//! The key space. Everything lives under `weft/<cluster>/`:
//!
//! | key | what |
//! |---|---|
//! | `node/<node>/alive` | liveliness token of a node |
//! | `node/<node>/status` | a node's periodic [`NodeStatus`](crate::proto::NodeStatus) |
//! | `node/<node>/rpc` | queryable: [`NodeRequest`](crate::proto::NodeRequest) |
//! | `controller/alive` | liveliness token of the controller |
//! | `controller/rpc` | queryable: [`ControlRequest`](crate::proto::ControlRequest) |
//! | `port/<app>/<process>/<port>` | tagged messages an output port publishes |
//! | `checkpoint/<app>/<process>` | latest snapshot of a process |
//! | `log/<app>/<process>` | guest log lines |

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

    pub fn node_alive(&self, node: &str) -> String {
        format!("{}/node/{node}/alive", self.root)
    }
    pub fn all_nodes_alive(&self) -> String {
        format!("{}/node/*/alive", self.root)
    }
    pub fn node_status(&self, node: &str) -> String {
        format!("{}/node/{node}/status", self.root)
    }
    pub fn all_node_status(&self) -> String {
        format!("{}/node/*/status", self.root)
    }
    pub fn node_rpc(&self, node: &str) -> String {
        format!("{}/node/{node}/rpc", self.root)
    }
    pub fn controller_alive(&self) -> String {
        format!("{}/controller/alive", self.root)
    }
    pub fn controller_rpc(&self) -> String {
        format!("{}/controller/rpc", self.root)
    }
    pub fn port(&self, app: &str, process: &str, port: &str) -> String {
        format!("{}/port/{app}/{process}/{port}", self.root)
    }
    pub fn checkpoint(&self, app: &str, process: &str) -> String {
        format!("{}/checkpoint/{app}/{process}", self.root)
    }
    pub fn all_checkpoints(&self) -> String {
        format!("{}/checkpoint/**", self.root)
    }
    pub fn log(&self, app: &str, process: &str) -> String {
        format!("{}/log/{app}/{process}", self.root)
    }

    /// The `<node>` segment of a `node/<node>/...` key.
    pub fn node_of(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("/node/")?;
        Some(rest.split('/').next()?.to_string())
    }

    /// `(app, process)` of a `checkpoint/<app>/<process>` key.
    pub fn checkpoint_of(&self, key: &str) -> Option<(String, String)> {
        let rest = key.strip_prefix(&self.root)?.strip_prefix("/checkpoint/")?;
        let (app, process) = rest.split_once('/')?;
        Some((app.to_string(), process.to_string()))
    }
}

/// Names used as key segments must not contain key-expression syntax.
pub fn valid_segment(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("c1");
        assert_eq!(
            k.node_of(&k.node_status("edge-1")).as_deref(),
            Some("edge-1")
        );
        assert_eq!(
            k.checkpoint_of(&k.checkpoint("app", "pid")),
            Some(("app".into(), "pid".into()))
        );
        assert_eq!(k.port("a", "p", "o"), "weft/c1/port/a/p/o");
        assert!(!valid_segment("a/b") && !valid_segment("*") && valid_segment("edge-1"));
    }
}
