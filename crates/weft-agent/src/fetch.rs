//! What a node fetches from the controller: the modules of an app it is
//! to run (by digest, kept in its module store) and the checkpoints its
//! processes resume from. Both travel as binary frames (`weft_fabric::codec`).

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use weft_fabric::codec::{self, CheckpointFrame};
use weft_fabric::keys::MIN_TAG;
use weft_fabric::{Keys, rpc};
use weft_manifest::module::DigestDir;
use weft_manifest::{AppManifest, ModuleRef};
use weft_runtime::Snapshot;
use weft_types::{ProcessRef, Tag};

/// How long a module or checkpoint query waits for its answer (the
/// controller itself waits up to 1.5 s for a fresh enough checkpoint).
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

/// The latest checkpoint of `who` at the controller (waiting briefly for
/// one at or past `min_tag`, if given), if there is one and it decodes.
pub(crate) async fn checkpoint(
    session: &zenoh::Session,
    keys: &Keys,
    who: &ProcessRef,
    min_tag: Option<Tag>,
) -> Option<Snapshot> {
    let params = min_tag.map_or_else(String::new, |t| format!("{MIN_TAG}={}", t.0));
    let key = keys.checkpoint(&who.app, &who.process);
    let reply = match rpc::fetch(session, &key, &params, FETCH_TIMEOUT).await {
        Ok(reply) => reply?,
        Err(e) => {
            tracing::warn!(process = %who, "cannot fetch its checkpoint: {e:#}");
            return None;
        }
    };
    let decoded = CheckpointFrame::decode(&reply)
        .map_err(anyhow::Error::from)
        .and_then(|frame| Ok(Snapshot::decode(&frame.snapshot)?));
    match decoded {
        Ok(snapshot) => Some(snapshot),
        Err(e) => {
            tracing::warn!(process = %who, "refusing its checkpoint: {e:#}");
            None
        }
    }
}
