//! The LiveKit session over the signal connection (WebSocket `/rtc`).
//!
//! Owns: minting the access token, joining through `livekit-signaling`,
//! turning participant updates into participant and track-publication events,
//! asking for the subscriptions `--auto-subscribe` selects, watching liveness
//! (no message for `liveness_timeout` → disconnected), mapping the server's
//! leave reasons, and leaving on shutdown. Never logs the token or secret.
//!
//! The media half (peer connections, TrackSubscribed, publishing) lives in
//! [`super::rtc`]; this module routes the media signal messages to it.
//!
//! Must not touch: jobs or plugins; everything goes out through the
//! [`RoomEmitter`].

use super::roster::{Roster, SharedRoster};
use super::rtc::MEDIA_CONNECT_TIMEOUT;
use super::rtc::{PublishError, RtcSession};
use super::{BoxFuture, ConnectError, JoinRequest, Joined, RoomConnector, RoomEmitter, RoomLink};
use crate::events::{DisconnectReason, Event, TrackKind, TrackRef};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use livekit_signaling::{SignalClient, SignalError, SignalEvent, SignalOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;

/// How the job authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// Mint a token from an API key and secret.
    KeySecret { key: String, secret: String },
    /// Use this token as is.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::KeySecret { key, .. } => {
                write!(f, "KeySecret {{ key: {key:?}, secret: <redacted> }}")
            }
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// Which remote tracks to subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoSubscribe {
    All,
    None,
    Audio,
    Video,
}

