//! The worker's connection to livekit-server's agent service: the WebSocket
//! at `/agent`, registration, liveness, and reconnecting with backoff.
//!
//! Owns: one task that keeps a registered connection up and turns it into a
//! stream of [`ConnEvent`]s, and sends the [`Outgoing`] messages it is given
//! while registered. Must not touch: jobs, processes, load or drain
//! decisions (`worker::mod` makes them from the events).
//!
//! Protocol facts, as livekit-server v1.13.5 implements them
//! (`pkg/service/agentservice.go`, `pkg/agent/worker.go`):
//! - `GET /agent?protocol=1` upgraded to a WebSocket, bearer JWT whose video
//!   grant has `agent: true`; binary frames carry one protobuf
//!   `WorkerMessage` (worker → server) or `ServerMessage` each.
//! - `register` must be the first message (within 10 s); anything else but a
//!   ping before it, or a second `register`, closes the socket. So messages
//!   queued while disconnected are dropped, never sent before `register`.
//! - The server answers `register` *before* it makes the worker routable;
//!   the `WorkerPong` to a `WorkerPing` sent after the answer proves it is.
//! - The server never checks liveness itself: the worker pings every
//!   [`PING_INTERVAL`] and declares the connection lost after
//!   [`PONG_TIMEOUT`] without a pong.

use futures_util::{SinkExt, StreamExt};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use prost::Message as _;
use proto::{server_message, worker_message};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message};

/// The agent protocol version lk-go speaks (`agent.CurrentProtocol` in
/// livekit-server v1.13.5; the Python and JS SDKs send the same).
pub const AGENT_PROTOCOL: u32 = 1;
/// livekit-server's `RegisterTimeout`; also how long lk-go waits for the
/// answer to `register` and for the readiness pong.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the worker pings the server once registered.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A registered connection without a pong for this long is lost.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait between reconnection attempts: the delay after the n-th
/// consecutive failure is `min(2 (n - 1), 10)` s — 0, 2, 4 … 10 — as in
/// LiveKit Agents (`worker.py`, `_connection_task`).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// What the worker registers as.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Empty: automatic dispatch (every room without an explicit agents
    /// list); a name: only dispatches naming it.
    pub agent_name: String,
    pub job_type: proto::JobType,
    /// Reported to the server as the worker's version.
    pub version: String,
    /// What its jobs may do (`allowed_permissions`; the server copies it
    /// into every job token).
    pub permissions: proto::ParticipantPermission,
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct AgentEndpoint {
    /// The server URLs as the user gave them (`ws`, `wss`, `http`,
    /// `https`): the nodes of one LiveKit deployment. Each connection round
    /// tries them in order and registers with the first that answers, so a
    /// worker whose node died registers with the next at once. Never empty.
    pub urls: Vec<String>,
    pub api_key: String,
    pub api_secret: String,
    /// Retries after a failed attempt, in a row, before the worker gives up
    /// (so `max_retries + 1` attempts in all); `None`: never.
    pub max_retries: Option<u32>,
}

impl std::fmt::Debug for AgentEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEndpoint")
            .field("urls", &self.urls)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

/// What the connection task reports.
#[derive(Debug)]
pub enum ConnEvent {
    /// Registered and routable (the readiness pong arrived) with the
    /// server at `url`.
    Ready {
        worker_id: String,
        server_version: String,
        url: String,
    },
    /// A message from the server (pongs are handled here, not passed on).
    Message(Box<server_message::Message>),
    /// The connection failed or was lost; the task retries after `retry_in`.
    Lost { error: String, retry_in: Duration },
    /// The task gave up: wrong credentials (77), or `max_retries`
    /// consecutive failures (69). The worker exits with `code`.
    Fatal { code: i32, error: String },
}

