//! Room events and their fan-out to any number of subscribers.
//!
//! Owns: the [`Event`] vocabulary (participants, tracks, disconnection) and
//! [`EventHub`], a bounded broadcast: every subscriber sees every event in
//! order; publishing never waits, so a slow subscriber never blocks the room
//! or the other subscribers; a subscriber that falls more than the capacity
//! behind loses the oldest events and is told how many ([`Received::Missed`]).
//!
//! Must not touch: where events come from (the room session) or where they
//! go (plugins, the runner).

use std::fmt;
use std::time::Duration;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it misses some.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Unknown,
    Audio,
    Video,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Unknown => "unknown",
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackSource {
    Unknown,
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
}

impl TrackSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Unknown => "unknown",
            TrackSource::Camera => "camera",
            TrackSource::Microphone => "microphone",
            TrackSource::ScreenShare => "screen_share",
            TrackSource::ScreenShareAudio => "screen_share_audio",
        }
    }
}

/// A remote participant, as events name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParticipantRef {
    pub identity: String,
    pub sid: String,
}

/// A track, as events name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrackRef {
    pub sid: String,
    pub name: String,
    pub kind: TrackKind,
    pub source: TrackSource,
}

/// Why the room session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// We left (shutdown cascade).
    ClientInitiated,
    /// The connection to the server was lost (closed, reset, EOF).
    ConnectionLost,
    /// The server stopped answering within the liveness timeout.
    LivenessTimeout,
    /// The room was deleted (RoomService DeleteRoom): Leave reason
    /// ROOM_DELETED.
    RoomDeleted,
    /// The server closed the room on its own, e.g. after the last
    /// non-agent participant left and `departure_timeout` passed: Leave
    /// reason ROOM_CLOSED (livekit-server v1.13.5).
    RoomClosed,
    /// The server removed this participant.
    ParticipantRemoved,
    /// Another participant joined with the same identity.
    DuplicateIdentity,
    /// The server is shutting down.
    ServerShutdown,
    /// The server asked the client to come back (Leave action RESUME or
    /// RECONNECT: migration, drain, state mismatch) and resuming or
    /// rejoining did not succeed within the recovery budget.
    ReconnectRequested,
    /// The media connection (peer connection) failed.
    MediaFailed,
    /// The server sent a leave for another reason.
    ServerLeave,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientInitiated => "client_initiated",
            DisconnectReason::ConnectionLost => "connection_lost",
            DisconnectReason::LivenessTimeout => "liveness_timeout",
            DisconnectReason::RoomDeleted => "room_deleted",
            DisconnectReason::RoomClosed => "room_closed",
            DisconnectReason::ReconnectRequested => "reconnect_requested",
            DisconnectReason::MediaFailed => "media_failed",
            DisconnectReason::ParticipantRemoved => "participant_removed",
            DisconnectReason::DuplicateIdentity => "duplicate_identity",
            DisconnectReason::ServerShutdown => "server_shutdown",
            DisconnectReason::ServerLeave => "server_leave",
        }
    }

    /// True when the server went away (or is going away) rather than
    /// ending the session on purpose.
    pub fn is_server_unreachable(self) -> bool {
        matches!(
            self,
            DisconnectReason::ConnectionLost
                | DisconnectReason::LivenessTimeout
                | DisconnectReason::ServerShutdown
                | DisconnectReason::ReconnectRequested
        )
    }

    /// True for the room's natural end: deleted, closed, or this
    /// participant removed. The plugin's code is then the job's outcome.
    pub fn is_natural_end(self) -> bool {
        matches!(
            self,
            DisconnectReason::RoomDeleted
                | DisconnectReason::RoomClosed
                | DisconnectReason::ParticipantRemoved
                | DisconnectReason::ClientInitiated
        )
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened in the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    ParticipantJoined {
        participant: ParticipantRef,
    },
    ParticipantLeft {
        participant: ParticipantRef,
    },
    TrackPublished {
        participant: ParticipantRef,
        track: TrackRef,
    },
    TrackUnpublished {
        participant: ParticipantRef,
        track: TrackRef,
    },
    /// The remote track's media arrived and is matched to its publication.
    TrackSubscribed {
        participant: ParticipantRef,
        track: TrackRef,
    },
    TrackUnsubscribed {
        participant: ParticipantRef,
        track: TrackRef,
    },
    Disconnected {
        reason: DisconnectReason,
        detail: String,
    },
    /// The session was interrupted (`reason`) and is being resumed; events
    /// may pause. Followed by `Reconnected`, or by `Disconnected` when the
    /// reconnect window passes. (ABI 1.2; never shown to older plugins.)
    Reconnecting {
        reason: DisconnectReason,
        detail: String,
    },
    /// The session is back: `resumed` (same participant) or rejoined as a
    /// new participant session; `detail` says more. (ABI 1.2.)
    Reconnected {
        resumed: bool,
        detail: String,
    },
    /// A remote publication was muted (`TrackInfo.muted` in a participant
    /// update; livekit-server then forwards no media for it). A track
    /// published muted is announced `track_published` then `track_muted`.
    /// (ABI 1.4.)
    TrackMuted {
        participant: ParticipantRef,
        track: TrackRef,
    },
    /// A muted remote publication was unmuted. (ABI 1.4.)
    TrackUnmuted {
        participant: ParticipantRef,
        track: TrackRef,
    },
    /// A track this job published has its first subscriber (the server's
    /// `TrackSubscribed` signal message; livekit-server v1.13.5 sends it
    /// once per publication, for the first non-hidden subscriber whose
    /// media path is up, and says nothing of later ones). (ABI 1.4.)
    LocalTrackSubscribed {
        track: TrackRef,
    },
}