impl AutoSubscribe {
    fn wants(self, kind: TrackKind) -> bool {
        match self {
            AutoSubscribe::All => true,
            AutoSubscribe::None => false,
            AutoSubscribe::Audio => kind == TrackKind::Audio,
            AutoSubscribe::Video => kind == TrackKind::Video,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LiveKitSettings {
    /// `ws://`, `wss://`, `http://` or `https://` URLs of the server (one,
    /// or several nodes of one LiveKit deployment): the job joins through
    /// the first that answers, and when a recovery attempt cannot reach the
    /// one it uses, it rejoins through the next (LiveKit routes a
    /// participant to its room's node from any node). Never empty.
    pub urls: Vec<String>,
    pub credentials: Credentials,
    pub auto_subscribe: AutoSubscribe,
    /// Declare the server gone after this long without any message from it.
    /// The server pings every 5 s (JoinResponse.ping_interval) and answers
    /// our pings, so a healthy connection is never silent that long.
    pub liveness_timeout: Duration,
    /// How long to try to resume (then rejoin) an interrupted session before
    /// the job ends with `server_unreachable`. Zero: end at once.
    pub reconnect_window: Duration,
    /// How long, within the window, every attempt may fail without reaching
    /// the server (connection refused or reset, no answer to the WebSocket
    /// upgrade) before the server counts as gone and the session ends.
    /// A server that answers anything (even a refused resume) gets the
    /// whole window. Capped by `reconnect_window`.
    pub unreachable_timeout: Duration,
}

/// Default [`LiveKitSettings::reconnect_window`]: about as long as the
/// official Python SDK keeps retrying (measured ~22 s in `cargo xtask
/// bench`), long enough for a server restart.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(20);

/// Default [`LiveKitSettings::unreachable_timeout`]. The seed's promise is
/// `shutdown(server_unreachable)` within 2 s of losing the server: a killed
/// server is noticed within milliseconds (the socket resets), and three
/// attempts (at once, +0.3 s, +1.3 s) fit in 1.5 s, so a network blip or a
/// restart shorter than that still recovers.
pub const DEFAULT_UNREACHABLE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Joins real LiveKit rooms.
#[derive(Clone, Debug)]
pub struct LiveKitConnector {
    settings: LiveKitSettings,
}

impl LiveKitConnector {
    pub fn new(settings: LiveKitSettings) -> Self {
        LiveKitConnector { settings }
    }

    /// The join token: the given one (trimmed: a pasted token often
    /// carries a newline), or one minted from key and secret. Either way it
    /// is registered as a secret, so no log line can carry it.
    fn token(&self, request: &JoinRequest) -> Result<String, ConnectError> {
        let token = self.token_unregistered(request)?;
        crate::secrets::register(&token);
        Ok(token)
    }

    fn token_unregistered(&self, request: &JoinRequest) -> Result<String, ConnectError> {
        match &self.settings.credentials {
            Credentials::Token(t) => Ok(t.trim().to_string()),
            Credentials::KeySecret { key, secret } => AccessToken::with_api_key(key, secret)
                .with_identity(&request.identity)
                .with_name(&request.identity)
                .with_kind("agent")
                .with_ttl(Duration::from_secs(6 * 3600))
                .with_grants(VideoGrants {
                    room_join: true,
                    room: request.room_name.clone(),
                    can_publish: Some(true),
                    can_subscribe: Some(true),
                    can_publish_data: Some(true),
                    // set_attributes / set_metadata (ABI 1.3): the server
                    // refuses them without this grant.
                    can_update_own_metadata: Some(true),
                    ..Default::default()
                })
                .to_jwt()
                .map_err(|e| ConnectError::Token(e.to_string())),
        }
    }
}

/// What a ready token (`--token`) grants, read without verifying it (the
/// server verifies): the room (`video.room`) and the identity (`sub`).
/// Empty when the token does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub room: String,
    pub identity: String,
}

/// Reads [`TokenClaims`] from a JWT's payload. Errs (usage, 64) when the
/// token is not a JWT. Never includes the token in the message.
pub fn token_claims(token: &str) -> Result<TokenClaims, ConnectError> {
    use base64::Engine;
    crate::secrets::register(token);
    let bad =
        |why: &str| ConnectError::Token(format!("--token is not a LiveKit access token: {why}"));
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("expected header.payload.signature"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("its payload is not base64url"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("its payload is not JSON"))?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    Ok(TokenClaims {
        room: text(&json["video"]["room"]),
        identity: text(&json["sub"]),
    })
}

/// Checks the URL ourselves so a typo gets a clear one-line error.
pub(crate) fn validate_url(url: &str) -> Result<(), ConnectError> {
    let bad = |why: &str| ConnectError::InvalidUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    // user:password@ first, whatever the scheme: a URL carrying a password
    // must not be echoed by any error below.
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    if authority
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .contains('@')
    {
        return Err(ConnectError::InvalidUrl {
            url: "<url with user info>".to_string(),
            why: "user:password@ in the URL is not supported (it would be printed); pass credentials with --api-key/--api-secret or --token".to_string(),
        });
    }
    // Schemes are case-insensitive (RFC 3986 §3.1).
    let lower = url.to_ascii_lowercase();
    let scheme_len = ["ws://", "wss://", "http://", "https://"]
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
        .map(|scheme| scheme.len())
        .ok_or_else(|| bad("the scheme must be ws, wss, http or https"))?;
    let rest = &url[scheme_len..];
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    Ok(())
}

/// The server echoes the token in some error bodies; a token is a
/// credential, so it never reaches a message.
fn redact(body: &str, token: &str) -> String {
    let body = body.trim();
    let body = if token.is_empty() {
        body.to_string()
    } else {
        body.replace(token, "<token>")
    };
    // A server's error body can be megabytes; the error line keeps its
    // start, so the line's own hint stays visible.
    const MAX_BODY_CHARS: usize = 300;
    if body.chars().count() > MAX_BODY_CHARS {
        let cut: String = body.chars().take(MAX_BODY_CHARS).collect();
        format!("{cut}… [cut]")
    } else {
        body
    }
}

fn map_connect_error(url: &str, token: &str, e: SignalError) -> ConnectError {
    let url = url.to_string();
    match e {
        SignalError::UrlParse(why) => ConnectError::InvalidUrl { url, why },
        SignalError::TokenFormat => {
            ConnectError::Token("the access token has invalid characters".into())
        }
        SignalError::Client(status, body) if status.as_u16() == 401 || status.as_u16() == 403 => {
            ConnectError::Unauthorized {
                url,
                detail: format!("{} {}", status.as_u16(), redact(&body, token)),
            }
        }
        SignalError::Handshake { status } if status.as_u16() == 401 || status.as_u16() == 403 => {
            ConnectError::Unauthorized {
                url,
                detail: format!("{}", status.as_u16()),
            }
        }
        SignalError::Client(status, body) | SignalError::Server(status, body) => {
            ConnectError::Server {
                url,
                detail: format!("{} {}", status.as_u16(), redact(&body, token)),
            }
        }
        SignalError::Handshake { status } => ConnectError::Server {
            url,
            detail: format!("WebSocket upgrade answered {}", status.as_u16()),
        },
        SignalError::Connection(detail) => ConnectError::Unreachable { url, detail },
        SignalError::Timeout(detail) => ConnectError::Unreachable {
            url,
            detail: format!("timed out: {detail}"),
        },
        other => ConnectError::Unreachable {
            url,
            detail: other.to_string(),
        },
    }
}

/// Classifies a server Leave (livekit-protocol `LeaveRequest`, as sent by
/// livekit-server v1.13.5). An action of RESUME or RECONNECT means "come
/// back", whatever the reason; lk-go does not resume sessions yet, so that
/// ends the job as an outage, not as the room's natural end.
fn leave_reason(leave: &proto::LeaveRequest) -> (DisconnectReason, String) {
    let reason = proto::DisconnectReason::try_from(leave.reason)
        .unwrap_or(proto::DisconnectReason::UnknownReason);
    let action = proto::leave_request::Action::try_from(leave.action)
        .unwrap_or(proto::leave_request::Action::Disconnect);
    let detail = format!(
        "server sent leave (reason {}, action {})",
        reason.as_str_name(),
        action.as_str_name()
    );
    match action {
        proto::leave_request::Action::Resume | proto::leave_request::Action::Reconnect
            if reason != proto::DisconnectReason::DuplicateIdentity =>
        {
            (DisconnectReason::ReconnectRequested, detail)
        }
        _ => (disconnect_reason(leave.reason), detail),
    }
}

fn disconnect_reason(r: i32) -> DisconnectReason {
    match proto::DisconnectReason::try_from(r) {
        Ok(proto::DisconnectReason::RoomDeleted) => DisconnectReason::RoomDeleted,
        Ok(proto::DisconnectReason::RoomClosed) => DisconnectReason::RoomClosed,
        Ok(proto::DisconnectReason::ParticipantRemoved) => DisconnectReason::ParticipantRemoved,
        Ok(proto::DisconnectReason::DuplicateIdentity) => DisconnectReason::DuplicateIdentity,
        Ok(proto::DisconnectReason::ServerShutdown) => DisconnectReason::ServerShutdown,
        _ => DisconnectReason::ServerLeave,
    }
}

/// One signal connection and the peer connections negotiated over it: what
/// a full reconnect replaces (a resume keeps it).
struct Conn {
    client: SignalClient,
    rtc: Arc<RtcSession>,
    joined: Joined,
    /// This connection's forwarder and track matcher.
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Cancelled when one of `tasks` ends by itself (returns or panics):
    /// the connection would run deaf, so the session recovers it.
    broken: tokio_util::sync::CancellationToken,
}

/// Cancels its token when dropped, i.e. when the task holding it ends for
/// whatever reason. (An abort on purpose cancels it too, but by then nobody
/// serves that connection any more.)
struct BrokenOnExit(tokio_util::sync::CancellationToken);

impl Drop for BrokenOnExit {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Conn {
    /// Sends a signal-level ping; the server answers with a pong, which
    /// counts as hearing from it.
    async fn ping(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.client
            .send(proto::signal_request::Message::PingReq(proto::Ping {
                timestamp: now_ms,
                rtt: 0,
            }))
            .await;
    }

    fn abort_tasks(&self) {
        for task in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner())) {
            task.abort();
        }
    }
}

/// A LiveKit session: the current connection, and what outlives it.
struct Session {
    settings: LiveKitSettings,
    /// The server's URLs (validated); `url_index` is the one in use.
    urls: Vec<String>,
    url_index: std::sync::atomic::AtomicUsize,
    emitter: RoomEmitter,
    roster: SharedRoster,
    current: std::sync::Mutex<Arc<Conn>>,
    left: AsyncMutex<bool>,
    /// The session loop (signal messages, liveness, recovery).
    main: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Session {
    /// The URL the session uses now.
    fn url(&self) -> String {
        let i = self.url_index.load(std::sync::atomic::Ordering::Acquire);
        self.urls[i % self.urls.len()].clone()
    }

    /// Moves to the next URL (after one that could not be reached);
    /// returns false when there is only one.
    fn next_url(&self) -> bool {
        if self.urls.len() < 2 {
            return false;
        }
        let i = self
            .url_index
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        tracing::info!(url = %self.urls[i % self.urls.len()], "recovering through the next server URL");
        true
    }

    fn conn(&self) -> Arc<Conn> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Leaves the room when a join is abandoned half-way (its future dropped
/// after the signal connection was up), so no ghost participant stays.
struct LeaveOnDrop(Option<Arc<Session>>);

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let link = LiveKitLink { session };
                    link.leave().await;
                    link.close_tracks().await;
                });
            }
        }
    }
}

