//! The two peer connections of a LiveKit session (webrtc-rs, pure Rust).
//!
//! Owns: the subscriber connection (the server offers, we answer every offer,
//! including re-offers when tracks change), the publisher connection (we
//! offer, with the `_reliable` and `_lossy` data channels; negotiated when we
//! first publish, as the server is subscriber-primary), trickle ICE in both
//! directions with remote candidates held until the remote description is
//! set, matching remote tracks to their publication by stream id
//! `participant_sid|track_sid` (TrackSubscribed is emitted when the
//! subscription is negotiated — a muted track too — not on its first RTP), and publishing an audio track of Opus silence.
//!
//! Must not touch: the signal connection's lifecycle or the roster (it reads
//! the roster to match tracks); outgoing signal messages go through a channel
//! the session drains.

use super::roster::SharedRoster;
use super::{OutgoingData, RoomEmitter};
use crate::events::{Event, TrackKind, TrackRef, TrackSource};
use crate::media::source::{OpusSender, SendStats, SourceQueue, Tick};
use crate::media::{DataIn, MediaHub};
use livekit_protocol as proto;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::RTCDataChannelInit;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

/// An Opus frame that decodes to 20 ms of silence (TOC 0xF8: CELT FB 20 ms,
/// mono; no encoder needed).
const OPUS_SILENCE_FRAME: [u8; 3] = [0xF8, 0xFF, 0xFE];
const FRAME: Duration = Duration::from_millis(20);
/// Packets a late send clock sends at once to catch up (60 ms); a longer
/// stall is dropped (see `publish_audio`'s feeder).
const MAX_CATCH_UP_TICKS: u64 = 3;
/// How long to wait for the server's answer or track confirmation.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after the JoinResponse the subscriber connection (ICE + DTLS)
/// has to come up before joining fails with "media failed" (exit 74). The
/// server offers the subscriber connection right after the join (its data
/// channels), so a healthy local join connects in tens of milliseconds; the
/// official SDKs give up after a similar bound (`wait_pc_connection`).
pub const MEDIA_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why publishing failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PublishError {
    #[error("the room is not connected to a LiveKit server")]
    NotConnected,
    #[error("the server did not confirm the track within {0:?}")]
    NoConfirmation(Duration),
    #[error("the server did not answer the publisher offer within {0:?}")]
    NoAnswer(Duration),
    #[error("WebRTC error while publishing: {0}")]
    WebRtc(String),
}

/// Why a data packet or a participant update was not delivered.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DataError {
    #[error("the room is not connected to a LiveKit server")]
    NotConnected,
    #[error("data packet of {0} bytes is over the limit ({MAX_DATA_PAYLOAD} bytes of payload, {MAX_DATA_MESSAGE} encoded)")]
    TooLarge(usize),
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("WebRTC error: {0}")]
    WebRtc(String),
}

/// Largest user payload sent, bytes: LiveKit's documented limit for
/// reliable data packets (docs.livekit.io, "Data packets": 15 KiB).
pub const MAX_DATA_PAYLOAD: usize = 15 * 1024;
/// Largest encoded DataPacket sent, bytes: one SCTP message as webrtc-rs
/// receives it (16 KiB, `DataChannelEvent::OnMessage`).
pub const MAX_DATA_MESSAGE: usize = 16 * 1024;
/// How long the server has to answer an UpdateParticipantMetadata
/// (livekit-server answers every one with a RequestResponse; see
/// `ParticipantImpl.UpdateMetadata`).
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

fn wrtc<E: std::fmt::Display>(e: E) -> PublishError {
    PublishError::WebRtc(e.to_string())
}

type Pc = Arc<dyn PeerConnection>;

/// One peer connection plus the remote candidates waiting for its remote
/// description.
struct Transport {
    pc: Pc,
    remote_set: AtomicBool,
    pending: Mutex<Vec<RTCIceCandidateInit>>,
}

impl Transport {
    async fn add_remote_candidate(&self, c: RTCIceCandidateInit) {
        if !self.remote_set.load(Ordering::Acquire) {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Re-check under the lock: set_remote flips the flag before draining.
            if !self.remote_set.load(Ordering::Acquire) {
                pending.push(c);
                return;
            }
        }
        if let Err(e) = self.pc.add_ice_candidate(c).await {
            tracing::debug!(error = %e, "remote ICE candidate rejected");
        }
    }

