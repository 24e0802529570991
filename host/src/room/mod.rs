//! The room wrapper a job runs in.
//!
//! Owns: [`Room`] (name, event fan-out, the current participants and tracks
//! as the events describe them, the shutdown stages "leave" and "close
//! tracks") and the two seams a session plugs into: [`RoomConnector`] (how to
//! join) and [`RoomLink`] (what a joined session must be able to do).
//! Sessions report everything through a [`RoomEmitter`], so the room's
//! queries and its subscribers can never disagree.
//!
//! Must not touch: jobs, plugins, exit codes. The room never shuts a job down;
//! it publishes [`Event::Disconnected`] and the runner decides.

mod detached;
mod roster;
pub mod rtc;
pub mod signal;

pub use detached::{DetachedConnector, DetachedLink};

use crate::datastream::{DataHub, OutPacket, PacketSink};
use crate::events::{Event, EventHub, ParticipantRef, Subscription, TrackRef};
use crate::media::source::SourceQueue;
use crate::media::MediaHub;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Room sessions resumed or rejoined in this process (see [`recoveries`]).
pub(crate) static RECOVERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process's room session was interrupted and then
/// resumed or rejoined. Monotonic; one job per process, so the job's figure.
pub fn recoveries() -> u64 {
    RECOVERIES.load(std::sync::atomic::Ordering::Relaxed)
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why joining a room failed. Each maps to its own exit code (see
/// `crate::exit`); messages are one line and never contain the API secret.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    #[error("invalid LiveKit URL {url:?}: {why}; use ws://host:port or wss://host")]
    InvalidUrl { url: String, why: String },
    #[error("LiveKit server at {url} is unreachable: {detail}; is livekit-server running? (try `cargo xtask livekit`)")]
    Unreachable { url: String, detail: String },
    #[error("LiveKit server at {url} refused the credentials: {detail}; check --api-key/--api-secret (LIVEKIT_API_KEY/LIVEKIT_API_SECRET) or --token")]
    Unauthorized { url: String, detail: String },
    #[error(
        "LiveKit server at {url} answered with an error: {detail}; the server's log says more"
    )]
    Server { url: String, detail: String },
    #[error("another participant joined the room with this job's identity while it was joining ({detail}); give each job its own --identity")]
    DuplicateIdentity { detail: String },
    #[error("access token: {0}")]
    Token(String),
    #[error("joined the room, but the media connection to {url} did not come up: {detail}; check that this host reaches the server's ICE ports (rtc.udp_port / rtc.tcp_port, or its UDP port range) and that the server advertises an address this host can reach (rtc.node_ip, rtc.use_external_ip)")]
    MediaFailed { url: String, detail: String },
    #[error("--token is for {what} {in_token:?}, but {flag} {given:?} was given; drop {flag} (the token decides) or use a token for {given:?}")]
    TokenMismatch {
        what: &'static str,
        flag: &'static str,
        in_token: String,
        given: String,
    },
}

/// What the server says the session joined as (JoinResponse): the truth the
/// plugin and the logs are told, whatever was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Joined {
    pub room_name: String,
    pub room_sid: String,
    pub participant_identity: String,
    pub participant_sid: String,
}

/// A connected session, as the room needs it for the shutdown cascade.
/// Implementations are given a [`RoomEmitter`] when they connect.
pub trait RoomLink: Send + Sync {
    /// The room and identity the server joined (JoinResponse).
    fn joined(&self) -> Joined;
    /// Leaves the room (tells the server and closes the connection).
    /// Must be idempotent.
    fn leave(&self) -> BoxFuture<'_, ()>;
    /// Stops and releases every local and remote track. Must be idempotent.
    fn close_tracks(&self) -> BoxFuture<'_, ()>;
    /// Publishes a microphone track carrying Opus silence until the tracks
    /// are closed. Sessions without media refuse.
    fn publish_silent_audio<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<TrackRef, rtc::PublishError>> {
        let _ = name;
        Box::pin(async { Err(rtc::PublishError::NotConnected) })
    }
    /// Publishes a microphone track fed from `source` (silence while it is
    /// empty) until [`RoomLink::unpublish_track`] or the tracks close.
    fn publish_audio<'a>(
        &'a self,
        name: &'a str,
        source: Arc<SourceQueue>,
    ) -> BoxFuture<'a, Result<TrackRef, rtc::PublishError>> {
        let _ = (name, source);
        Box::pin(async { Err(rtc::PublishError::NotConnected) })
    }
    /// Stops sending a local track and removes it from the publisher
    /// connection. Unknown sids are ignored.
    fn unpublish_track<'a>(&'a self, track_sid: &'a str) -> BoxFuture<'a, ()> {
        let _ = track_sid;
        Box::pin(async {})
    }
    /// Sends a user data packet (negotiating the publisher connection on
    /// first use).
    fn publish_data(&self, packet: OutgoingData) -> BoxFuture<'_, Result<(), rtc::DataError>> {
        let _ = packet;
        Box::pin(async { Err(rtc::DataError::NotConnected) })
    }
    /// Sends one DataPacket value reliably, in order with every other
    /// reliable packet (data streams, RPC, transcriptions).
    fn send_packet(&self, packet: OutPacket) -> BoxFuture<'_, Result<(), rtc::DataError>> {
        let _ = packet;
        Box::pin(async { Err(rtc::DataError::NotConnected) })
    }
    /// Updates the job participant's attributes (merged) and/or metadata,
    /// and waits for the server's answer.
    fn update_participant(
        &self,
        attributes: std::collections::HashMap<String, String>,
        metadata: Option<String>,
    ) -> BoxFuture<'_, Result<(), rtc::DataError>> {
        let _ = (attributes, metadata);
        Box::pin(async { Err(rtc::DataError::NotConnected) })
    }
}