/// The link the room holds for a LiveKit session.
pub struct LiveKitLink {
    session: Arc<Session>,
}

fn signal_options(settings: &LiveKitSettings) -> SignalOptions {
    let mut options = SignalOptions::default();
    options.auto_subscribe = settings.auto_subscribe == AutoSubscribe::All;
    // A self-hosted server has no regions to fail over to.
    options.region_failover = false;
    options.connect_timeout = Duration::from_secs(5);
    advertise(&mut options);
    options
}

/// Signal protocol lk-go speaks: 15. livekit-server v1.13.5 reads the
/// number as a set of promises: >= 13, leave requests carry an action
/// (lk-go resumes or rejoins on it); >= 15, a RequestResponse confirms
/// every metadata update (set_attributes waits for it); >= 16 the server
/// may move the participant to another room (RoomMovedResponse), which
/// lk-go does not handle, so it stays below; 18 (livekit-signaling's
/// default) promises negotiated data channels lk-go does not create.
pub const SIGNAL_PROTOCOL: u32 = 15;
/// Data protocol advertised to other participants (`ClientInfo.client_protocol`,
/// which they read to decide what to send): see [`advertise`].
pub const CLIENT_PROTOCOL: i32 = 2;

/// What the join tells the server and the other participants lk-go can
/// do — exactly what it implements, never more: a peer believing lk-go
/// handles more sends it what it silently drops (livekit-client 2.23 sends
/// RPC as a stream to a callee at protocol 1). No capabilities: lk-go
/// neither strips video frame trailers (CAP_PACKET_TRAILER) nor inflates
/// compressed data streams (CAP_COMPRESSION_DEFLATE_RAW).
fn advertise(options: &mut SignalOptions) {
    options.protocol_version = SIGNAL_PROTOCOL;
    options.client_protocol = CLIENT_PROTOCOL;
    options.client_capabilities = Vec::new();
}

/// Opens a signal connection and its peer connections, reports the room as
/// the JoinResponse describes it — as a diff against what the roster knew,
/// so on a full reconnect only what changed becomes events — and starts the
/// connection's tasks. Does not wait for media.
async fn open_conn(
    settings: &LiveKitSettings,
    url: &str,
    token: &str,
    emitter: &RoomEmitter,
    roster: &SharedRoster,
) -> Result<(Arc<Conn>, livekit_signaling::SignalEvents), ConnectError> {
    // Belt and braces over the client's own connect timeout, so a
    // black-holed address fails within 10 s as documented.
    let connected = tokio::time::timeout(
        Duration::from_secs(9),
        SignalClient::connect(url, token, signal_options(settings), None),
    )
    .await
    .map_err(|_| ConnectError::Unreachable {
        url: url.to_string(),
        detail: "no answer within 9 s".into(),
    })?;
    let (client, join, events) = connected.map_err(|e| map_connect_error(url, token, e))?;
    tracing::info!(
        room = %join.room.as_ref().map(|r| r.name.as_str()).unwrap_or(""),
        room_sid = %join.room.as_ref().map(|r| r.sid.as_str()).unwrap_or(""),
        participant_sid = %join.participant.as_ref().map(|p| p.sid.as_str()).unwrap_or(""),
        server_version = %join.server_info.as_ref().map(|s| s.version.as_str()).unwrap_or(""),
        ping_interval_s = join.ping_interval,
        ping_timeout_s = join.ping_timeout,
        event = "signal_joined",
        // `cargo xtask bench` measures exec -> JoinResponse with it.
        unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
        "signal connection established"
    );
    let (outgoing, mut outgoing_rx) = tokio::sync::mpsc::unbounded_channel();
    let (rtc, remote_tracks) = match RtcSession::new(&join, outgoing, emitter.clone()).await {
        Ok(made) => made,
        Err(detail) => {
            client.close().await;
            return Err(ConnectError::Server {
                url: url.to_string(),
                detail: format!("could not set up WebRTC: {detail}"),
            });
        }
    };
    let participant = join.participant.clone().unwrap_or_default();
    let joined = Joined {
        room_name: join
            .room
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default(),
        room_sid: join
            .room
            .as_ref()
            .map(|r| r.sid.clone())
            .unwrap_or_default(),
        participant_identity: participant.identity.clone(),
        participant_sid: participant.sid.clone(),
    };
    let data = emitter.data();
    data.set_server_version(
        join.server_info
            .as_ref()
            .map(|s| s.version.as_str())
            .unwrap_or(""),
    );
    for p in &join.other_participants {
        data.set_peer_protocol(&p.identity, p.client_protocol);
    }
    let (events_now, new_tracks) = roster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace_all(&participant.sid, &join.other_participants);
    for ev in events_now {
        emitter.emit(ev);
    }
    for (participant_sid, tracks) in &new_tracks {
        subscribe_selected(&client, settings.auto_subscribe, participant_sid, tracks).await;
    }
    let conn = Arc::new(Conn {
        client,
        rtc: rtc.clone(),
        joined,
        tasks: std::sync::Mutex::new(Vec::new()),
        broken: tokio_util::sync::CancellationToken::new(),
    });
    let forwarder_conn = Arc::downgrade(&conn);
    let forwarder_guard = BrokenOnExit(conn.broken.clone());
    let forwarder = tokio::spawn(async move {
        let _guard = forwarder_guard;
        while let Some(msg) = outgoing_rx.recv().await {
            let Some(conn) = forwarder_conn.upgrade() else {
                break;
            };
            conn.client.send(msg).await;
        }
    });
    let matcher = tokio::spawn(rtc.run_track_matcher(remote_tracks, roster.clone()));
    conn.tasks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([forwarder, matcher]);
    Ok((conn, events))
}

