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

use super::rtc::{PublishError, RtcSession};
use super::rtc::MEDIA_CONNECT_TIMEOUT;
use super::{
    BoxFuture, ConnectError, JoinRequest, Joined, RoomConnector, RoomEmitter, RoomLink,
};
use crate::events::{DisconnectReason, Event, ParticipantRef, TrackKind, TrackRef, TrackSource};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use livekit_signaling::{SignalClient, SignalError, SignalEvent, SignalOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
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
    /// `ws://`, `wss://`, `http://` or `https://` URL of the server.
    pub url: String,
    pub credentials: Credentials,
    pub auto_subscribe: AutoSubscribe,
    /// Declare the server gone after this long without any message from it.
    /// The server pings every 5 s (JoinResponse.ping_interval) and answers
    /// our pings, so a healthy connection is never silent that long.
    pub liveness_timeout: Duration,
}

/// Joins real LiveKit rooms.
#[derive(Clone, Debug)]
pub struct LiveKitConnector {
    settings: LiveKitSettings,
}

impl LiveKitConnector {
    pub fn new(settings: LiveKitSettings) -> Self {
        LiveKitConnector { settings }
    }

    fn token(&self, request: &JoinRequest) -> Result<String, ConnectError> {
        match &self.settings.credentials {
            Credentials::Token(t) => Ok(t.clone()),
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
    let bad = |why: &str| ConnectError::Token(format!("--token is not a LiveKit access token: {why}"));
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
fn validate_url(url: &str) -> Result<(), ConnectError> {
    let bad = |why: &str| ConnectError::InvalidUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let rest = ["ws://", "wss://", "http://", "https://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| bad("the scheme must be ws, wss, http or https"))?;
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
    if token.is_empty() {
        body.to_string()
    } else {
        body.replace(token, "<token>")
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

fn track_kind(t: i32) -> TrackKind {
    match proto::TrackType::try_from(t) {
        Ok(proto::TrackType::Audio) => TrackKind::Audio,
        Ok(proto::TrackType::Video) => TrackKind::Video,
        _ => TrackKind::Unknown,
    }
}

fn track_source(s: i32) -> TrackSource {
    match proto::TrackSource::try_from(s) {
        Ok(proto::TrackSource::Camera) => TrackSource::Camera,
        Ok(proto::TrackSource::Microphone) => TrackSource::Microphone,
        Ok(proto::TrackSource::ScreenShare) => TrackSource::ScreenShare,
        Ok(proto::TrackSource::ScreenShareAudio) => TrackSource::ScreenShareAudio,
        _ => TrackSource::Unknown,
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

/// The roster, shared with the track matcher of the media half.
pub(crate) type SharedRoster = Arc<std::sync::Mutex<Roster>>;

/// What the session knows of the remote participants, to compute deltas.
#[derive(Default)]
pub(crate) struct Roster {
    local_sid: String,
    /// sid → (participant, tracks by sid)
    participants: HashMap<String, (ParticipantRef, HashMap<String, TrackRef>)>,
}

impl Roster {
    /// The publication behind a remote media track, if known yet.
    pub(crate) fn find_track(
        &self,
        participant_sid: &str,
        track_sid: &str,
    ) -> Option<(ParticipantRef, TrackRef)> {
        let (p, tracks) = self.participants.get(participant_sid)?;
        tracks.get(track_sid).map(|t| (p.clone(), t.clone()))
    }

    /// Applies one participant's info; returns the events it implies and the
    /// newly published tracks.
    fn apply(&mut self, info: &proto::ParticipantInfo) -> (Vec<Event>, Vec<TrackRef>) {
        let mut events = Vec::new();
        let mut new_tracks = Vec::new();
        if info.sid == self.local_sid {
            return (events, new_tracks);
        }
        let participant = ParticipantRef {
            identity: info.identity.clone(),
            sid: info.sid.clone(),
        };
        let gone = info.state == proto::participant_info::State::Disconnected as i32;
        if gone {
            if let Some((p, tracks)) = self.participants.remove(&info.sid) {
                for t in tracks.into_values() {
                    events.push(Event::TrackUnpublished {
                        participant: p.clone(),
                        track: t,
                    });
                }
                events.push(Event::ParticipantLeft { participant: p });
            }
            return (events, new_tracks);
        }
        // The same identity under a new sid is a rejoin (a page reload): the
        // server replaces the old session without a DISCONNECTED update for
        // clients on protocol > 11, so end the old one here, or it stays in
        // the room as a ghost.
        let ghosts: Vec<String> = self
            .participants
            .iter()
            .filter(|(sid, (p, _))| **sid != info.sid && p.identity == info.identity)
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in ghosts {
            if let Some((p, tracks)) = self.participants.remove(&sid) {
                for t in tracks.into_values() {
                    events.push(Event::TrackUnpublished {
                        participant: p.clone(),
                        track: t,
                    });
                }
                events.push(Event::ParticipantLeft { participant: p });
            }
        }
        let entry = self
            .participants
            .entry(info.sid.clone())
            .or_insert_with(|| {
                events.push(Event::ParticipantJoined {
                    participant: participant.clone(),
                });
                (participant.clone(), HashMap::new())
            });
        let current: HashMap<String, TrackRef> = info
            .tracks
            .iter()
            .map(|t| {
                (
                    t.sid.clone(),
                    TrackRef {
                        sid: t.sid.clone(),
                        name: t.name.clone(),
                        kind: track_kind(t.r#type),
                        source: track_source(t.source),
                    },
                )
            })
            .collect();
        for (sid, t) in &current {
            if !entry.1.contains_key(sid) {
                events.push(Event::TrackPublished {
                    participant: participant.clone(),
                    track: t.clone(),
                });
                new_tracks.push(t.clone());
            }
        }
        let removed: Vec<String> = entry
            .1
            .keys()
            .filter(|sid| !current.contains_key(*sid))
            .cloned()
            .collect();
        for sid in removed {
            if let Some(t) = entry.1.remove(&sid) {
                events.push(Event::TrackUnpublished {
                    participant: participant.clone(),
                    track: t,
                });
            }
        }
        entry.1 = current;
        (events, new_tracks)
    }
}

struct Session {
    joined: Joined,
    client: SignalClient,
    rtc: Arc<RtcSession>,
    left: AsyncMutex<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
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

impl RoomConnector for LiveKitConnector {
    fn connect<'a>(
        &'a self,
        request: &'a JoinRequest,
        emitter: RoomEmitter,
    ) -> BoxFuture<'a, Result<Box<dyn RoomLink>, ConnectError>> {
        Box::pin(async move {
            let url = self.settings.url.trim().to_string();
            validate_url(&url)?;
            let token = self.token(request)?;
            let mut options = SignalOptions::default();
            options.auto_subscribe = self.settings.auto_subscribe == AutoSubscribe::All;
            // A self-hosted server has no regions to fail over to.
            options.region_failover = false;
            options.connect_timeout = Duration::from_secs(5);
            // Belt and braces over the client's own connect timeout, so a
            // black-holed address fails within 10 s as documented.
            let connected = tokio::time::timeout(
                Duration::from_secs(9),
                SignalClient::connect(&url, &token, options, None),
            )
            .await
            .map_err(|_| ConnectError::Unreachable {
                url: url.clone(),
                detail: "no answer within 9 s".into(),
            })?;
            let (client, join, events) =
                connected.map_err(|e| map_connect_error(&url, &token, e))?;
            tracing::info!(
                room = %join.room.as_ref().map(|r| r.name.as_str()).unwrap_or(""),
                room_sid = %join.room.as_ref().map(|r| r.sid.as_str()).unwrap_or(""),
                participant_sid = %join.participant.as_ref().map(|p| p.sid.as_str()).unwrap_or(""),
                server_version = %join.server_info.as_ref().map(|s| s.version.as_str()).unwrap_or(""),
                ping_interval_s = join.ping_interval,
                ping_timeout_s = join.ping_timeout,
                "signal connection established"
            );
            let (outgoing, mut outgoing_rx) = tokio::sync::mpsc::unbounded_channel();
            let (rtc, remote_tracks) = match RtcSession::new(&join, outgoing).await {
                Ok(made) => made,
                Err(detail) => {
                    client.close().await;
                    return Err(ConnectError::Server {
                        url,
                        detail: format!("could not set up WebRTC: {detail}"),
                    });
                }
            };
            let joined = Joined {
                room_name: join.room.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
                room_sid: join.room.as_ref().map(|r| r.sid.clone()).unwrap_or_default(),
                participant_identity: join
                    .participant
                    .as_ref()
                    .map(|p| p.identity.clone())
                    .unwrap_or_default(),
                participant_sid: join
                    .participant
                    .as_ref()
                    .map(|p| p.sid.clone())
                    .unwrap_or_default(),
            };
            let session = Arc::new(Session {
                joined,
                client,
                rtc: rtc.clone(),
                left: AsyncMutex::new(false),
                tasks: std::sync::Mutex::new(Vec::new()),
            });
            let roster: SharedRoster = Arc::new(std::sync::Mutex::new(Roster {
                local_sid: join
                    .participant
                    .as_ref()
                    .map(|p| p.sid.clone())
                    .unwrap_or_default(),
                ..Default::default()
            }));
            for info in &join.other_participants {
                let (evs, tracks) = roster.lock().unwrap_or_else(|e| e.into_inner()).apply(info);
                for ev in evs {
                    emitter.emit(ev);
                }
                subscribe_selected(&session, self.settings.auto_subscribe, &info.sid, &tracks)
                    .await;
            }
            let forwarder_session = session.clone();
            let forwarder = tokio::spawn(async move {
                while let Some(msg) = outgoing_rx.recv().await {
                    forwarder_session.client.send(msg).await;
                }
            });
            let matcher =
                tokio::spawn(rtc.clone().run_track_matcher(remote_tracks, roster.clone(), emitter.clone()));
            let main = tokio::spawn(session_loop(
                session.clone(),
                events,
                emitter,
                roster,
                self.settings.auto_subscribe,
                self.settings.liveness_timeout,
            ));
            session
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend([forwarder, matcher, main]);
            // Joined means media too, as in the official SDKs: a session whose
            // peer connection never connects would run deaf. If this future
            // is dropped while waiting (shutdown during the join), the guard
            // still leaves the room.
            let mut guard = LeaveOnDrop(Some(session.clone()));
            if let Err(detail) = rtc.wait_subscriber_connected(MEDIA_CONNECT_TIMEOUT).await {
                guard.0 = None;
                let link = LiveKitLink { session };
                link.leave().await;
                link.close_tracks().await;
                return Err(ConnectError::MediaFailed { url, detail });
            }
            guard.0 = None;
            Ok(Box::new(LiveKitLink { session }) as Box<dyn RoomLink>)
        })
    }
}

/// With `--auto-subscribe audio|video` the server subscribes to nothing by
/// itself; ask for the tracks of the selected kind.
async fn subscribe_selected(
    session: &Session,
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
    session
        .client
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

async fn session_loop(
    session: Arc<Session>,
    mut events: livekit_signaling::SignalEvents,
    emitter: RoomEmitter,
    roster: SharedRoster,
    mode: AutoSubscribe,
    liveness: Duration,
) {
    let silence = tokio::time::sleep(liveness);
    tokio::pin!(silence);
    // The server only speaks when asked or when something changes, and the
    // signal client pings every ping_interval (5 s). Ping three times per
    // liveness window ourselves so a healthy server always answers in time,
    // whatever --liveness-timeout is.
    let mut pinger = tokio::time::interval(liveness / 3);
    pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (reason, detail) = loop {
        tokio::select! {
            _ = pinger.tick() => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                session
                    .client
                    .send(proto::signal_request::Message::PingReq(proto::Ping { timestamp: now_ms, rtt: 0 }))
                    .await;
            }
            ev = events.recv() => {
                silence.as_mut().reset(tokio::time::Instant::now() + liveness);
                match ev {
                    Some(SignalEvent::Message(msg)) if session.rtc.on_signal(&msg).await => {}
                    Some(SignalEvent::Message(msg)) => match *msg {
                        proto::signal_response::Message::Update(update) => {
                            for info in &update.participants {
                                let (evs, tracks) = roster.lock().unwrap_or_else(|e| e.into_inner()).apply(info);
                                for ev in evs {
                                    if let Event::TrackUnpublished { participant, track } = &ev {
                                        if session.rtc.unsubscribe(&track.sid) {
                                            emitter.emit(Event::TrackUnsubscribed {
                                                participant: participant.clone(),
                                                track: track.clone(),
                                            });
                                        }
                                    }
                                    emitter.emit(ev);
                                }
                                subscribe_selected(&session, mode, &info.sid, &tracks).await;
                            }
                        }
                        proto::signal_response::Message::Leave(leave) => {
                            break leave_reason(&leave);
                        }
                        _ => {}
                    },
                    Some(SignalEvent::Close(why)) => {
                        let reason = if why.contains("ping timeout") {
                            DisconnectReason::LivenessTimeout
                        } else {
                            DisconnectReason::ConnectionLost
                        };
                        break (reason, format!("signal connection closed: {why}"));
                    }
                    None => break (DisconnectReason::ConnectionLost, "signal connection closed".to_string()),
                }
            }
            _ = &mut silence => {
                break (DisconnectReason::LivenessTimeout, format!("no message from the server for {} s", liveness.as_secs_f64()));
            }
            _ = session.rtc.subscriber_failed() => {
                break (DisconnectReason::MediaFailed, "the subscriber peer connection failed (ICE/DTLS)".to_string());
            }
        }
    };
    let we_left = *session.left.lock().await;
    if !we_left {
        tracing::warn!(reason = %reason, detail = %detail, "room session ended");
        emitter.emit(Event::Disconnected { reason, detail });
    }
}

impl RoomLink for LiveKitLink {
    fn joined(&self) -> Joined {
        self.session.joined.clone()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut left = self.session.left.lock().await;
            if *left {
                return;
            }
            *left = true;
            // A LeaveRequest makes the server drop us at once instead of
            // waiting ~15-20 s for ICE to fail.
            self.session
                .client
                .send(proto::signal_request::Message::Leave(proto::LeaveRequest {
                    can_reconnect: false,
                    reason: proto::DisconnectReason::ClientInitiated as i32,
                    action: proto::leave_request::Action::Disconnect as i32,
                    ..Default::default()
                }))
                .await;
            self.session.client.close().await;
            for task in
                std::mem::take(&mut *self.session.tasks.lock().unwrap_or_else(|e| e.into_inner()))
            {
                task.abort();
            }
        })
    }

    fn close_tracks(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.session.rtc.close().await })
    }

    fn publish_silent_audio<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<TrackRef, PublishError>> {
        Box::pin(async move { self.session.rtc.publish_silent_audio(name).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("ws://127.0.0.1:7880").is_ok());
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

    fn pinfo(
        sid: &str,
        identity: &str,
        tracks: &[(&str, i32)],
        state: proto::participant_info::State,
    ) -> proto::ParticipantInfo {
        proto::ParticipantInfo {
            sid: sid.into(),
            identity: identity.into(),
            state: state as i32,
            tracks: tracks
                .iter()
                .map(|(sid, ty)| proto::TrackInfo {
                    sid: (*sid).into(),
                    name: "mic".into(),
                    r#type: *ty,
                    source: proto::TrackSource::Microphone as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn roster_turns_updates_into_events() {
        use proto::participant_info::State;
        let mut r = Roster {
            local_sid: "PA_me".into(),
            ..Default::default()
        };
        let (evs, _) = r.apply(&pinfo("PA_me", "me", &[], State::Active));
        assert!(evs.is_empty(), "the local participant is not an event");
        let (evs, new) = r.apply(&pinfo(
            "PA_a",
            "alice",
            &[("TR_1", proto::TrackType::Audio as i32)],
            State::Active,
        ));
        assert_eq!(
            evs.iter().map(|e| e.name()).collect::<Vec<_>>(),
            ["participant_joined", "track_published"]
        );
        assert_eq!(new[0].kind, TrackKind::Audio);
        let (evs, _) = r.apply(&pinfo("PA_a", "alice", &[("TR_1", 0)], State::Active));
        assert!(evs.is_empty(), "no change, no event");
        let (evs, _) = r.apply(&pinfo("PA_a", "alice", &[], State::Active));
        assert_eq!(
            evs.iter().map(|e| e.name()).collect::<Vec<_>>(),
            ["track_unpublished"]
        );
        let (evs, _) = r.apply(&pinfo("PA_a", "alice", &[("TR_2", 1)], State::Disconnected));
        assert_eq!(
            evs.iter().map(|e| e.name()).collect::<Vec<_>>(),
            ["participant_left"]
        );
        assert!(AutoSubscribe::Audio.wants(TrackKind::Audio));
        assert!(!AutoSubscribe::Audio.wants(TrackKind::Video));
    }
}