    async fn set_remote(&self, desc: RTCSessionDescription) -> webrtc::error::Result<()> {
        self.pc.set_remote_description(desc).await?;
        let drained = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.remote_set.store(true, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for c in drained {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                tracing::debug!(error = %e, "buffered remote ICE candidate rejected");
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Handler {
    target: proto::SignalTarget,
    outgoing: mpsc::UnboundedSender<proto::signal_request::Message>,
    /// Subscriber only: where remote tracks go.
    on_track: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    /// Subscriber only: its connection state, for the join and the session.
    state: Option<tokio::sync::watch::Sender<RTCPeerConnectionState>>,
    /// Subscriber only: where user data packets the server relays go.
    media: Option<Arc<MediaHub>>,
    /// Subscriber only: where data-stream and RPC packets go.
    data: Option<Arc<crate::datastream::DataHub>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => match serde_json::to_string(&init) {
                Ok(json) => {
                    let _ = self.outgoing.send(proto::signal_request::Message::Trickle(
                        proto::TrickleRequest {
                            candidate_init: json,
                            target: self.target as i32,
                            ..Default::default()
                        },
                    ));
                }
                Err(e) => tracing::debug!(error = %e, "could not encode a local ICE candidate"),
            },
            Err(e) => tracing::debug!(error = %e, "could not encode a local ICE candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let pc = if self.target == proto::SignalTarget::Publisher {
            "publisher"
        } else {
            "subscriber"
        };
        match state {
            RTCPeerConnectionState::Connected => tracing::info!(pc, "peer connection connected"),
            // The session reports a failed subscriber connection as the
            // job's ending (media_failed); the publisher's shows up when
            // publishing fails.
            RTCPeerConnectionState::Failed => tracing::debug!(pc, "peer connection failed"),
            other => tracing::debug!(pc, state = %other, "peer connection state"),
        }
        if let Some(tx) = &self.state {
            let _ = tx.send(state);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tx) = &self.on_track {
            let _ = tx.send(track);
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn webrtc::data_channel::DataChannel>) {
        // The server opens `_reliable` and `_lossy` on the subscriber
        // connection and relays other participants' packets there.
        let (Some(media), Some(data)) = (self.media.clone(), self.data.clone()) else {
            return;
        };
        let reliable = dc.label().await.map(|l| l == "_reliable").unwrap_or(true);
        tokio::spawn(async move {
            while let Some(ev) = dc.poll().await {
                if let webrtc::data_channel::DataChannelEvent::OnMessage(msg) = ev {
                    route_data_packet(&msg.data, reliable, &media, &data);
                }
            }
        });
    }
}

/// A DataPacket from the server, to where it belongs: user packets to the
/// plugin's inbox, data-stream and RPC packets to the data hub; other
/// kinds (transcriptions, metrics, …) are not for the plugin.
fn route_data_packet(
    bytes: &[u8],
    reliable: bool,
    media: &MediaHub,
    data: &Arc<crate::datastream::DataHub>,
) {
    use prost::Message as _;
    use proto::data_packet::Value as V;
    let Ok(packet) = proto::DataPacket::decode(bytes) else {
        return;
    };
    match &packet.value {
        Some(V::User(_)) => {
            if let Some(p) = user_packet(packet, reliable) {
                media.push_data(p);
            }
        }
        Some(
            V::StreamHeader(_)
            | V::StreamChunk(_)
            | V::StreamTrailer(_)
            | V::RpcRequest(_)
            | V::RpcAck(_)
            | V::RpcResponse(_),
        ) => data.on_packet(packet),
        _ => {}
    }
}

/// The user packet inside a DataPacket; `None` for other kinds.
fn user_packet(packet: proto::DataPacket, reliable: bool) -> Option<DataIn> {
    match packet.value? {
        proto::data_packet::Value::User(user) => {
            #[allow(deprecated)]
            let identity = if packet.participant_identity.is_empty() {
                user.participant_identity
            } else {
                packet.participant_identity
            };
            Some(DataIn {
                payload: bytes::Bytes::from(user.payload),
                topic: user.topic.unwrap_or_default(),
                participant_identity: identity,
                reliable,
            })
        }
        _ => None,
    }
}

/// A publisher data channel and whether it is open.
struct OutChannel {
    dc: Arc<dyn webrtc::data_channel::DataChannel>,
    open: tokio::sync::watch::Receiver<bool>,
}

impl OutChannel {
    /// Keeps the channel's events drained (webrtc-rs holds undelivered
    /// events and applies back-pressure) and tracks whether it is open.
    fn watch(dc: Arc<dyn webrtc::data_channel::DataChannel>) -> OutChannel {
        use webrtc::data_channel::DataChannelEvent as E;
        let (tx, open) = tokio::sync::watch::channel(false);
        let polled = dc.clone();
        tokio::spawn(async move {
            while let Some(ev) = polled.poll().await {
                match ev {
                    E::OnOpen => {
                        let _ = tx.send(true);
                    }
                    E::OnClose | E::OnClosing => {
                        let _ = tx.send(false);
                    }
                    _ => {}
                }
            }
            let _ = tx.send(false);
        });
        OutChannel { dc, open }
    }
}

/// A local track we publish, and the task feeding it.
struct LocalTrack {
    info: TrackRef,
    stop: CancellationToken,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    /// Its source (none for a silent track).
    queue: Option<Arc<SourceQueue>>,
}

/// One remote track whose subscription was negotiated (its track_subscribed
/// was emitted).
struct Subscribed {
    generation: u64,
    stop: CancellationToken,
    participant: crate::events::ParticipantRef,
    track: TrackRef,
}

/// The media half of a session.
pub(crate) struct RtcSession {
    subscriber: Transport,
    publisher: Transport,
    outgoing: mpsc::UnboundedSender<proto::signal_request::Message>,
    pending_tracks: Mutex<HashMap<String, oneshot::Sender<proto::TrackInfo>>>,
    answer_waiter: tokio::sync::Mutex<Option<oneshot::Sender<()>>>,
    /// Serialises publisher negotiations (one offer in flight at a time).
    negotiation: tokio::sync::Mutex<()>,
    local_tracks: Mutex<Vec<LocalTrack>>,
    /// Remote tracks whose subscription was negotiated, by track sid. Whoever removes an
    /// entry emits its TrackUnsubscribed, so it is emitted exactly once.
    /// A track subscribed again gets a new generation, so the follower of
    /// the old one can never remove (and report) the new one.
    subscribed: Mutex<HashMap<String, Subscribed>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Track sids the latest subscriber offer sends, with their
    /// participant sids.
    offered: Mutex<HashMap<String, String>>,
    /// Each remote track's follower, by track sid.
    followers: Mutex<HashMap<String, Follower>>,
    /// Where events go (local track subscriptions).
    emitter: RoomEmitter,
    subscriber_state: tokio::sync::watch::Receiver<RTCPeerConnectionState>,
    next_cid: AtomicU32,
    closed: AtomicBool,
    stop: CancellationToken,
    media: Arc<MediaHub>,
    reliable: OutChannel,
    lossy: OutChannel,
    /// The next reliable packet's number, held while it is sent (see
    /// [`RtcSession::send_data_packet`]).
    reliable_sequence: tokio::sync::Mutex<u32>,
    next_request_id: AtomicU32,
    /// UpdateParticipantMetadata requests waiting for their RequestResponse.
    pending_requests: Mutex<HashMap<u32, oneshot::Sender<Result<(), String>>>>,
    identity: String,
}

fn setting_engine() -> webrtc::peer_connection::SettingEngine {
    SettingEngineBuilder::new()
        .with_include_loopback_candidate(true)
        // Where lk-go answers (the subscriber connection), the server starts
        // the DTLS handshake. As the DTLS client, webrtc-rs 0.21 queued its
        // first ClientHello until the ICE agent's next 200 ms check tick
        // (measured: ~160 ms of every job start, `cargo xtask bench`);
        // answering a ClientHello is sent at once.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server)
        .build()
}

async fn build_pc(ice_servers: &[RTCIceServer], handler: Handler) -> webrtc::error::Result<Pc> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry =
        webrtc::peer_connection::register_default_interceptors(Registry::new(), &mut media)?;
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers.to_vec())
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(setting_engine())
        .with_handler(Arc::new(handler))
        // Every interface, plus loopback explicitly: a local dev server only
        // offers 127.0.0.1 candidates, which interface addresses cannot reach.
        .with_udp_addrs(vec!["0.0.0.0:0".to_string(), "127.0.0.1:0".to_string()])
        .build()
        .await?;
    Ok(Arc::new(pc))
}

fn ice_servers(join: &proto::JoinResponse) -> Vec<RTCIceServer> {
    join.ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect()
}

impl RtcSession {
    /// Creates both peer connections. Remote tracks arrive on the returned
    /// receiver (see [`RtcSession::run_track_matcher`]).
    pub(crate) async fn new(
        join: &proto::JoinResponse,
        outgoing: mpsc::UnboundedSender<proto::signal_request::Message>,
        emitter: RoomEmitter,
    ) -> Result<
        (
            Arc<RtcSession>,
            mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
        ),
        String,
    > {
        let media = emitter.media();
        let servers = ice_servers(join);
        let (track_tx, track_rx) = mpsc::unbounded_channel();
        let (state_tx, subscriber_state) = tokio::sync::watch::channel(RTCPeerConnectionState::New);
        let subscriber = build_pc(
            &servers,
            Handler {
                target: proto::SignalTarget::Subscriber,
                outgoing: outgoing.clone(),
                on_track: Some(track_tx),
                state: Some(state_tx),
                media: Some(media.clone()),
                data: Some(emitter.data()),
            },
        )
        .await
        .map_err(|e| format!("subscriber peer connection: {e}"))?;
        let publisher = build_pc(
            &servers,
            Handler {
                target: proto::SignalTarget::Publisher,
                outgoing: outgoing.clone(),
                on_track: None,
                state: None,
                media: None,
                data: None,
            },
        )
        .await
        .map_err(|e| format!("publisher peer connection: {e}"))?;
        let mut channels = Vec::new();
        for (label, init) in [
            (
                "_reliable",
                RTCDataChannelInit {
                    ordered: true,
                    ..Default::default()
                },
            ),
            (
                "_lossy",
                RTCDataChannelInit {
                    ordered: false,
                    max_retransmits: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            channels.push(OutChannel::watch(
                publisher
                    .create_data_channel(label, Some(init))
                    .await
                    .map_err(|e| format!("data channel {label}: {e}"))?,
            ));
        }
        let lossy = channels.pop().expect("two channels");
        let reliable = channels.pop().expect("two channels");
        let session = Arc::new(RtcSession {
            subscriber: Transport {
                pc: subscriber,
                remote_set: AtomicBool::new(false),
                pending: Mutex::new(Vec::new()),
            },
            publisher: Transport {
                pc: publisher,
                remote_set: AtomicBool::new(false),
                pending: Mutex::new(Vec::new()),
            },
            outgoing,
            pending_tracks: Mutex::new(HashMap::new()),
            answer_waiter: tokio::sync::Mutex::new(None),
            negotiation: tokio::sync::Mutex::new(()),
            local_tracks: Mutex::new(Vec::new()),
            subscribed: Mutex::new(HashMap::new()),
            next_generation: std::sync::atomic::AtomicU64::new(1),
            offered: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            emitter,
            subscriber_state,
            next_cid: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            media,
            reliable,
            lossy,
            reliable_sequence: tokio::sync::Mutex::new(1),
            next_request_id: AtomicU32::new(1),
            pending_requests: Mutex::new(HashMap::new()),
            identity: join
                .participant
                .as_ref()
                .map(|p| p.identity.clone())
                .unwrap_or_default(),
        });
        Ok((session, track_rx))
    }

    /// Waits until the subscriber connection is connected. Errs after
    /// `timeout`, or when it closes first, or (unless `through_failure`,
    /// used while an ICE restart may bring it back) when it fails first.
    pub(crate) async fn wait_subscriber_connected(
        &self,
        timeout: Duration,
        through_failure: bool,
    ) -> Result<(), String> {
        wait_connected(self.subscriber_state.clone(), timeout, through_failure).await
    }

    /// Resolves when the subscriber connection fails (ICE gave up, DTLS
    /// broke) after having been set up; pending forever otherwise.
    pub(crate) async fn subscriber_failed(&self) {
        let mut rx = self.subscriber_state.clone();
        loop {
            if *rx.borrow_and_update() == RTCPeerConnectionState::Failed {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    fn send(&self, msg: proto::signal_request::Message) {
        let _ = self.outgoing.send(msg);
    }

    /// Handles the signal messages that concern media. Returns false for
    /// messages it does not handle.
    pub(crate) async fn on_signal(&self, msg: &proto::signal_response::Message) -> bool {
        use proto::signal_response::Message as M;
        match msg {
            M::Offer(offer) => {
                if let Err(e) = self.answer_subscriber(&offer.sdp).await {
                    tracing::warn!(error = %e, "could not answer the subscriber offer");
                }
                true
            }
            M::Answer(answer) => {
                match RTCSessionDescription::answer(answer.sdp.clone()) {
                    Ok(desc) => {
                        if let Err(e) = self.publisher.set_remote(desc).await {
                            tracing::warn!(error = %e, "could not apply the publisher answer");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "server sent an unparsable answer"),
                }
                if let Some(w) = self.answer_waiter.lock().await.take() {
                    let _ = w.send(());
                }
                true
            }
            M::Trickle(trickle) => {
                match serde_json::from_str::<RTCIceCandidateInit>(&trickle.candidate_init) {
                    Ok(c) => {
                        if trickle.target == proto::SignalTarget::Publisher as i32 {
                            self.publisher.add_remote_candidate(c).await;
                        } else {
                            self.subscriber.add_remote_candidate(c).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "unparsable remote ICE candidate"),
                }
                true
            }
            M::RequestResponse(resp) => {
                let waiter = self
                    .pending_requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&resp.request_id);
                if let Some(w) = waiter {
                    let ok = resp.reason == proto::request_response::Reason::Ok as i32;
                    let _ = w.send(if ok {
                        Ok(())
                    } else {
                        let reason = proto::request_response::Reason::try_from(resp.reason)
                            .map(|r| r.as_str_name().to_string())
                            .unwrap_or_else(|_| resp.reason.to_string());
                        Err(format!("{reason}: {}", resp.message))
                    });
                    true
                } else {
                    false
                }
            }
            M::TrackSubscribed(ts) => {
                let track = {
                    let locals = self.local_tracks.lock().unwrap_or_else(|e| e.into_inner());
                    locals.iter().find(|t| t.info.sid == ts.track_sid).map(|t| {
                        if let Some(q) = &t.queue {
                            q.mark_subscribed();
                        }
                        t.info.clone()
                    })
                };
                match track {
                    Some(track) => {
                        tracing::info!(track_sid = %track.sid, "local track has its first subscriber");
                        self.emitter.emit(Event::LocalTrackSubscribed { track });
                    }
                    None => {
                        tracing::debug!(track_sid = %ts.track_sid, "TrackSubscribed for a track not (or no longer) published")
                    }
                }
                true
            }
            M::TrackPublished(resp) => {
                let waiter = self
                    .pending_tracks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&resp.cid);
                if let (Some(w), Some(track)) = (waiter, resp.track.clone()) {
                    let _ = w.send(track);
                }
                true
            }
            _ => false,
        }
    }

    async fn answer_subscriber(&self, sdp: &str) -> webrtc::error::Result<()> {
        let offer = RTCSessionDescription::offer(sdp.to_string())?;
        self.subscriber.set_remote(offer).await?;
        let answer = self.subscriber.pc.create_answer(None).await?;
        self.subscriber
            .pc
            .set_local_description(answer.clone())
            .await?;
        let sdp = self
            .subscriber
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp);
        self.send(proto::signal_request::Message::Answer(
            proto::SessionDescription {
                r#type: "answer".into(),
                sdp,
                ..Default::default()
            },
        ));
        Ok(())
    }

    /// Offers the publisher's current state and waits for the answer.
    async fn negotiate_publisher(&self) -> Result<(), PublishError> {
        self.negotiate_publisher_with(false).await
    }

    async fn negotiate_publisher_with(&self, ice_restart: bool) -> Result<(), PublishError> {
        let _one_at_a_time = self.negotiation.lock().await;
        let (tx, rx) = oneshot::channel();
        *self.answer_waiter.lock().await = Some(tx);
        let options = ice_restart
            .then_some(rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true });
        let offer = self
            .publisher
            .pc
            .create_offer(options)
            .await
            .map_err(wrtc)?;
        self.publisher
            .pc
            .set_local_description(offer.clone())
            .await
            .map_err(wrtc)?;
        let sdp = self
            .publisher
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(offer.sdp);
        self.send(proto::signal_request::Message::Offer(
            proto::SessionDescription {
                r#type: "offer".into(),
                sdp,
                ..Default::default()
            },
        ));
        tokio::time::timeout(NEGOTIATION_TIMEOUT, rx)
            .await
            .map_err(|_| PublishError::NoAnswer(NEGOTIATION_TIMEOUT))?
            .map_err(|_| PublishError::NoAnswer(NEGOTIATION_TIMEOUT))
    }

    /// Publishes a microphone track carrying Opus silence, 20 ms frames,
    /// until the session closes. Returns the track as the server named it.
    pub(crate) async fn publish_silent_audio(&self, name: &str) -> Result<TrackRef, PublishError> {
        self.publish_audio(name, None).await
    }

    /// Publishes a microphone track fed from `source`: a 20 ms send clock
    /// takes 20 ms from the queue, encodes it and sends it, or sends an Opus
    /// silence frame when the queue is empty (or there is no source). The
    /// track is unpublished when the source closes or the session does.
    pub(crate) async fn publish_audio(
        &self,
        name: &str,
        source: Option<Arc<SourceQueue>>,
    ) -> Result<TrackRef, PublishError> {
        let mut encoder = match &source {
            Some(q) => Some(OpusSender::new(q.rate, q.channels).map_err(PublishError::WebRtc)?),
            None => None,
        };
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::NotConnected);
        }
        let n = self.next_cid.fetch_add(1, Ordering::Relaxed);
        let cid = format!("lkgo-audio-{n}");
        let (tx, rx) = oneshot::channel();
        self.pending_tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cid.clone(), tx);
        self.send(proto::signal_request::Message::AddTrack(
            proto::AddTrackRequest {
                cid: cid.clone(),
                name: name.to_string(),
                r#type: proto::TrackType::Audio as i32,
                source: proto::TrackSource::Microphone as i32,
                ..Default::default()
            },
        ));
        let info = tokio::time::timeout(NEGOTIATION_TIMEOUT, rx)
            .await
            .map_err(|_| PublishError::NoConfirmation(NEGOTIATION_TIMEOUT))?
            .map_err(|_| PublishError::NoConfirmation(NEGOTIATION_TIMEOUT))?;

        let codec = RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        };
        let ssrc = pseudo_random_ssrc(n);
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    cid.clone(),
                    cid.clone(),
                    name.to_string(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                ),
            )
            .map_err(wrtc)?,
        );
        let sender = self
            .publisher
            .pc
            .add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(wrtc)?;
        let negotiated = async {
            self.negotiate_publisher().await?;
            sender
                .get_parameters()
                .await
                .map_err(wrtc)?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .ok_or_else(|| {
                    PublishError::WebRtc("no codec negotiated for the audio track".into())
                })
        }
        .await;
        let payload_type = match negotiated {
            Ok(pt) => pt,
            Err(e) => {
                // Never leave a sender nobody feeds: the next negotiation
                // would offer it again as a silent microphone.
                let _ = self.publisher.pc.remove_track(&sender).await;
                return Err(e);
            }
        };