impl RoomConnector for LiveKitConnector {
    fn connect<'a>(
        &'a self,
        request: &'a JoinRequest,
        emitter: RoomEmitter,
    ) -> BoxFuture<'a, Result<Box<dyn RoomLink>, ConnectError>> {
        Box::pin(async move {
            let mut urls = Vec::new();
            for url in &self.settings.urls {
                let url = url.trim().to_string();
                validate_url(&url)?;
                // `WS://` is valid; the signal client wants it lower-case.
                urls.push(match url.split_once("://") {
                    Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
                    None => url,
                });
            }
            if urls.is_empty() {
                return Err(ConnectError::InvalidUrl {
                    url: String::new(),
                    why: "no server URL given".into(),
                });
            }
            let token = self.token(request)?;
            let roster: SharedRoster = Arc::new(std::sync::Mutex::new(Roster::default()));
            // The first URL that answers (one that refuses the credentials,
            // or errs otherwise, is an answer: that error is the job's).
            let mut opened = None;
            let mut last_unreachable = None;
            for (i, url) in urls.iter().enumerate() {
                match open_conn(&self.settings, url, &token, &emitter, &roster).await {
                    Ok(pair) => {
                        opened = Some((i, pair));
                        break;
                    }
                    Err(e @ ConnectError::Unreachable { .. }) => {
                        if urls.len() > 1 {
                            tracing::warn!(url = %url, error = %e, "LiveKit server unreachable; trying the next --url");
                        }
                        last_unreachable = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some((index, (conn, mut events))) = opened else {
                return Err(last_unreachable.expect("at least one URL was tried"));
            };
            let url = urls[index].clone();
            let session = Arc::new(Session {
                settings: self.settings.clone(),
                urls,
                url_index: std::sync::atomic::AtomicUsize::new(index),
                emitter,
                roster,
                current: std::sync::Mutex::new(conn.clone()),
                left: AsyncMutex::new(false),
                main: std::sync::Mutex::new(None),
            });
            // Joined means media too, as in the official SDKs: a session whose
            // peer connection never connects would run deaf. The wait serves
            // the signal messages the connection needs; if this future is
            // dropped meanwhile (shutdown during the join), the guard still
            // leaves the room.
            let mut guard = LeaveOnDrop(Some(session.clone()));
            let media =
                wait_media(&session, &conn, &mut events, MEDIA_CONNECT_TIMEOUT, false).await;
            guard.0 = None;
            let link = LiveKitLink {
                session: session.clone(),
            };
            let failure = match media {
                Ok(Ok(())) => None,
                Ok(Err(failed)) if failed.cause == FailCause::Media => {
                    Some(ConnectError::MediaFailed {
                        url: url.clone(),
                        detail: failed.detail,
                    })
                }
                Ok(Err(failed)) => Some(ConnectError::Unreachable {
                    url: url.clone(),
                    detail: format!("lost while joining: {}", failed.detail),
                }),
                Err((DisconnectReason::DuplicateIdentity, detail)) => {
                    Some(ConnectError::DuplicateIdentity { detail })
                }
                Err((reason, detail)) => Some(ConnectError::Server {
                    url: url.clone(),
                    detail: format!(
                        "the server ended the session while joining ({reason}): {detail}"
                    ),
                }),
            };
            if let Some(e) = failure {
                link.leave().await;
                link.close_tracks().await;
                return Err(e);
            }
            let main = tokio::spawn(session_loop(session.clone(), events));
            *session.main.lock().unwrap_or_else(|e| e.into_inner()) = Some(main);
            Ok(Box::new(link) as Box<dyn RoomLink>)
        })
    }
}

/// With `--auto-subscribe audio|video` the server subscribes to nothing by
/// itself; ask for the tracks of the selected kind.
async fn subscribe_selected(
    client: &SignalClient,
    mode: AutoSubscribe,
    participant_sid: &str,
    tracks: &[TrackRef],
) {
    if matches!(mode, AutoSubscribe::All | AutoSubscribe::None) {
        return;
    }
    let sids: Vec<String> = tracks
        .iter()
        .filter(|t| mode.wants(t.kind))
        .map(|t| t.sid.clone())
        .collect();
    if sids.is_empty() {
        return;
    }
    client
        .send(proto::signal_request::Message::Subscription(
            proto::UpdateSubscription {
                track_sids: sids.clone(),
                subscribe: true,
                participant_tracks: vec![proto::ParticipantTracks {
                    participant_sid: participant_sid.to_string(),
                    track_sids: sids,
                }],
            },
        ))
        .await;
}

/// How a connected stretch of the session ended.
enum Ending {
    /// The session is over (the room's end, a kick, a refusal).
    Final(DisconnectReason, String),
    /// The connection was interrupted: resume it (or, with `full`, join
    /// again as a new session) within the reconnect window.
    Recoverable {
        reason: DisconnectReason,
        detail: String,
        full: bool,
    },
}

/// Delays before the 2nd, 3rd, ... recovery attempt (the first is at
/// once), like the official SDKs' short-then-capped backoff.
const RECOVERY_BACKOFF: [Duration; 5] = [
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(5),
];
/// How a resume (not a rejoin) is reported.
const RESUMED: &str = "resumed";
/// Attempts that try to resume (same participant) before falling back to
/// a full reconnect (a new participant session).
const RESUME_ATTEMPTS: u32 = 3;

/// The session's life: connected stretches, each followed by a recovery
/// (resume, then full reconnect) or by the end. Emits `Reconnecting` /
/// `Reconnected` around each recovery and `Disconnected` at the end.
async fn session_loop(session: Arc<Session>, mut events: livekit_signaling::SignalEvents) {
    loop {
        let (reason, detail, full) = match run_connected(&session, &mut events).await {
            Ending::Final(reason, detail) => return finish(&session, reason, detail).await,
            Ending::Recoverable {
                reason,
                detail,
                full,
            } => (reason, detail, full),
        };
        if *session.left.lock().await {
            return;
        }
        let window = session.settings.reconnect_window;
        if window.is_zero() {
            return finish(&session, reason, detail).await;
        }
        tracing::warn!(reason = %reason, detail = %detail, window_ms = window.as_millis() as u64, "room session interrupted; resuming");
        session.emitter.emit(Event::Reconnecting {
            reason,
            detail: detail.clone(),
        });
        match recover(&session, &mut events, full, window).await {
            Recovery::Recovered(how) => {
                super::RECOVERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(how = %how, "room session recovered");
                session.emitter.emit(Event::Reconnected {
                    resumed: how == RESUMED,
                    detail: how,
                });
            }
            Recovery::Failed(last) => {
                let detail = format!(
                    "{detail}; could not resume or reconnect within {} s (last attempt: {last})",
                    window.as_secs_f64()
                );
                return finish(&session, reason, detail).await;
            }
            Recovery::Unreachable(why) => {
                let detail = format!("{detail}; the server is gone: {why}");
                return finish(&session, reason, detail).await;
            }
            Recovery::Ended(reason, detail) => return finish(&session, reason, detail).await,
        }
    }
}

async fn finish(session: &Session, reason: DisconnectReason, detail: String) {
    if !*session.left.lock().await {
        if reason.is_natural_end() {
            tracing::info!(reason = %reason, detail = %detail, "room session ended");
        } else {
            tracing::warn!(reason = %reason, detail = %detail, "room session ended");
        }
        session.emitter.emit(Event::Disconnected { reason, detail });
    }
}

/// Serves one connection until it ends: signal messages, liveness pings,
/// the subscriber connection's health.
async fn run_connected(session: &Session, events: &mut livekit_signaling::SignalEvents) -> Ending {
    let conn = session.conn();
    let liveness = session.settings.liveness_timeout;
    let silence = tokio::time::sleep(liveness);
    tokio::pin!(silence);
    // The server only speaks when asked or when something changes, and the
    // signal client pings every ping_interval (5 s). Ping three times per
    // liveness window ourselves so a healthy server always answers in time,
    // whatever --liveness-timeout is.
    let mut pinger = tokio::time::interval(liveness / 3);
    pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = pinger.tick() => {
                conn.ping().await;
            }
            ev = events.recv() => {
                silence.as_mut().reset(tokio::time::Instant::now() + liveness);
                match ev {
                    Some(SignalEvent::Message(msg)) => {
                        if let Some(ending) = handle_message(session, &conn, *msg).await {
                            return ending;
                        }
                    }
                    Some(SignalEvent::Close(why)) => {
                        let reason = if why.contains("ping timeout") {
                            DisconnectReason::LivenessTimeout
                        } else {
                            DisconnectReason::ConnectionLost
                        };
                        return Ending::Recoverable { reason, detail: format!("signal connection closed: {why}"), full: false };
                    }
                    None => return Ending::Recoverable { reason: DisconnectReason::ConnectionLost, detail: "signal connection closed".to_string(), full: false },
                }
            }
            _ = &mut silence => {
                return Ending::Recoverable { reason: DisconnectReason::LivenessTimeout, detail: format!("no message from the server for {} s", liveness.as_secs_f64()), full: false };
            }
            _ = conn.rtc.subscriber_failed() => {
                return Ending::Recoverable { reason: DisconnectReason::MediaFailed, detail: "the subscriber peer connection failed (ICE/DTLS)".to_string(), full: false };
            }
            _ = conn.broken.cancelled() => {
                // A resume would keep the dead task: rejoin with new ones.
                return Ending::Recoverable { reason: DisconnectReason::ConnectionLost, detail: "a task of the room session ended unexpectedly".to_string(), full: true };
            }
        }
    }
}