/// A user data packet to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingData {
    pub payload: Vec<u8>,
    pub topic: String,
    /// Empty: everyone in the room.
    pub destination_identities: Vec<String>,
    pub reliable: bool,
}

/// What a job needs to know to join.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub room_name: String,
    pub identity: String,
    /// The job id, used as participant metadata-free attribute for tracing.
    pub job_id: String,
}

/// Joins rooms. The runner holds one; the CLI picks which.
pub trait RoomConnector: Send + Sync {
    fn connect<'a>(
        &'a self,
        request: &'a JoinRequest,
        emitter: RoomEmitter,
    ) -> BoxFuture<'a, Result<Box<dyn RoomLink>, ConnectError>>;
}

#[derive(Debug, Default)]
struct RoomState {
    /// Remote participants by sid.
    participants: BTreeMap<String, ParticipantRef>,
    /// Published tracks by track sid, with their participant.
    tracks: BTreeMap<String, (ParticipantRef, TrackRef)>,
    /// Track sids subscribed (negotiated; media may be muted).
    subscribed: BTreeMap<String, ()>,
    /// Track sids muted by their publisher.
    muted: BTreeMap<String, ()>,
}

#[derive(Debug)]
struct Shared {
    hub: EventHub,
    state: Mutex<RoomState>,
    media: Arc<MediaHub>,
    data: Arc<DataHub>,
}

/// The one door through which a session reports what happens in the room.
#[derive(Clone, Debug)]
pub struct RoomEmitter {
    shared: Arc<Shared>,
}

impl RoomEmitter {
    /// The room's media registry (audio taps, data inbox).
    pub fn media(&self) -> Arc<MediaHub> {
        self.shared.media.clone()
    }

    /// The room's data streams and RPC.
    pub fn data(&self) -> Arc<DataHub> {
        self.shared.data.clone()
    }

    /// Records `event` in the room's state and publishes it, under the state
    /// lock, so that [`Room::subscribe_with_snapshot`] sees every event
    /// either in its snapshot or in its stream, never both or neither.
    pub fn emit(&self, event: Event) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            match &event {
                Event::ParticipantJoined { participant } => {
                    st.participants
                        .insert(participant.sid.clone(), participant.clone());
                }
                Event::ParticipantLeft { participant } => {
                    st.participants.remove(&participant.sid);
                    // Its streams end, calls to it fail (1503).
                    self.shared
                        .data
                        .participant_left(&participant.identity, &participant.sid);
                }
                Event::TrackPublished { participant, track } => {
                    st.tracks
                        .insert(track.sid.clone(), (participant.clone(), track.clone()));
                }
                Event::TrackUnpublished { track, .. } => {
                    st.tracks.remove(&track.sid);
                    st.subscribed.remove(&track.sid);
                    st.muted.remove(&track.sid);
                }
                Event::TrackMuted { track, .. } => {
                    st.muted.insert(track.sid.clone(), ());
                }
                Event::TrackUnmuted { track, .. } => {
                    st.muted.remove(&track.sid);
                }
                Event::TrackSubscribed { track, .. } => {
                    st.subscribed.insert(track.sid.clone(), ());
                }
                Event::TrackUnsubscribed { track, .. } => {
                    st.subscribed.remove(&track.sid);
                }
                Event::Disconnected { .. }
                | Event::Reconnecting { .. }
                | Event::Reconnected { .. }
                | Event::LocalTrackSubscribed { .. } => {}
            }
            self.shared.hub.publish(event);
        }
    }
}