impl Event {
    /// Stable snake_case name, e.g. `track_subscribed`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ParticipantJoined { .. } => "participant_joined",
            Event::ParticipantLeft { .. } => "participant_left",
            Event::TrackPublished { .. } => "track_published",
            Event::TrackUnpublished { .. } => "track_unpublished",
            Event::TrackSubscribed { .. } => "track_subscribed",
            Event::TrackUnsubscribed { .. } => "track_unsubscribed",
            Event::Disconnected { .. } => "disconnected",
            Event::Reconnecting { .. } => "reconnecting",
            Event::Reconnected { .. } => "reconnected",
            Event::TrackMuted { .. } => "track_muted",
            Event::TrackUnmuted { .. } => "track_unmuted",
            Event::LocalTrackSubscribed { .. } => "local_track_subscribed",
        }
    }

    pub fn participant(&self) -> Option<&ParticipantRef> {
        match self {
            Event::ParticipantJoined { participant }
            | Event::ParticipantLeft { participant }
            | Event::TrackPublished { participant, .. }
            | Event::TrackUnpublished { participant, .. }
            | Event::TrackSubscribed { participant, .. }
            | Event::TrackUnsubscribed { participant, .. }
            | Event::TrackMuted { participant, .. }
            | Event::TrackUnmuted { participant, .. } => Some(participant),
            Event::Disconnected { .. }
            | Event::Reconnecting { .. }
            | Event::Reconnected { .. }
            | Event::LocalTrackSubscribed { .. } => None,
        }
    }

    pub fn track(&self) -> Option<&TrackRef> {
        match self {
            Event::TrackPublished { track, .. }
            | Event::TrackUnpublished { track, .. }
            | Event::TrackSubscribed { track, .. }
            | Event::TrackUnsubscribed { track, .. }
            | Event::TrackMuted { track, .. }
            | Event::TrackUnmuted { track, .. }
            | Event::LocalTrackSubscribed { track } => Some(track),
            _ => None,
        }
    }
}

/// The publishing side of the fan-out. Cloning shares the same stream.
#[derive(Clone, Debug)]
pub struct EventHub {
    tx: broadcast::Sender<Event>,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(DEFAULT_EVENT_CAPACITY)
    }
}

impl EventHub {
    /// `capacity` events may be buffered per subscriber (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventHub { tx }
    }

    /// Sends `event` to every current subscriber without waiting.
    pub fn publish(&self, event: Event) {
        tracing::debug!(event = event.name(), "room event");
        // No subscriber is not an error: nobody is listening yet.
        let _ = self.tx.send(event);
    }

    /// A new subscriber; it sees events published from now on.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_after(Vec::new())
    }

    /// A new subscriber that receives `first` (in order, unbounded) before
    /// the events published from now on.
    pub fn subscribe_after(&self, first: Vec<Event>) -> Subscription {
        Subscription {
            first: first.into(),
            rx: self.tx.subscribe(),
        }
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// What a subscriber receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Event(Event),
    /// This many events were dropped because the subscriber fell behind.
    Missed(u64),
    /// The hub is gone; no more events will come.
    Closed,
}

/// One subscriber's view of the event stream.
#[derive(Debug)]
pub struct Subscription {
    /// Delivered before anything from `rx` (a room snapshot).
    first: std::collections::VecDeque<Event>,
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next event. Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Received {
        if let Some(ev) = self.first.pop_front() {
            return Received::Event(ev);
        }
        match self.rx.recv().await {
            Ok(ev) => Received::Event(ev),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Missed(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }

    /// Like [`Subscription::recv`] but gives up after `timeout` (`None`).
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.recv()).await.ok()
    }

    /// An event already buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        if let Some(ev) = self.first.pop_front() {
            return Some(Received::Event(ev));
        }
        match self.rx.try_recv() {
            Ok(ev) => Some(Received::Event(ev)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Received::Missed(n)),
            Err(broadcast::error::TryRecvError::Closed) => Some(Received::Closed),
            Err(broadcast::error::TryRecvError::Empty) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(i: usize) -> Event {
        Event::ParticipantJoined {
            participant: ParticipantRef {
                identity: format!("p{i}"),
                sid: format!("PA_{i}"),
            },
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let hub = EventHub::new(16);
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        for i in 0..10 {
            hub.publish(joined(i));
        }
        for sub in [&mut a, &mut b] {
            for i in 0..10 {
                assert_eq!(sub.recv().await, Received::Event(joined(i)));
            }
        }
    }

    #[tokio::test]
    async fn slow_subscriber_is_told_how_many_it_missed_and_does_not_block_others() {
        let hub = EventHub::new(4);
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        for i in 0..10 {
            hub.publish(joined(i)); // never waits, even though `slow` reads nothing
            assert_eq!(fast.recv().await, Received::Event(joined(i)));
        }
        assert_eq!(slow.recv().await, Received::Missed(6));
        for i in 6..10 {
            assert_eq!(slow.recv().await, Received::Event(joined(i)));
        }
        assert_eq!(slow.try_recv(), None);
    }

    #[test]
    fn event_names_are_snake_case() {
        let p = ParticipantRef {
            identity: "a".into(),
            sid: "PA_a".into(),
        };
        let t = TrackRef {
            sid: "TR_1".into(),
            name: "mic".into(),
            kind: TrackKind::Audio,
            source: TrackSource::Microphone,
        };
        let ev = Event::TrackSubscribed {
            participant: p,
            track: t,
        };
        assert_eq!(ev.name(), "track_subscribed");
        assert_eq!(ev.track().unwrap().kind.as_str(), "audio");
    }
}