/// Handles one signal message of `conn`; returns how the session ends if
/// the message ends it.
async fn handle_message(
    session: &Session,
    conn: &Conn,
    msg: proto::signal_response::Message,
) -> Option<Ending> {
    if let proto::signal_response::Message::Offer(offer) = &msg {
        // A subscription the server ended shows up only as an offer that no
        // longer sends the track.
        for (participant, track) in conn.rtc.reconcile_with_offer(&offer.sdp) {
            session
                .emitter
                .emit(Event::TrackUnsubscribed { participant, track });
        }
    }
    let is_offer = matches!(msg, proto::signal_response::Message::Offer(_));
    if conn.rtc.on_signal(&msg).await {
        if is_offer {
            // Subscribed when negotiated, not when media arrives.
            conn.rtc.subscribe_offered(&session.roster);
        }
        return None;
    }
    match msg {
        proto::signal_response::Message::Update(update) => {
            // Another live session with this job's identity: the server
            // normally drops us with a DUPLICATE_IDENTITY leave, but after a
            // resume it may instead show us the newcomer. Either way it is
            // final; the job must not take the identity back.
            if let Some(other) = update.participants.iter().find(|p| {
                p.identity == conn.joined.participant_identity
                    && p.sid != conn.joined.participant_sid
                    && p.state != proto::participant_info::State::Disconnected as i32
            }) {
                return Some(Ending::Final(
                    DisconnectReason::DuplicateIdentity,
                    format!(
                        "another participant (sid {}) is in the room with this job's identity",
                        other.sid
                    ),
                ));
            }
            for info in &update.participants {
                if info.state != proto::participant_info::State::Disconnected as i32 {
                    session
                        .emitter
                        .data()
                        .set_peer_protocol(&info.identity, info.client_protocol);
                }
                let (evs, tracks) = session
                    .roster
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(info);
                for ev in evs {
                    if let Event::TrackUnpublished { participant, track } = &ev {
                        if conn.rtc.unsubscribe(&track.sid) {
                            session.emitter.emit(Event::TrackUnsubscribed {
                                participant: participant.clone(),
                                track: track.clone(),
                            });
                        }
                    }
                    session.emitter.emit(ev);
                }
                subscribe_selected(
                    &conn.client,
                    session.settings.auto_subscribe,
                    &info.sid,
                    &tracks,
                )
                .await;
            }
            // An offer may have sent a track before its publication was
            // known.
            conn.rtc.subscribe_offered(&session.roster);
            None
        }
        proto::signal_response::Message::Leave(leave) => Some(leave_ending(&leave)),
        _ => None,
    }
}