/// The plugin API's door to a connected room's media (see
/// [`Room::media_access`]). Cheap to clone; outlives the room safely (calls
/// then fail as not connected).
#[derive(Clone)]
pub struct MediaAccess {
    pub link: Arc<dyn RoomLink>,
    pub hub: Arc<MediaHub>,
    pub data: Arc<DataHub>,
}

/// A room the job is in (or, detached, a room with no server behind it).
pub struct Room {
    name: String,
    shared: Arc<Shared>,
    link: Option<Arc<dyn RoomLink>>,
    /// What the data hub sends through (it holds it weakly).
    sink: Option<Arc<dyn PacketSink>>,
}

/// The session as the data hub's [`PacketSink`].
struct LinkSink(Arc<dyn RoomLink>);

impl PacketSink for LinkSink {
    fn send_packet(
        &self,
        packet: OutPacket,
    ) -> crate::datastream::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.send_packet(packet).await.map_err(|e| e.to_string()) })
    }
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("connected", &self.link.is_some())
            .finish()
    }
}

impl Room {
    /// A room with its event fan-out but no session yet.
    pub fn new(name: impl Into<String>) -> Room {
        Room {
            name: name.into(),
            shared: Arc::new(Shared {
                hub: EventHub::default(),
                state: Mutex::new(RoomState::default()),
                media: Arc::new(MediaHub::default()),
                data: Arc::new(DataHub::default()),
            }),
            link: None,
            sink: None,
        }
    }