        let stop = self.stop.child_token();
        let feeder_stop = stop.clone();
        let track_sid = info.sid.clone();
        let queue_for_subscribers = source.clone();
        tokio::spawn(async move {
            // The send clock keeps wall time: a tick that comes late (a busy
            // machine) is made up for with up to MAX_CATCH_UP_TICKS packets
            // at once; a longer stall drops that much queued audio (counted)
            // and tells the receiver it was lost, instead of draining the
            // queue slower than real time forever (the producer then blocks,
            // its reader's ring drops frames unseen, and the pitch rises).
            let mut due = tokio::time::Instant::now() + FRAME;
            let mut skipped_ticks: u64 = 0;
            let mut silent_stats = SendStats::default();
            'clock: loop {
                tokio::select! {
                    _ = feeder_stop.cancelled() => break,
                    _ = tokio::time::sleep_until(due) => {}
                }
                if source.as_ref().is_some_and(|q| q.is_closed()) {
                    break;
                }
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                let mut ticks = 1 + (late.as_micros() / FRAME.as_micros()) as u64;
                due += FRAME * ticks as u32;
                let mut lost: u16 = 0;
                if ticks > MAX_CATCH_UP_TICKS {
                    let skip = ticks - MAX_CATCH_UP_TICKS;
                    if skipped_ticks == 0 {
                        tracing::warn!(track_sid = %track_sid, late_ms = late.as_millis() as u64, dropped_ms = skip * 20, "the audio send clock stalled (is the machine overloaded?); dropping what it could not send in time (counted at the end of the track)");
                    }
                    if let (Some(q), Some(enc)) = (&source, encoder.as_mut()) {
                        enc.skip(q, skip);
                    }
                    skipped_ticks += skip;
                    lost = skip.min(u16::MAX as u64) as u16;
                    ticks = MAX_CATCH_UP_TICKS;
                }
                for _ in 0..ticks {
                    let tick = match (&source, encoder.as_mut()) {
                        (Some(q), Some(enc)) => enc.next_tick(q),
                        _ => {
                            silent_stats.silence += 1;
                            Tick::Silence
                        }
                    };
                    let data = match tick {
                        Tick::Packet(p) => bytes::Bytes::from(p),
                        Tick::Silence => bytes::Bytes::from_static(&OPUS_SILENCE_FRAME),
                        Tick::Hold => continue,
                    };
                    let sample = Sample {
                        data,
                        duration: FRAME,
                        prev_dropped_packets: std::mem::take(&mut lost),
                        ..Sample::new(Instant::now())
                    };
                    if let Err(e) = track
                        .sample_writer(ssrc, payload_type)
                        .write_sample(&sample)
                        .await
                    {
                        tracing::debug!(error = %e, "audio track writer stopped");
                        break 'clock;
                    }
                }
            }
            let stats = encoder.as_ref().map_or(silent_stats, |e| e.stats);
            tracing::info!(
                track_sid = %track_sid,
                packets = stats.packets,
                silence = stats.silence,
                holds = stats.holds,
                padded_samples = stats.padded,
                stalled_ticks = skipped_ticks,
                stall_dropped_ms = stats.stall_dropped_ms,
                "local audio track stopped"
            );
            // The session ended under the source (a rejoin replaces it; the
            // cascade closes it): close the queue too, so the plugin's
            // capture says LK_ERR_CLOSED instead of timing out forever.
            if let Some(q) = &source {
                q.close();
            }
        });
        let track_ref = TrackRef {
            sid: info.sid.clone(),
            name: info.name.clone(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
        };
        tracing::info!(track_sid = %track_ref.sid, name = %track_ref.name, "publishing audio track");
        self.local_tracks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(LocalTrack {
                info: track_ref.clone(),
                stop,
                sender,
                queue: queue_for_subscribers,
            });
        Ok(track_ref)
    }

    /// Stops a local track's feeder and removes it from the publisher
    /// connection (the renegotiation tells the server it is gone).
    pub(crate) async fn unpublish(&self, track_sid: &str) {
        let track = {
            let mut locals = self.local_tracks.lock().unwrap_or_else(|e| e.into_inner());
            let i = locals.iter().position(|t| t.info.sid == track_sid);
            i.map(|i| locals.remove(i))
        };
        let Some(track) = track else {
            return;
        };
        track.stop.cancel();
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.publisher.pc.remove_track(&track.sender).await {
            tracing::debug!(error = %e, track_sid, "could not remove the local track");
            return;
        }
        match self.negotiate_publisher().await {
            Ok(()) => tracing::info!(track_sid, "unpublished audio track"),
            // Typically the session is ending; the track stopped sending anyway.
            Err(e) => tracing::debug!(error = %e, track_sid, "unpublishing: renegotiation failed"),
        }
    }

    /// Sends a user data packet on the publisher's `_reliable` or `_lossy`
    /// channel, negotiating the publisher connection first when nothing was
    /// published yet, and waiting (up to `within`) for the channel to open.
    pub(crate) async fn publish_data(
        &self,
        packet: OutgoingData,
        within: Duration,
    ) -> Result<(), DataError> {
        if packet.payload.len() > MAX_DATA_PAYLOAD {
            return Err(DataError::TooLarge(packet.payload.len()));
        }
        #[allow(deprecated)]
        let value = proto::data_packet::Value::User(proto::UserPacket {
            payload: packet.payload,
            topic: Some(packet.topic),
            destination_identities: packet.destination_identities.clone(),
            participant_identity: self.identity.clone(),
            ..Default::default()
        });
        self.send_data_packet(
            value,
            packet.destination_identities,
            packet.reliable,
            None,
            within,
        )
        .await
    }

    /// Sends one DataPacket carrying `value` (a user packet, a data-stream
    /// header/chunk/trailer, an RPC message, a transcription) to
    /// `destination_identities` (empty: everyone). Reliable packets are
    /// numbered and sent one at a time, so they reach the server in the
    /// order of their numbers whatever number of threads send: livekit-server
    /// drops a reliable packet whose sequence is not above the last one it
    /// saw from this participant ("received out of order reliable data
    /// packet"), and used to drop 6-11 % of 1000 packets sent from 4 threads.
    pub(crate) async fn send_data_packet(
        &self,
        value: proto::data_packet::Value,
        destination_identities: Vec<String>,
        reliable: bool,
        on_behalf_of: Option<String>,
        within: Duration,
    ) -> Result<(), DataError> {
        use prost::Message as _;
        if self.closed.load(Ordering::Acquire) {
            return Err(DataError::NotConnected);
        }
        let channel = if reliable {
            &self.reliable
        } else {
            &self.lossy
        };
        let sent = async {
            if !self.publisher.remote_set.load(Ordering::Acquire) {
                // Serialised with other negotiations; a second sender finds
                // the remote description set and skips this.
                let negotiated = {
                    let _one = self.negotiation.lock().await;
                    self.publisher.remote_set.load(Ordering::Acquire)
                };
                if !negotiated {
                    self.negotiate_publisher()
                        .await
                        .map_err(|e| DataError::WebRtc(e.to_string()))?;
                }
            }
            let mut open = channel.open.clone();
            open.wait_for(|o| *o)
                .await
                .map_err(|_| DataError::NotConnected)?;
            let kind = if reliable {
                proto::data_packet::Kind::Reliable
            } else {
                proto::data_packet::Kind::Lossy
            };
            #[allow(deprecated)]
            let mut wire = proto::DataPacket {
                kind: kind as i32,
                participant_identity: on_behalf_of.unwrap_or_else(|| self.identity.clone()),
                destination_identities,
                value: Some(value),
                ..Default::default()
            };
            // The number is taken and the packet handed to the channel under
            // one lock: numbering order is sending order. The number is
            // used up even if the send fails or is abandoned half-way (the
            // packet may be queued already): a gap is harmless, a number
            // sent twice would make the server drop the second packet.
            let _in_order = if reliable {
                let mut next = self.reliable_sequence.lock().await;
                wire.sequence = *next;
                *next = next.wrapping_add(1).max(1);
                Some(next)
            } else {
                None
            };
            let encoded = wire.encode_to_vec();
            // The payload limit leaves room for the envelope (topic,
            // identities); a packet over one SCTP message (16 KiB, what
            // webrtc-rs and browsers receive) would not arrive.
            if encoded.len() > MAX_DATA_MESSAGE {
                return Err(DataError::TooLarge(encoded.len()));
            }
            channel
                .dc
                .send(bytes::BytesMut::from(&encoded[..]))
                .await
                .map_err(|e| DataError::WebRtc(e.to_string()))?;
            Ok::<(), DataError>(())
        };
        tokio::time::timeout(within, sent)
            .await
            .map_err(|_| DataError::Timeout(within))?
    }

    /// Sends UpdateParticipantMetadata and waits for the server's
    /// RequestResponse (livekit-server sends one per request id).
    pub(crate) async fn update_participant(
        &self,
        attributes: HashMap<String, String>,
        metadata: Option<String>,
        within: Duration,
    ) -> Result<(), DataError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DataError::NotConnected);
        }
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request_id, tx);
        self.send(proto::signal_request::Message::UpdateMetadata(
            proto::UpdateParticipantMetadata {
                metadata: metadata.unwrap_or_default(),
                attributes,
                request_id,
                ..Default::default()
            },
        ));
        let answer = tokio::time::timeout(within, rx).await;
        self.pending_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request_id);
        match answer {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(DataError::Refused(why)),
            Ok(Err(_)) => Err(DataError::NotConnected),
            Err(_) => Err(DataError::Timeout(within)),
        }
    }

    /// Matches remote tracks to their publications and reports them.
    pub(crate) async fn run_track_matcher(
        self: Arc<Self>,
        mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
        roster: SharedRoster,
    ) {
        while let Some(track) = tracks.recv().await {
            let roster = roster.clone();
            let session = self.clone();
            tokio::spawn(session.on_remote_track(track, roster));
        }
    }

    /// Called when a publication goes away: if its media was subscribed,
    /// stops following it and returns true (the caller emits
    /// TrackUnsubscribed, before TrackUnpublished).
    pub(crate) fn unsubscribe(&self, track_sid: &str) -> bool {
        // The follower of a track whose subscription an offer already ended
        // is still reading (see reconcile_with_offer): stop it too, or
        // in-flight packets could start a subscription of a track that no
        // longer exists.
        if let Some(follower) = self
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(track_sid)
        {
            follower.stop.cancel();
        }
        self.media.end_track(track_sid);
        let entry = self
            .subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(track_sid);
        match entry {
            Some(sub) => {
                sub.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Reconciles the subscriptions with a subscriber offer: a subscribed
    /// track the server no longer sends (its m-section is gone, rejected or
    /// not sending: RoomService UpdateSubscriptions off, a permission
    /// change) is ended and returned, so the caller emits its
    /// track_unsubscribed once. webrtc-rs does not end such a remote track
    /// by itself, and reuses it if the server sends the track again, so its
    /// follower keeps reading (and resubscribes, see `follow_remote_track`).
    pub(crate) fn reconcile_with_offer(
        &self,
        offer_sdp: &str,
    ) -> Vec<(crate::events::ParticipantRef, TrackRef)> {
        let sending = sending_tracks(offer_sdp);
        let mut subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = subscribed
            .keys()
            .filter(|sid| !sending.contains_key(sid.as_str()))
            .cloned()
            .collect();
        *self.offered.lock().unwrap_or_else(|e| e.into_inner()) = sending;
        for sid in &gone {
            self.media.end_track(sid);
        }
        gone.into_iter()
            .filter_map(|sid| subscribed.remove(&sid))
            .map(|s| (s.participant, s.track))
            .collect()
    }

    /// Records a subscription of `track` and emits its track_subscribed (a
    /// subscription it replaces ends first, with its track_unsubscribed).
    /// Returns the new subscription's generation.
    fn subscribe_track(
        &self,
        participant: &crate::events::ParticipantRef,
        track: &TrackRef,
        stop: &CancellationToken,
        emitter: &RoomEmitter,
    ) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let replaced = self
            .subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                track.sid.clone(),
                Subscribed {
                    generation,
                    stop: stop.clone(),
                    participant: participant.clone(),
                    track: track.clone(),
                },
            );
        if let Some(old) = replaced {
            // Subscribed again on another transceiver before the old media
            // ended: the old subscription ends here, with its one
            // track_unsubscribed, before the new one's track_subscribed.
            old.stop.cancel();
            emitter.emit(Event::TrackUnsubscribed {
                participant: participant.clone(),
                track: track.clone(),
            });
        }
        emitter.emit(Event::TrackSubscribed {
            participant: participant.clone(),
            track: track.clone(),
        });
        generation
    }

    fn is_current(&self, track_sid: &str, generation: u64) -> bool {
        self.subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(track_sid)
            .is_some_and(|s| s.generation == generation)
    }

    fn offered_as_sending(&self, track_sid: &str) -> bool {
        self.offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(track_sid)
    }

    /// Ends every subscription of this session (a full reconnect replaces
    /// it): stops following the tracks and returns them, so the caller
    /// emits each one's track_unsubscribed exactly once.
    pub(crate) fn end_all_subscriptions(&self) -> Vec<(crate::events::ParticipantRef, TrackRef)> {
        let drained: Vec<Subscribed> = self
            .subscribed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        drained
            .into_iter()
            .map(|s| {
                self.media.end_track(&s.track.sid);
                s.stop.cancel();
                (s.participant, s.track)
            })
            .collect()
    }

    /// After a resumed signal connection: if the publisher connection was
    /// ever negotiated, offer again with new ICE credentials (the server
    /// restarts the subscriber side itself with a new offer).
    pub(crate) async fn restart_publisher_ice(&self) -> Result<(), PublishError> {
        if !self.publisher.remote_set.load(Ordering::Acquire) {
            return Ok(());
        }
        self.negotiate_publisher_with(true).await
    }

    /// Stops local tracks and closes both peer connections. Idempotent.
    pub(crate) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let locals =
            std::mem::take(&mut *self.local_tracks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &locals {
            tracing::debug!(track_sid = %t.info.sid, "stopping local track");
            t.stop.cancel();
        }
        self.stop.cancel();
        let _ = self.publisher.pc.close().await;
        let _ = self.subscriber.pc.close().await;
    }
}