/// A server Leave: action RESUME or RECONNECT asks the client to come back
/// (migration, drain, state mismatch); anything else ends the session.
fn leave_ending(leave: &proto::LeaveRequest) -> Ending {
    let (reason, detail) = leave_reason(leave);
    let action = proto::leave_request::Action::try_from(leave.action)
        .unwrap_or(proto::leave_request::Action::Disconnect);
    match (reason, action) {
        (DisconnectReason::DuplicateIdentity, _) => Ending::Final(reason, detail),
        (_, proto::leave_request::Action::Resume) => Ending::Recoverable {
            reason,
            detail,
            full: false,
        },
        (_, proto::leave_request::Action::Reconnect) => Ending::Recoverable {
            reason,
            detail,
            full: true,
        },
        _ => Ending::Final(reason, detail),
    }
}

enum Recovery {
    /// How it recovered ("resumed", "reconnected as a new session ...").
    Recovered(String),
    /// The window passed; the last attempt's error.
    Failed(String),
    /// No attempt reached the server within the unreachable timeout.
    Unreachable(String),
    /// The session ended for good while recovering (e.g. room deleted).
    Ended(DisconnectReason, String),
}

/// One failed recovery attempt (or join).
struct AttemptFailed {
    detail: String,
    /// The server will not resume this session: join again instead.
    then_full: bool,
    cause: FailCause,
    /// The attempt reached the server (it answered something, even a
    /// refusal), as opposed to a connection refused, reset or unanswered.
    reached: bool,
}

impl AttemptFailed {
    /// A failure on the server's side (signal closed, refused, silent)
    /// after the server answered.
    fn signal(detail: String, then_full: bool) -> AttemptFailed {
        AttemptFailed {
            detail,
            then_full,
            cause: FailCause::Signal,
            reached: true,
        }
    }

    /// The server could not be reached at all (see
    /// [`LiveKitSettings::unreachable_timeout`]).
    fn unreached(detail: String, then_full: bool) -> AttemptFailed {
        AttemptFailed {
            reached: false,
            ..AttemptFailed::signal(detail, then_full)
        }
    }
}

/// Who failed: the server (signal closed, refused, silent) or the media
/// path (ICE/DTLS) while the server kept talking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailCause {
    Signal,
    Media,
}

/// Resumes the session (same participant), falling back to a full
/// reconnect, with backoff, until `window` has passed — or, while no
/// attempt has reached the server, until `unreachable_timeout` has: a
/// server that refuses connections is gone, and the job must hear so
/// within the seed's 2 s, not after the whole window.
async fn recover(
    session: &Session,
    events: &mut livekit_signaling::SignalEvents,
    mut full: bool,
    window: Duration,
) -> Recovery {
    let started = Instant::now();
    let deadline = started + window;
    let unreachable = session.settings.unreachable_timeout.min(window);
    let gone_at = started + unreachable;
    let mut reached = false;
    let mut attempt: u32 = 0;
    let mut last = String::from("no attempt fitted in the window");
    // The time left for the next attempt: the window, or, while the server
    // has not been reached, what is left of the unreachable timeout.
    let left = |reached: bool| {
        let end = if reached {
            deadline
        } else {
            gone_at.min(deadline)
        };
        end.saturating_duration_since(Instant::now())
    };
    loop {
        if attempt > 0 {
            let delay = RECOVERY_BACKOFF[(attempt as usize - 1).min(RECOVERY_BACKOFF.len() - 1)];
            tokio::time::sleep(delay.min(left(reached))).await;
        }
        let remaining = left(reached);
        if remaining.is_zero() {
            if !reached && gone_at <= deadline {
                return Recovery::Unreachable(format!(
                    "no attempt reached the server within {} s of losing it (last attempt: {last})",
                    unreachable.as_secs_f64()
                ));
            }
            return Recovery::Failed(last);
        }
        attempt += 1;
        if attempt > RESUME_ATTEMPTS {
            full = true;
        }
        let tried = session.url();
        let result = if full {
            full_reconnect(session, events, remaining).await
        } else {
            resume(session, events, remaining).await
        };
        match result {
            Ok(Ok(how)) => return Recovery::Recovered(how),
            Ok(Err(mut failed)) => {
                // An attempt left unanswered by a server that still accepts
                // connections (a node relaying to a dead node, a busy
                // node) is not a server gone: it gets the whole window.
                if !failed.reached && accepts_connections(&tried).await {
                    failed.reached = true;
                }
                tracing::info!(attempt, full, reached_server = failed.reached, detail = %failed.detail, "recovery attempt failed");
                full |= failed.then_full;
                // Another node may be up: rejoin through it (a resume can
                // only go to the URL the session joined through).
                if !failed.reached && session.next_url() {
                    full = true;
                }
                reached |= failed.reached;
                last = failed.detail;
            }
            Err((reason, detail)) => return Recovery::Ended(reason, detail),
        }
    }
}