    /// Joins through `connector`. Subscribe before calling this to see the
    /// participants already in the room arrive as `ParticipantJoined`.
    pub async fn connect(
        &mut self,
        connector: &dyn RoomConnector,
        request: &JoinRequest,
    ) -> Result<(), ConnectError> {
        let link: Arc<dyn RoomLink> = Arc::from(connector.connect(request, self.emitter()).await?);
        let sink: Arc<dyn PacketSink> = Arc::new(LinkSink(link.clone()));
        self.shared.data.set_sink(Arc::downgrade(&sink));
        self.sink = Some(sink);
        self.link = Some(link);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The door sessions (and tests) publish events through.
    pub fn emitter(&self) -> RoomEmitter {
        RoomEmitter {
            shared: self.shared.clone(),
        }
    }

    /// A new subscriber to the room's events.
    pub fn subscribe(&self) -> Subscription {
        self.shared.hub.subscribe()
    }

    /// A new subscriber that first receives the room as it is now — one
    /// `participant_joined` per remote participant, then `track_published`
    /// (then `track_muted` when muted, and `track_subscribed` when
    /// subscribed) per track — and then
    /// every later event. The snapshot is not bounded by the event capacity:
    /// a plugin started in a room of thousands sees all of them.
    pub fn subscribe_with_snapshot(&self) -> Subscription {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut snapshot = Vec::new();
        for p in st.participants.values() {
            snapshot.push(Event::ParticipantJoined {
                participant: p.clone(),
            });
            for (owner, t) in st.tracks.values() {
                if owner.sid != p.sid {
                    continue;
                }
                snapshot.push(Event::TrackPublished {
                    participant: p.clone(),
                    track: t.clone(),
                });
                if st.muted.contains_key(&t.sid) {
                    snapshot.push(Event::TrackMuted {
                        participant: p.clone(),
                        track: t.clone(),
                    });
                }
                if st.subscribed.contains_key(&t.sid) {
                    snapshot.push(Event::TrackSubscribed {
                        participant: p.clone(),
                        track: t.clone(),
                    });
                }
            }
        }
        // Subscribing under the state lock: emit() publishes under it too.
        self.shared.hub.subscribe_after(snapshot)
    }

    /// What the server joined as; `None` before connecting.
    pub fn joined(&self) -> Option<Joined> {
        self.link.as_ref().map(|l| l.joined())
    }

    /// Remote participants currently in the room.
    pub fn participants(&self) -> Vec<ParticipantRef> {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.participants.values().cloned().collect()
    }

    /// Remote tracks currently published, with whether their media arrived.
    pub fn tracks(&self) -> Vec<(ParticipantRef, TrackRef, bool)> {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.tracks
            .values()
            .map(|(p, t)| (p.clone(), t.clone(), st.subscribed.contains_key(&t.sid)))
            .collect()
    }

    /// Cascade stage 1: leave the room. No-op when not connected.
    pub async fn leave(&self) {
        if let Some(link) = &self.link {
            link.leave().await;
        }
    }

    /// Publishes a microphone track of Opus silence (a dummy publisher; what
    /// an agent will use to speak).
    pub async fn publish_silent_audio(&self, name: &str) -> Result<TrackRef, rtc::PublishError> {
        match &self.link {
            Some(link) => link.publish_silent_audio(name).await,
            None => Err(rtc::PublishError::NotConnected),
        }
    }

    /// What a plugin's media calls need: the session (to publish and send)
    /// and the media registry (to read). `None` before connecting.
    pub fn media_access(&self) -> Option<MediaAccess> {
        self.link.as_ref().map(|link| MediaAccess {
            link: link.clone(),
            hub: self.shared.media.clone(),
            data: self.shared.data.clone(),
        })
    }

    /// The room's data streams and RPC (to send and receive them as a
    /// peer would: tests, the bench's feeders).
    pub fn data(&self) -> Arc<DataHub> {
        self.shared.data.clone()
    }

    /// Cascade stage 2: close the tracks. No-op when not connected.
    pub async fn close_tracks(&self) {
        if let Some(link) = &self.link {
            link.close_tracks().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Received, TrackKind, TrackSource};

    fn alice() -> ParticipantRef {
        ParticipantRef {
            identity: "alice".into(),
            sid: "PA_alice".into(),
        }
    }

    fn mic() -> TrackRef {
        TrackRef {
            sid: "TR_mic".into(),
            name: "microphone".into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
        }
    }

    /// The seed's test: a synthetic TrackSubscribed pushed into the real room
    /// wrapper arrives on the events channel.
    #[tokio::test]
    async fn synthetic_track_subscribed_reaches_the_events_channel() {
        let mut room = Room::new("test");
        room.connect(
            &DetachedConnector,
            &JoinRequest {
                room_name: "test".into(),
                identity: "agent".into(),
                job_id: "job-1".into(),
            },
        )
        .await
        .unwrap();
        let mut events = room.subscribe();
        let ev = Event::TrackSubscribed {
            participant: alice(),
            track: mic(),
        };
        room.emitter().emit(ev.clone());
        let got = events
            .recv_timeout(std::time::Duration::from_secs(5))
            .await
            .expect("event arrives");
        assert_eq!(got, Received::Event(ev));
    }

    /// A roster larger than the event capacity (1024) used to lose its
    /// oldest entries before `run` started. The snapshot is unbounded, and
    /// events after it are neither lost nor duplicated.
    #[tokio::test]
    async fn snapshot_subscription_sees_a_roster_larger_than_the_capacity() {
        let room = Room::new("big");
        let em = room.emitter();
        let n = crate::events::DEFAULT_EVENT_CAPACITY * 3;
        for i in 0..n {
            let p = ParticipantRef {
                identity: format!("p{i:05}"),
                sid: format!("PA_{i:05}"),
            };
            em.emit(Event::ParticipantJoined {
                participant: p.clone(),
            });
            em.emit(Event::TrackPublished {
                participant: p,
                track: TrackRef {
                    sid: format!("TR_{i:05}"),
                    ..mic()
                },
            });
        }
        let mut sub = room.subscribe_with_snapshot();
        em.emit(Event::ParticipantLeft {
            participant: ParticipantRef {
                identity: "p00000".into(),
                sid: "PA_00000".into(),
            },
        });
        let mut joined = 0;
        let mut published = 0;
        let mut left = 0;
        while let Some(r) = sub.try_recv() {
            match r {
                Received::Event(Event::ParticipantJoined { .. }) => joined += 1,
                Received::Event(Event::TrackPublished { .. }) => published += 1,
                Received::Event(Event::ParticipantLeft { .. }) => left += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((joined, published, left), (n, n, 1));
    }

    #[tokio::test]
    async fn queries_follow_the_events() {
        let room = Room::new("test");
        let em = room.emitter();
        em.emit(Event::ParticipantJoined {
            participant: alice(),
        });
        em.emit(Event::TrackPublished {
            participant: alice(),
            track: mic(),
        });
        assert_eq!(room.participants(), vec![alice()]);
        assert_eq!(room.tracks(), vec![(alice(), mic(), false)]);
        em.emit(Event::TrackSubscribed {
            participant: alice(),
            track: mic(),
        });
        assert!(room.tracks()[0].2);
        em.emit(Event::TrackUnpublished {
            participant: alice(),
            track: mic(),
        });
        em.emit(Event::ParticipantLeft {
            participant: alice(),
        });
        assert!(room.participants().is_empty());
        assert!(room.tracks().is_empty());
    }
}