/// Waits on a peer connection's state (see
/// [`RtcSession::wait_subscriber_connected`]); the error names the state.
async fn wait_connected(
    mut rx: tokio::sync::watch::Receiver<RTCPeerConnectionState>,
    timeout: Duration,
    through_failure: bool,
) -> Result<(), String> {
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let state = *rx.borrow_and_update();
            match state {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed if through_failure => {}
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(format!("the subscriber peer connection went {state}"))
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err("the subscriber peer connection went away".to_string());
            }
        }
    })
    .await;
    match waited {
        Ok(result) => result,
        Err(_) => Err(format!(
            "ICE/DTLS did not connect within {} s (state: {})",
            timeout.as_secs_f64(),
            *rx.borrow()
        )),
    }
}

/// The tracks the server sends in a subscriber offer, track sid ->
/// participant sid: media sections with a non-zero port, direction
/// sendonly/sendrecv, and an `a=msid:` whose stream id is
/// `participant_sid|track_sid` (LiveKit's convention).
fn sending_tracks(sdp: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    // (port ok, sending, (track sid, participant sid)s)
    type Section = Option<(bool, bool, Vec<(String, String)>)>;
    let mut section: Section = None;
    let mut flush = |section: &mut Section| {
        if let Some((port_ok, sending, sids)) = section.take() {
            if port_ok && sending {
                out.extend(sids);
            }
        }
    };
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            flush(&mut section);
            let port_ok = m.split_whitespace().nth(1).is_some_and(|p| p != "0");
            // Without a direction attribute the default is sendrecv.
            section = Some((port_ok, true, Vec::new()));
        } else if let Some((_, sending, sids)) = section.as_mut() {
            match line {
                "a=sendonly" | "a=sendrecv" => *sending = true,
                "a=recvonly" | "a=inactive" => *sending = false,
                _ => {
                    // `a=msid:STREAM TRACK`, or `a=ssrc:N msid:STREAM TRACK`.
                    let msid = line.strip_prefix("a=msid:").or_else(|| {
                        line.strip_prefix("a=ssrc:")
                            .and_then(|rest| rest.split_once(" msid:"))
                            .map(|(_, m)| m)
                    });
                    if let Some(msid) = msid {
                        let stream = msid.split_whitespace().next().unwrap_or("");
                        if let Some((participant_sid, track_sid)) = stream.split_once('|') {
                            sids.push((track_sid.to_string(), participant_sid.to_string()));
                        }
                    }
                }
            }
        }
    }
    flush(&mut section);
    out
}