/// Whether the host behind a signal URL (`ws[s]://host[:port]/…`)
/// accepts a TCP connection within 250 ms: the process is there, however
/// slow its answers. Refused, reset and unanswered connects are false.
async fn accepts_connections(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(
            Duration::from_millis(250),
            tokio::net::TcpStream::connect((host, port))
        )
        .await,
        Ok(Ok(_))
    )
}

/// What one attempt gives: recovered, failed (try again), or the session
/// ended for good.
type AttemptResult = Result<Result<String, AttemptFailed>, (DisconnectReason, String)>;

/// Resume: reopen the signal connection for the same participant
/// (`reconnect=1&sid=…`); the server keeps the participant, its
/// subscriptions and publications, and restarts ICE on the subscriber
/// connection; the publisher connection (if ever negotiated) restarts ICE
/// with a new offer.
async fn resume(
    session: &Session,
    events: &mut livekit_signaling::SignalEvents,
    within: Duration,
) -> AttemptResult {
    let conn = session.conn();
    // The server may have refreshed the token (RefreshToken); the resume
    // request carries the new one.
    crate::secrets::register(&conn.client.token());
    // Close what is left of the old transport first and drop what it said:
    // its last words (a Close) must not be read as the new one's.
    conn.client.close().await;
    while events.try_recv().is_ok() {}
    let restarted = tokio::time::timeout(
        within,
        conn.client
            .restart(proto::ReconnectReason::RrSignalDisconnected),
    )
    .await;
    match restarted {
        Err(_) => {
            return Ok(Err(AttemptFailed::unreached(
                format!("resume: no answer within {} s", within.as_secs_f64()),
                false,
            )))
        }
        Ok(Err(e)) => {
            // A transport failure (refused, reset, timed out) says nothing
            // about the session; anything the server answered means it
            // will not resume this one.
            let transport = matches!(
                e,
                SignalError::Connection(_) | SignalError::Timeout(_) | SignalError::Closed
            );
            let detail = format!("resume: {}", redact(&e.to_string(), &conn.client.token()));
            return Ok(Err(if transport {
                AttemptFailed::unreached(detail, false)
            } else {
                AttemptFailed::signal(detail, true)
            }));
        }
        Ok(Ok(_)) => {}
    }
    let rtc = conn.rtc.clone();
    tokio::spawn(async move {
        if let Err(e) = rtc.restart_publisher_ice().await {
            tracing::debug!(error = %e, "publisher ICE restart after resume failed");
        }
    });
    let remaining = within.min(MEDIA_CONNECT_TIMEOUT);
    match wait_media(session, &conn, events, remaining, true).await? {
        Ok(()) => {
            conn.client.set_reconnected().await;
            Ok(Ok(RESUMED.to_string()))
        }
        Err(failed) => Ok(Err(failed)),
    }
}

/// Full reconnect: end the old connection (its subscriptions end with
/// `track_unsubscribed`), join again with the same token (the server
/// replaces a session of the same identity), and report the room's changes.
/// Tracks the old session published are not published again.
async fn full_reconnect(
    session: &Session,
    events: &mut livekit_signaling::SignalEvents,
    within: Duration,
) -> AttemptResult {
    let old = session.conn();
    let token = old.client.token();
    crate::secrets::register(&token);
    old.client.close().await;
    old.abort_tasks();
    for (participant, track) in old.rtc.end_all_subscriptions() {
        session
            .emitter
            .emit(Event::TrackUnsubscribed { participant, track });
    }
    old.rtc.close().await;
    let opened = tokio::time::timeout(
        within,
        open_conn(
            &session.settings,
            &session.url(),
            &token,
            &session.emitter,
            &session.roster,
        ),
    )
    .await;
    let (conn, new_events) = match opened {
        Err(_) => {
            return Ok(Err(AttemptFailed::unreached(
                format!("reconnect: no answer within {} s", within.as_secs_f64()),
                true,
            )))
        }
        Ok(Err(e @ ConnectError::Unreachable { .. })) => {
            return Ok(Err(AttemptFailed::unreached(
                format!("reconnect: {e}"),
                true,
            )))
        }
        Ok(Err(e)) => return Ok(Err(AttemptFailed::signal(format!("reconnect: {e}"), true))),
        Ok(Ok(opened)) => opened,
    };
    *session.current.lock().unwrap_or_else(|e| e.into_inner()) = conn.clone();
    *events = new_events;
    if *session.left.lock().await {
        return Ok(Err(AttemptFailed::signal(
            "left while reconnecting".into(),
            true,
        )));
    }
    match wait_media(
        session,
        &conn,
        events,
        within.min(MEDIA_CONNECT_TIMEOUT),
        true,
    )
    .await?
    {
        Ok(()) => Ok(Ok(format!(
            "reconnected as a new session (participant sid {})",
            conn.joined.participant_sid
        ))),
        Err(failed) => Ok(Err(failed)),
    }
}

/// How long the server may stay silent (our pings unanswered) while the
/// media connection comes up before the wait blames the server, not media.
const MEDIA_WAIT_SILENCE: Duration = Duration::from_secs(3);

/// Serves `conn`'s signal messages until its subscriber connection is
/// connected (an ICE restart may take it through `failed` first). Pings the
/// server every second meanwhile, so that when media does not come up in
/// time the failure names the right culprit: a server that went silent or
/// closed the signal connection, or the media path.
async fn wait_media(
    session: &Session,
    conn: &Conn,
    events: &mut livekit_signaling::SignalEvents,
    within: Duration,
    through_failure: bool,
) -> Result<Result<(), AttemptFailed>, (DisconnectReason, String)> {
    let connected = conn.rtc.wait_subscriber_connected(within, through_failure);
    tokio::pin!(connected);
    let mut pinger = tokio::time::interval(Duration::from_secs(1));
    let mut last_heard = Instant::now();
    let failed = |detail: String, then_full: bool, cause: FailCause| AttemptFailed {
        detail,
        then_full,
        cause,
        reached: true,
    };
    loop {
        tokio::select! {
            result = &mut connected => {
                return Ok(result.map_err(|detail| {
                    if last_heard.elapsed() > MEDIA_WAIT_SILENCE {
                        failed(format!("the server stopped answering ({} s without a message) while the media connection was set up", last_heard.elapsed().as_secs()), true, FailCause::Signal)
                    } else {
                        failed(detail, true, FailCause::Media)
                    }
                }));
            }
            _ = pinger.tick() => {
                conn.ping().await;
            }
            ev = events.recv() => match ev {
                Some(SignalEvent::Message(msg)) => {
                    last_heard = Instant::now();
                    match handle_message(session, conn, *msg).await {
                        None => {}
                        Some(Ending::Final(reason, detail)) => return Err((reason, detail)),
                        Some(Ending::Recoverable { detail, full, .. }) => {
                            return Ok(Err(failed(detail, full, FailCause::Signal)))
                        }
                    }
                }
                Some(SignalEvent::Close(why)) => {
                    return Ok(Err(failed(format!("signal connection closed: {why}"), false, FailCause::Signal)))
                }
                None => {
                    return Ok(Err(failed("signal connection closed".into(), false, FailCause::Signal)))
                }
            }
        }
    }
}