/// A message for the server. Dropped when not registered (and `processed`
/// with it, so its waiter learns nothing was delivered).
#[derive(Debug)]
pub struct Outgoing {
    pub msg: worker_message::Message,
    /// Fired once the server has *processed* the message: the server handles
    /// a worker's messages one at a time, in order, and answers a ping in
    /// that same loop, so the pong to a ping sent right after the message
    /// proves it (livekit-server v1.13.5 `agentservice.go`). Used for the
    /// final job status, which must be recorded before the job's participant
    /// leaves the room over its own connection.
    pub processed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Outgoing {
    pub fn new(msg: worker_message::Message) -> Outgoing {
        Outgoing {
            msg,
            processed: None,
        }
    }
}

/// Why one attempt failed.
#[derive(Debug)]
enum AttemptError {
    Unauthorized(String),
    Other(String),
}

/// `ws(s)://host[/path]/agent?protocol=1` for a server URL.
pub fn agent_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let lower = url.to_ascii_lowercase();
    let rest_at = url.find("://").map(|i| i + 3).unwrap_or(0);
    let scheme = if lower.starts_with("https://") || lower.starts_with("wss://") {
        "wss"
    } else {
        "ws"
    };
    let rest = url[rest_at..].split('?').next().unwrap_or("");
    format!("{scheme}://{rest}/agent?protocol={AGENT_PROTOCOL}")
}