fn pseudo_random_ssrc(salt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id().rotate_left(16) ^ salt.wrapping_mul(0x9E37_79B9)) | 1
}

/// The follower of one remote track sid (see [`RtcSession::follow`]).
struct Follower {
    stop: CancellationToken,
    /// Set while the follower waits for the track's media (it was
    /// subscribed from the offer): where `on_track` hands the remote track.
    remote: Option<oneshot::Sender<Arc<dyn TrackRemote>>>,
    /// Pinged on every offer: a subscription an earlier offer ended may
    /// be sent again.
    wake: Arc<tokio::sync::Notify>,
}

impl RtcSession {
    /// Subscribes every track the latest subscriber offer sends whose
    /// publication the roster knows and that nobody follows yet: its tap
    /// exists and its track_subscribed is emitted now, whether media flows
    /// or not (a muted microphone sends none; webrtc-rs announces a remote
    /// track only with its first RTP packet, which used to hide a track
    /// muted before the job joined until it was unmuted, webrtc-rs#605).
    /// Followers of tracks already followed are woken to resubscribe if an
    /// earlier offer had ended them. Called after each offer and each
    /// participant update.
    pub(crate) fn subscribe_offered(self: &Arc<Self>, roster: &SharedRoster) {
        let offered: Vec<(String, String)> = self
            .offered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect();
        for (track_sid, participant_sid) in offered {
            let Some((participant, track)) = roster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .find_track(&participant_sid, &track_sid)
            else {
                continue;
            };
            let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = followers.get(&track_sid) {
                f.wake.notify_one();
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let stop = self.stop.child_token();
            let wake = Arc::new(tokio::sync::Notify::new());
            followers.insert(
                track_sid.clone(),
                Follower {
                    stop: stop.clone(),
                    remote: Some(tx),
                    wake: wake.clone(),
                },
            );
            drop(followers);
            let session = self.clone();
            let roster = roster.clone();
            tokio::spawn(async move {
                session
                    .follow(participant, track, stop, wake, Some(rx), None, roster)
                    .await;
            });
        }
    }

    /// A remote track arrived (its first RTP packet, for webrtc-rs): hands
    /// it to the follower waiting for its media, or starts one (after
    /// waiting for the publication info, which may come just after the
    /// media).
    async fn on_remote_track(self: Arc<Self>, track: Arc<dyn TrackRemote>, roster: SharedRoster) {
        let stream_id = track.stream_id().await.to_string();
        let Some((participant_sid, track_sid)) = stream_id.split_once('|') else {
            tracing::warn!(
                stream_id,
                "remote track with an unexpected stream id; ignored"
            );
            return;
        };
        let waiting = self
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(track_sid)
            .and_then(|f| f.remote.take());
        if let Some(waiting) = waiting {
            match waiting.send(track) {
                Ok(()) => return,
                // That follower is gone; follow the track anew.
                Err(track) => return Box::pin(self.on_remote_track(track, roster)).await,
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            if let Some(found) = roster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .find_track(participant_sid, track_sid)
            {
                break Some(found);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some((participant, track_ref)) = found else {
            tracing::warn!(
                participant_sid,
                track_sid,
                "remote track matches no known publication; ignored"
            );
            return;
        };
        let stop = self.stop.child_token();
        let wake = Arc::new(tokio::sync::Notify::new());
        if let Some(previous) = self
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                track_ref.sid.clone(),
                Follower {
                    stop: stop.clone(),
                    remote: None,
                    wake: wake.clone(),
                },
            )
        {
            // The track arrived on another transceiver: one follower each.
            previous.stop.cancel();
        }
        self.follow(
            participant,
            track_ref,
            stop,
            wake,
            None,
            Some(track),
            roster,
        )
        .await;
    }

    /// Follows one remote track sid: subscribes it (a tap, then
    /// track_subscribed), drives the tap's clock (silence while no media
    /// flows), reads its packets once the remote track arrives (`remote`,
    /// or later through `remote_rx`), resubscribes when the server sends
    /// the track again after an offer ended it, and emits the last
    /// subscription's track_unsubscribed when the media ends.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        self: Arc<Self>,
        participant: crate::events::ParticipantRef,
        track_ref: TrackRef,
        stop: CancellationToken,
        wake: Arc<tokio::sync::Notify>,
        mut remote_rx: Option<oneshot::Receiver<Arc<dyn TrackRemote>>>,
        mut remote: Option<Arc<dyn TrackRemote>>,
        roster: SharedRoster,
    ) {
        let emitter = self.emitter.clone();
        // Audio readers hang off the tap; it decodes only while one is open
        // (a video track's tap only answers "unsupported"). It exists before
        // track_subscribed is emitted, so a plugin that opens a reader on
        // that event always finds it.
        let mut tap = Some(self.media.attach_track(&participant, &track_ref));
        let mut generation = self.subscribe_track(&participant, &track_ref, &stop, &emitter);
        let mut packets: u64 = 0;
        let mut bytes: u64 = 0;
        // The server sends the track again after an offer ended its
        // subscription: a new subscription (on the same transceiver:
        // webrtc-rs reuses the remote track).
        let resubscribe_if_sent = |tap: &mut Option<Arc<crate::media::TrackTap>>,
                                   generation: &mut u64| {
            if !self.is_current(&track_ref.sid, *generation)
                && self.offered_as_sending(&track_ref.sid)
                && roster
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .find_track(&participant.sid, &track_ref.sid)
                    .is_some()
            {
                if tap.is_some() {
                    *tap = Some(self.media.attach_track(&participant, &track_ref));
                }
                *generation = self.subscribe_track(&participant, &track_ref, &stop, &emitter);
            }
        };
        loop {
            let wakeup = tap.as_ref().and_then(|t| t.next_wakeup());
            let timer = async {
                match wakeup {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                got = async { remote_rx.as_mut().expect("guarded").await }, if remote_rx.is_some() => {
                    remote_rx = None;
                    if let Ok(track) = got {
                        remote = Some(track);
                    }
                    continue;
                }
                ev = async { remote.as_ref().expect("guarded").poll().await }, if remote.is_some() => ev,
                _ = wake.notified() => {
                    resubscribe_if_sent(&mut tap, &mut generation);
                    continue;
                }
                _ = timer => {
                    if let Some(tap) = &tap {
                        tap.on_tick(Instant::now());
                    }
                    continue;
                }
            };
            match event {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    packets += 1;
                    bytes += p.payload.len() as u64;
                    if let Some(tap) = &tap {
                        tap.on_packet(
                            p.header.sequence_number,
                            p.header.timestamp,
                            p.payload.clone(),
                            Instant::now(),
                        );
                    }
                    if packets == 1 {
                        tracing::info!(track_sid = %track_ref.sid, participant = %participant.identity, "first RTP packet received");
                    }
                    // Packets still in flight after an offer ended the
                    // subscription do not count: the latest offer must send
                    // the track.
                    resubscribe_if_sent(&mut tap, &mut generation);
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => {}
            }
        }
        let stats = tap.as_ref().map(|t| t.stats()).unwrap_or_default();
        tracing::info!(
            track_sid = %track_ref.sid,
            packets,
            bytes,
            late_or_duplicate = stats.late_or_duplicate,
            reordered = stats.reordered,
            concealed_ms = stats.concealed_48k / 48,
            silence_ms = stats.silence_48k / 48,
            skipped_ms = stats.skipped_48k / 48,
            overlapped_ms = stats.overlapped_48k / 48,
            "remote track ended"
        );
        if let Some(tap) = &tap {
            self.media.detach_track(tap);
        }
        {
            // A later offer or remote track starts a follower anew.
            let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
            if followers
                .get(&track_ref.sid)
                .is_some_and(|f| Arc::ptr_eq(&f.wake, &wake))
            {
                followers.remove(&track_ref.sid);
            }
        }
        let still_ours = {
            let mut subscribed = self.subscribed.lock().unwrap_or_else(|e| e.into_inner());
            match subscribed.get(&track_ref.sid) {
                Some(sub) if sub.generation == generation => {
                    subscribed.remove(&track_ref.sid).is_some()
                }
                _ => false,
            }
        };
        if still_ours && !self.stop.is_cancelled() {
            emitter.emit(Event::TrackUnsubscribed {
                participant,
                track: track_ref,
            });
        }
    }
}

#[cfg(test)]
mod sdp_tests {
    use super::{sending_tracks, wait_connected, RTCPeerConnectionState as S};
    use std::time::Duration;

    /// The join's media wait: connected wins; failed or closed is an error
    /// (except while an ICE restart may bring it back); silence times out
    /// with the state in the message.
    #[tokio::test]
    async fn media_wait_outcomes() {
        let (tx, rx) = tokio::sync::watch::channel(S::New);
        let t = tokio::spawn(wait_connected(rx.clone(), Duration::from_secs(5), false));
        tx.send(S::Connecting).unwrap();
        tx.send(S::Connected).unwrap();
        assert_eq!(t.await.unwrap(), Ok(()));

        let (tx, rx) = tokio::sync::watch::channel(S::Connecting);
        tx.send(S::Failed).unwrap();
        let e = wait_connected(rx.clone(), Duration::from_secs(5), false).await;
        assert!(e.unwrap_err().contains("failed"));

        let (tx, rx) = tokio::sync::watch::channel(S::Failed);
        let t = tokio::spawn(wait_connected(rx, Duration::from_secs(5), true));
        tx.send(S::Connecting).unwrap();
        tx.send(S::Connected).unwrap();
        assert_eq!(t.await.unwrap(), Ok(()), "through a failure (ICE restart)");

        let (_tx, rx) = tokio::sync::watch::channel(S::Connecting);
        let e = wait_connected(rx, Duration::from_millis(50), false)
            .await
            .unwrap_err();
        assert!(
            e.contains("did not connect within 0.05 s") && e.contains("connecting"),
            "{e}"
        );
    }

    #[test]
    fn only_sending_sections_with_a_livekit_msid_count() {
        let sdp = "v=0\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
a=mid:0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=sendonly\r\n\
a=msid:PA_a|TR_live TR_live\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=sendonly\r\n\
a=ssrc:1234 msid:PA_a|TR_ssrc TR_ssrc\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
a=inactive\r\n\
a=msid:PA_a|TR_off TR_off\r\n\
m=audio 0 UDP/TLS/RTP/SAVPF 111\r\n\
a=sendonly\r\n\
a=msid:PA_b|TR_rejected TR_rejected\r\n";
        let sids = sending_tracks(sdp);
        assert_eq!(sids.get("TR_live").map(String::as_str), Some("PA_a"));
        assert!(sids.contains_key("TR_ssrc"));
        assert!(!sids.contains_key("TR_off"));
        assert!(!sids.contains_key("TR_rejected"));
        assert_eq!(sids.len(), 2);
    }
}