impl RoomLink for LiveKitLink {
    fn joined(&self) -> Joined {
        self.session.conn().joined.clone()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut left = self.session.left.lock().await;
            if *left {
                return;
            }
            *left = true;
            // Stop the session loop first: no recovery may start a new
            // connection behind our back.
            if let Some(main) = self
                .session
                .main
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                main.abort();
            }
            let conn = self.session.conn();
            // A LeaveRequest makes the server drop us at once instead of
            // waiting ~15-20 s for ICE to fail.
            conn.client
                .send(proto::signal_request::Message::Leave(proto::LeaveRequest {
                    can_reconnect: false,
                    reason: proto::DisconnectReason::ClientInitiated as i32,
                    action: proto::leave_request::Action::Disconnect as i32,
                    ..Default::default()
                }))
                .await;
            conn.client.close().await;
            conn.abort_tasks();
        })
    }

    fn close_tracks(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.session.conn().rtc.close().await })
    }

    fn publish_silent_audio<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<TrackRef, PublishError>> {
        Box::pin(async move { self.session.conn().rtc.publish_silent_audio(name).await })
    }

    fn publish_audio<'a>(
        &'a self,
        name: &'a str,
        source: Arc<crate::media::source::SourceQueue>,
    ) -> BoxFuture<'a, Result<TrackRef, PublishError>> {
        Box::pin(async move {
            if *self.session.left.lock().await {
                return Err(PublishError::NotConnected);
            }
            self.session
                .conn()
                .rtc
                .publish_audio(name, Some(source))
                .await
        })
    }

    fn unpublish_track<'a>(&'a self, track_sid: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.session.conn().rtc.unpublish(track_sid).await })
    }

    fn send_packet(
        &self,
        packet: crate::datastream::OutPacket,
    ) -> BoxFuture<'_, Result<(), super::rtc::DataError>> {
        Box::pin(async move {
            self.session
                .conn()
                .rtc
                .send_data_packet(
                    packet.value,
                    packet.destinations,
                    true,
                    packet.on_behalf_of,
                    super::rtc::UPDATE_TIMEOUT,
                )
                .await
        })
    }

    fn publish_data(
        &self,
        packet: crate::room::OutgoingData,
    ) -> BoxFuture<'_, Result<(), super::rtc::DataError>> {
        Box::pin(async move {
            self.session
                .conn()
                .rtc
                .publish_data(packet, super::rtc::UPDATE_TIMEOUT)
                .await
        })
    }

    fn update_participant(
        &self,
        attributes: std::collections::HashMap<String, String>,
        metadata: Option<String>,
    ) -> BoxFuture<'_, Result<(), super::rtc::DataError>> {
        Box::pin(async move {
            self.session
                .conn()
                .rtc
                .update_participant(attributes, metadata, super::rtc::UPDATE_TIMEOUT)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("ws://127.0.0.1:7880").is_ok());
        assert!(validate_url("WS://127.0.0.1:7880").is_ok());
        for url in [
            "ws://user:hunter22@127.0.0.1:7880",
            "htps://user:hunter22@h",
        ] {
            let e = validate_url(url).unwrap_err();
            assert!(!e.to_string().contains("hunter22"), "{e}");
        }
        assert!(validate_url("https://x.livekit.cloud").is_ok());
        assert!(matches!(
            validate_url("127.0.0.1:7880"),
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert!(matches!(
            validate_url("ws://"),
            Err(ConnectError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn server_error_bodies_never_carry_the_token() {
        let e = map_connect_error(
            "ws://x",
            "eyJabc.def.ghi",
            SignalError::Client(
                http::StatusCode::UNAUTHORIZED,
                "invalid token: eyJabc.def.ghi, error: bad".into(),
            ),
        );
        let msg = e.to_string();
        assert!(matches!(e, ConnectError::Unauthorized { .. }));
        assert!(!msg.contains("eyJabc"), "{msg}");
        assert!(msg.contains("<token>"), "{msg}");
    }

    #[test]
    fn token_claims_name_the_room_and_identity() {
        let token = AccessToken::with_api_key("k", "s")
            .with_identity("alice")
            .with_grants(VideoGrants {
                room_join: true,
                room: "room-a".into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap();
        assert_eq!(
            token_claims(&token).unwrap(),
            TokenClaims {
                room: "room-a".into(),
                identity: "alice".into()
            }
        );
        let e = token_claims("not-a-jwt").unwrap_err();
        assert!(matches!(e, ConnectError::Token(_)));
        assert!(!e.to_string().contains("not-a-jwt"));
    }

    #[test]
    fn credentials_debug_hides_the_secret() {
        let c = Credentials::KeySecret {
            key: "devkey".into(),
            secret: "s3cr3t-value".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Credentials::Token("tok-abc".into())).contains("tok-abc"));
    }

    #[test]
    fn auto_subscribe_picks_the_kinds_asked_for() {
        assert!(AutoSubscribe::Audio.wants(TrackKind::Audio));
        assert!(!AutoSubscribe::Audio.wants(TrackKind::Video));
    }
}
