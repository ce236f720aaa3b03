//! Request/response over Zenoh queryables.
//!
//! A server declares a queryable on a key and answers each query with one
//! reply. A caller sends the request as the query payload and waits for
//! the first reply, up to a timeout. Requests that do not decode are
//! answered with an error and logged; they never reach the handler.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Serialize, de::DeserializeOwned};

use crate::codec;

/// Default time a caller waits for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` to the queryable on `key` and decodes the reply.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    session: &zenoh::Session,
    key: &str,
    request: &Req,
    timeout: Duration,
) -> Result<Resp> {
    let replies = session
        .get(key)
        .payload(codec::encode(request))
        .timeout(timeout)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot query {key}"))?;
    let Ok(reply) = replies.recv_async().await else {
        bail!("no answer from {key} within {timeout:?} (is it running and reachable?)");
    };
    let sample = reply.result().map_err(|e| {
        anyhow!(
            "{key} answered with an error: {}",
            String::from_utf8_lossy(&e.payload().to_bytes())
        )
    })?;
    codec::decode(&sample.payload().to_bytes()).with_context(|| format!("bad reply from {key}"))
}

/// Serves requests on `key` until the session closes. Each request is
/// handled in its own task so one slow request does not block others.
pub async fn serve<Req, Resp, H, F>(session: zenoh::Session, key: String, handler: H) -> Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let queryable = session
        .declare_queryable(&key)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot serve {key}"))?;
    while let Ok(query) = queryable.recv_async().await {
        let bytes = query
            .payload()
            .map(|p| p.to_bytes().into_owned())
            .unwrap_or_default();
        let request = match codec::decode::<Req>(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key, "dropping malformed request: {e}");
                let _ = query.reply_err(format!("malformed request: {e}")).await;
                continue;
            }
        };
        let handler = handler.clone();
        let reply_key = key.clone();
        tokio::spawn(async move {
            let response = handler(request).await;
            if let Err(e) = query.reply(&reply_key, codec::encode(&response)).await {
                tracing::warn!(key = %reply_key, "cannot reply: {e}");
            }
        });
    }
    Ok(())
}
