//! Request/response over Zenoh queryables.
//!
//! A server declares a queryable on a key and answers each query with one
//! reply. A caller sends the request as the query payload and waits for
//! the first reply, up to a timeout. JSON requests that do not decode are
//! answered with an error and logged; they never reach the handler.
//!
//! Binary exchanges (a deploy bundle in, a module or a checkpoint out) use
//! the same queryables through [`serve_raw`], [`call_raw`] and [`fetch`].

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Serialize, de::DeserializeOwned};

use crate::codec;

/// Default time a caller waits for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call got no usable answer. Callers tell these apart (the CLI
/// maps them to exit codes), so they are typed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer from {key} within {timeout:?} (is it running and reachable?)")]
    NoAnswer { key: String, timeout: Duration },
    #[error("{key} answered with an error: {message}")]
    Refused { key: String, message: String },
}

/// `key` with selector `parameters`, if any.
fn selector(key: &str, parameters: &str) -> String {
    match parameters {
        "" => key.to_string(),
        _ => format!("{key}?{parameters}"),
    }
}

/// The payload of the first reply to a query on `key`, or `None` when the
/// server answered with nothing (an empty reply).
async fn query(
    session: &zenoh::Session,
    key: &str,
    parameters: &str,
    payload: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Option<Vec<u8>>> {
    let mut get = session.get(selector(key, parameters)).timeout(timeout);
    if let Some(payload) = payload {
        get = get.payload(payload);
    }
    let replies = get
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot query {key}"))?;
    let Ok(reply) = replies.recv_async().await else {
        return Err(CallError::NoAnswer {
            key: key.to_string(),
            timeout,
        }
        .into());
    };
    let sample = reply.result().map_err(|e| CallError::Refused {
        key: key.to_string(),
        message: String::from_utf8_lossy(&e.payload().to_bytes()).into_owned(),
    })?;
    let bytes = sample.payload().to_bytes().into_owned();
    Ok((!bytes.is_empty()).then_some(bytes))
}

/// Sends `request` to the queryable on `key` and decodes the reply.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    session: &zenoh::Session,
    key: &str,
    request: &Req,
    timeout: Duration,
) -> Result<Resp> {
    call_raw(session, key, codec::encode(request), timeout).await
}

/// Sends a binary request to the queryable on `key` and decodes the JSON
/// reply.
pub async fn call_raw<Resp: DeserializeOwned>(
    session: &zenoh::Session,
    key: &str,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Resp> {
    let Some(bytes) = query(session, key, "", Some(request), timeout).await? else {
        bail!("{key} answered with an empty reply");
    };
    codec::decode(&bytes).with_context(|| format!("bad reply from {key}"))
}

/// The binary answer of the queryable on `key` (with selector
/// `parameters`), or `None` when it has nothing.
pub async fn fetch(
    session: &zenoh::Session,
    key: &str,
    parameters: &str,
    timeout: Duration,
) -> Result<Option<Vec<u8>>> {
    query(session, key, parameters, None, timeout).await
}

/// Every answer to a query on `key` (a key expression several queryables
/// may match), each with the key it came on (an error answer carries no
/// key: `key` stands for it): its bytes, or the error it answered with.
/// Waits until all have answered or `timeout` passed. The answers are bulk
/// (checkpoints): they travel at background priority, which replies take
/// from their query, so that no port message waits behind them on a link.
pub async fn fetch_all(
    session: &zenoh::Session,
    key: &str,
    parameters: &str,
    timeout: Duration,
) -> Result<Vec<(String, Result<Vec<u8>, String>)>> {
    let replies = session
        .get(selector(key, parameters))
        .target(zenoh::query::QueryTarget::All)
        .consolidation(zenoh::query::ConsolidationMode::None)
        .priority(zenoh::qos::Priority::Background)
        .timeout(timeout)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot query {key}"))?;
    let mut answers = Vec::new();
    while let Ok(reply) = replies.recv_async().await {
        answers.push(match reply.result() {
            Ok(sample) => (
                sample.key_expr().as_str().to_string(),
                Ok(sample.payload().to_bytes().into_owned()),
            ),
            Err(e) => (
                key.to_string(),
                Err(String::from_utf8_lossy(&e.payload().to_bytes()).into_owned()),
            ),
        });
    }
    Ok(answers)
}

/// Serves JSON requests on `key` until the session closes. Each request is
/// handled in its own task so one slow request does not block others.
pub async fn serve<Req, Resp, H, F>(session: zenoh::Session, key: String, handler: H) -> Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let log_key = key.clone();
    serve_raw(session, key, move |_, _, bytes| {
        let handler = handler.clone();
        let log_key = log_key.clone();
        async move {
            match codec::decode::<Req>(&bytes) {
                Ok(request) => Ok(codec::encode(&handler(request).await)),
                Err(e) => {
                    tracing::warn!(key = %log_key, "dropping malformed request: {e}");
                    Err(format!("malformed request: {e}"))
                }
            }
        }
    })
    .await
}

/// Serves queries on `key` (a key expression) with `handler`, which gets
/// the query's key, parameters and payload and answers with the reply's
/// bytes (empty: "nothing"), or an error message sent as an error reply.
pub async fn serve_raw<H, F>(session: zenoh::Session, key: String, handler: H) -> Result<()>
where
    H: Fn(String, String, Vec<u8>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
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
        let (reply_key, parameters) = (
            query.key_expr().as_str().to_string(),
            query.parameters().as_str().to_string(),
        );
        let handler = handler.clone();
        tokio::spawn(async move {
            let sent = match handler(reply_key.clone(), parameters, bytes).await {
                Ok(reply) => query.reply(&reply_key, reply).await,
                Err(message) => query.reply_err(message).await,
            };
            if let Err(e) = sent {
                tracing::warn!(key = %reply_key, "cannot reply: {e}");
            }
        });
    }
    Ok(())
}

/// The task monitor of every node that answers `keys.all_node_monitors()`
/// within `timeout`, by node name. An answer that does not decode is left
/// out with a warning: a monitor is a view, not a decision.
pub async fn node_monitors(
    session: &zenoh::Session,
    keys: &crate::Keys,
    timeout: Duration,
) -> Result<Vec<crate::proto::NodeMonitor>> {
    let answers = fetch_all(session, &keys.all_node_monitors(), "", timeout).await?;
    let mut monitors: Vec<crate::proto::NodeMonitor> = answers
        .into_iter()
        .filter_map(|(key, answer)| {
            let decoded = answer
                .map_err(|e| anyhow!(e))
                .and_then(|bytes| Ok(codec::decode(&bytes)?));
            decoded
                .map_err(|e| tracing::warn!(key, "bad task monitor: {e:#}"))
                .ok()
        })
        .collect();
    monitors.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(monitors)
}