/// The worker's bearer token: a video grant with `agent: true`, no room, no
/// identity (as LiveKit Agents mints it), valid for an hour; a new one is
/// minted for every connection attempt.
fn worker_token(endpoint: &AgentEndpoint) -> Result<String, String> {
    let token = AccessToken::with_api_key(&endpoint.api_key, &endpoint.api_secret)
        .with_ttl(Duration::from_secs(3600))
        .with_grants(VideoGrants {
            agent: true,
            ..Default::default()
        })
        .to_jwt()
        .map_err(|e| format!("could not mint the worker token: {e}"))?;
    crate::secrets::register(&token);
    Ok(token)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn encode(msg: worker_message::Message) -> Message {
    let bytes = proto::WorkerMessage { message: Some(msg) }.encode_to_vec();
    Message::Binary(bytes.into())
}

/// Reads the next server message; `Ok(None)` for frames that carry none
/// (ping/pong control frames, text frames lk-go does not use).
async fn next_server_message(ws: &mut Ws) -> Result<Option<server_message::Message>, String> {
    match ws.next().await {
        None => Err("the server closed the connection".into()),
        Some(Err(e)) => Err(format!("connection error: {e}")),
        Some(Ok(Message::Binary(bytes))) => proto::ServerMessage::decode(bytes.as_ref())
            .map(|m| m.message)
            .map_err(|e| format!("undecodable server message: {e}")),
        Some(Ok(Message::Close(frame))) => Err(match frame {
            Some(f) if !f.reason.is_empty() => {
                format!("the server closed the connection: {}", f.reason)
            }
            _ => "the server closed the connection".into(),
        }),
        Some(Ok(_)) => Ok(None),
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Connects, registers, and waits for the readiness pong.
async fn attempt(
    endpoint: &AgentEndpoint,
    server_url: &str,
    registration: &Registration,
) -> Result<(Ws, String, String), AttemptError> {
    let token = worker_token(endpoint).map_err(AttemptError::Other)?;
    let url = agent_url(server_url);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| AttemptError::Other(format!("invalid agent URL {url}: {e}")))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| AttemptError::Other("the worker token is not a valid header".into()))?;
    request.headers_mut().insert("Authorization", bearer);
    let connect = tokio_tungstenite::connect_async(request);
    let (mut ws, _) = match tokio::time::timeout(REGISTER_TIMEOUT, connect).await {
        Err(_) => {
            return Err(AttemptError::Other(format!(
                "no answer from {url} within {} s",
                REGISTER_TIMEOUT.as_secs()
            )))
        }
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_ref()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .trim()
                        .chars()
                        .take(300)
                        .collect::<String>()
                })
                .unwrap_or_default();
            let detail = format!("HTTP {status} {body}").trim().to_string();
            return Err(if status.as_u16() == 401 || status.as_u16() == 403 {
                AttemptError::Unauthorized(detail)
            } else {
                AttemptError::Other(detail)
            });
        }
        Ok(Err(e)) => return Err(AttemptError::Other(e.to_string())),
        Ok(Ok(pair)) => pair,
    };
    let register = worker_message::Message::Register(proto::RegisterWorkerRequest {
        r#type: registration.job_type as i32,
        agent_name: registration.agent_name.clone(),
        version: registration.version.clone(),
        allowed_permissions: Some(registration.permissions.clone()),
        ..Default::default()
    });
    let handshake = async {
        ws.send(encode(register))
            .await
            .map_err(|e| format!("could not send register: {e}"))?;
        let (worker_id, server_version) = loop {
            if let Some(server_message::Message::Register(r)) = next_server_message(&mut ws).await?
            {
                let version = r.server_info.map(|i| i.version).unwrap_or_default();
                break (r.worker_id, version);
            }
        };
        let sent = unix_ms();
        ws.send(encode(worker_message::Message::Ping(proto::WorkerPing {
            timestamp: sent,
        })))
        .await
        .map_err(|e| format!("could not send ping: {e}"))?;
        loop {
            if let Some(server_message::Message::Pong(_)) = next_server_message(&mut ws).await? {
                break;
            }
        }
        Ok::<_, String>((worker_id, server_version))
    };
    match tokio::time::timeout(REGISTER_TIMEOUT, handshake).await {
        Err(_) => Err(AttemptError::Other(format!(
            "the server did not answer the registration within {} s",
            REGISTER_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(AttemptError::Other(e)),
        Ok(Ok((worker_id, version))) => Ok((ws, worker_id, version)),
    }
}

/// Delay before the attempt that follows `failures` consecutive failures.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs((2 * u64::from(failures.saturating_sub(1))).min(MAX_RETRY_DELAY.as_secs()))
}

/// Runs the connection until `outgoing` is closed (the worker is done) or
/// a fatal error. Never returns an error: everything is an event.
pub async fn run_connection(
    endpoint: AgentEndpoint,
    registration: Registration,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    events: mpsc::UnboundedSender<ConnEvent>,
) {
    // Consecutive failures, a lost session included (for the backoff), and
    // failed attempts to register since the last success (for
    // `max_retries`: the first attempt plus that many retries).
    let mut failures: u32 = 0;
    let mut failed_attempts: u32 = 0;
    loop {
        // Anything queued while disconnected belongs to the old
        // registration, and must not precede `register`.
        while let Ok(_stale) = outgoing.try_recv() {}
        // One round: every URL in order, until one registers.
        let mut round: Result<(Ws, String, String, String), String> = Err(String::new());
        let mut errors = Vec::new();
        for url in &endpoint.urls {
            match attempt(&endpoint, url, &registration).await {
                Err(AttemptError::Unauthorized(detail)) => {
                    let _ = events.send(ConnEvent::Fatal {
                        code: crate::exit::AUTH_REFUSED,
                        error: format!(
                            "LiveKit server at {url} refused the worker's credentials ({detail}); check --api-key/--api-secret (LIVEKIT_API_KEY/LIVEKIT_API_SECRET)"
                        ),
                    });
                    return;
                }
                Err(AttemptError::Other(e)) => {
                    if endpoint.urls.len() > 1 {
                        tracing::warn!(url = %url, error = %e, "could not register; trying the next --url");
                    }
                    errors.push(if endpoint.urls.len() > 1 {
                        format!("{url}: {e}")
                    } else {
                        e
                    });
                }
                Ok((ws, worker_id, version)) => {
                    round = Ok((ws, worker_id, version, url.clone()));
                    break;
                }
            }
        }
        let error = match round {
            Err(_) => {
                failed_attempts += 1;
                errors.join("; ")
            }
            Ok((mut ws, worker_id, server_version, url)) => {
                failures = 0;
                failed_attempts = 0;
                let _ = events.send(ConnEvent::Ready {
                    worker_id,
                    server_version,
                    url,
                });
                match session(&mut ws, &mut outgoing, &events).await {
                    None => {
                        let _ = ws.close(None).await;
                        return;
                    }
                    Some(e) => e,
                }
            }
        };
        failures += 1;
        if endpoint
            .max_retries
            .is_some_and(|max| failed_attempts > max)
        {
            let _ = events.send(ConnEvent::Fatal {
                code: crate::exit::SERVER_UNAVAILABLE,
                error: format!(
                    "could not register with the LiveKit server at {} in {} attempt{} ({error}); is livekit-server running? (try `cargo xtask livekit`), or raise --max-retries",
                    endpoint.urls.join(", "),
                    failed_attempts,
                    if failed_attempts == 1 { "" } else { "s" }
                ),
            });
            return;
        }
        let retry_in = retry_delay(failures);
        let _ = events.send(ConnEvent::Lost {
            error: error.clone(),
            retry_in,
        });
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            // The worker finished while we were waiting.
            _ = events.closed() => return,
        }
    }
}

