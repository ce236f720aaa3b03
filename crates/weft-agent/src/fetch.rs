//! What a node fetches: the modules of an app it is to run, from the
//! controller (by digest, kept in its module store), and the checkpoints
//! its processes resume from, from the nodes that hold them. Both travel
//! as binary frames (`weft_fabric::codec`).

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use weft_fabric::codec::{self, CheckpointFrame};
use weft_fabric::keys::MIN_TAG;
use weft_fabric::{Keys, rpc};
use weft_manifest::module::DigestDir;
use weft_manifest::{AppManifest, ModuleRef};
use weft_runtime::Snapshot;
use weft_types::{NodeName, ProcessRef, Tag};

/// How long a module or checkpoint query waits for its answers (the node
/// running a process itself waits up to 1.5 s for a fresh enough
/// checkpoint).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Stores every module `manifest` names that `store` does not have yet.
pub(crate) async fn modules(
    session: &zenoh::Session,
    keys: &Keys,
    store: &DigestDir,
    manifest: &AppManifest,
) -> Result<()> {
    for (entry, module) in manifest.module_refs() {
        let ModuleRef::Digest(digest) = module else {
            bail!("{entry}: the controller sent a module path ({module}), not a digest");
        };
        if store.contains(&digest) {
            continue;
        }
        let reply = rpc::fetch(session, &keys.module(&digest), "", FETCH_TIMEOUT)
            .await
            .with_context(|| format!("{entry}: cannot fetch module {digest}"))?;
        let Some(reply) = reply else {
            bail!("{entry}: the controller answered nothing for module {digest}");
        };
        let bytes = codec::decode_module(&reply)
            .with_context(|| format!("{entry}: module {digest} from the controller"))?;
        store
            .store(&digest, bytes)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{entry}: module {digest} from the controller"))?;
    }
    Ok(())
}

/// The newest good checkpoint of `who` that any node holds, at or past
/// `min_tag` if one is given (the node running the process waits briefly
/// for one). Every node that holds one answers; an answer that does not
/// decode is refused with the reason and the next newest is used.
pub(crate) async fn checkpoint(
    session: &zenoh::Session,
    keys: &Keys,
    who: &ProcessRef,
    min_tag: Option<Tag>,
) -> Option<Snapshot> {
    let params = min_tag.map_or_else(String::new, |t| format!("{MIN_TAG}={}", t.0));
    let key = keys.checkpoint_anywhere(who);
    let answers = match rpc::fetch_all(session, &key, &params, FETCH_TIMEOUT).await {
        Ok(answers) => answers,
        Err(e) => {
            tracing::warn!(process = %who, "cannot ask for its checkpoint: {e:#}");
            return None;
        }
    };
    let mut offers: Vec<(Tag, NodeName, Vec<u8>)> = Vec::new();
    for (from, answer) in answers {
        let holder = keys.held_checkpoint_of(&from).map(|(node, _)| node);
        match (holder, answer) {
            (Some(node), Ok(bytes)) if !bytes.is_empty() => match CheckpointFrame::decode(&bytes) {
                Ok(frame) => offers.push((frame.tag, node, frame.snapshot)),
                Err(e) => {
                    tracing::warn!(process = %who, holder = %node, "refusing its checkpoint: {e}")
                }
            },
            (_, Ok(_)) => {}
            (_, Err(e)) => {
                tracing::warn!(process = %who, from, "a node could not serve its checkpoint: {e}")
            }
        }
    }
    offers.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (tag, node, bytes) in offers {
        if min_tag.is_some_and(|min| tag < min) {
            break;
        }
        match Snapshot::decode(&bytes) {
            Ok(snapshot) if snapshot.last_tag.unwrap_or(Tag::ZERO) == tag => {
                tracing::info!(process = %who, holder = %node, tag = %tag, "checkpoint fetched");
                return Some(snapshot);
            }
            Ok(snapshot) => tracing::warn!(
                process = %who, holder = %node,
                "refusing its checkpoint: the frame says tag {tag}, the snapshot {:?}; trying the next newest",
                snapshot.last_tag
            ),
            Err(e) => {
                tracing::warn!(process = %who, holder = %node, tag = %tag, "refusing its checkpoint ({e}); trying the next newest")
            }
        }
    }
    None
}