/// One registered session: returns `None` when the worker closed
/// `outgoing` (done), or why the connection was lost.
async fn session(
    ws: &mut Ws,
    outgoing: &mut mpsc::UnboundedReceiver<Outgoing>,
    events: &mpsc::UnboundedSender<ConnEvent>,
) -> Option<String> {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pong = Instant::now();
    // Ping timestamps, strictly increasing so that a pong's `last_timestamp`
    // says which pings the server has answered.
    let mut last_ping_ts = 0i64;
    let mut next_ts = move || {
        last_ping_ts = unix_ms().max(last_ping_ts + 1);
        last_ping_ts
    };
    // Waiters for "processed", each with the timestamp of the ping sent
    // right after its message.
    let mut waiting: std::collections::VecDeque<(i64, tokio::sync::oneshot::Sender<()>)> =
        std::collections::VecDeque::new();
    loop {
        tokio::select! {
            msg = outgoing.recv() => match msg {
                None => return None,
                Some(Outgoing { msg, processed }) => {
                    if let Err(e) = ws.send(encode(msg)).await {
                        return Some(format!("could not send to the server: {e}"));
                    }
                    if let Some(processed) = processed {
                        let ts = next_ts();
                        let ping = worker_message::Message::Ping(proto::WorkerPing { timestamp: ts });
                        if let Err(e) = ws.send(encode(ping)).await {
                            return Some(format!("could not send to the server: {e}"));
                        }
                        waiting.push_back((ts, processed));
                    }
                }
            },
            received = next_server_message(ws) => match received {
                Err(e) => return Some(e),
                Ok(Some(server_message::Message::Pong(pong))) => {
                    last_pong = Instant::now();
                    while waiting.front().is_some_and(|(ts, _)| *ts <= pong.last_timestamp) {
                        if let Some((_, processed)) = waiting.pop_front() {
                            let _ = processed.send(());
                        }
                    }
                }
                Ok(Some(msg)) => {
                    if events.send(ConnEvent::Message(Box::new(msg))).is_err() {
                        return None;
                    }
                }
                Ok(None) => {}
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > PONG_TIMEOUT {
                    return Some(format!("no pong from the server for {} s", PONG_TIMEOUT.as_secs()));
                }
                let ping = worker_message::Message::Ping(proto::WorkerPing { timestamp: next_ts() });
                if let Err(e) = ws.send(encode(ping)).await {
                    return Some(format!("could not send to the server: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls_follow_the_server_url() {
        assert_eq!(
            agent_url("ws://127.0.0.1:7880"),
            "ws://127.0.0.1:7880/agent?protocol=1"
        );
        assert_eq!(agent_url("http://h:1/"), "ws://h:1/agent?protocol=1");
        assert_eq!(
            agent_url("https://x.livekit.cloud"),
            "wss://x.livekit.cloud/agent?protocol=1"
        );
        assert_eq!(agent_url("WSS://h/base"), "wss://h/base/agent?protocol=1");
    }

    #[test]
    fn retries_back_off_like_livekit_agents() {
        let secs: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 2, 4, 6, 8, 10, 10, 10]);
    }

    #[test]
    fn the_worker_token_carries_the_agent_grant() {
        let endpoint = AgentEndpoint {
            urls: vec!["ws://h".into()],
            api_key: "k".into(),
            api_secret: "a-secret-of-some-length".into(),
            max_retries: None,
        };
        let token = worker_token(&endpoint).unwrap();
        let claims =
            livekit_api::access_token::TokenVerifier::with_api_key("k", "a-secret-of-some-length")
                .verify(&token)
                .unwrap();
        assert!(claims.video.agent);
        assert!(!format!("{endpoint:?}").contains("a-secret"));
    }
}
