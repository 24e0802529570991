//! The remote participants and their publications as this session knows
//! them, and the events a change implies.
//!
//! Owns: the roster (participant sid → participant and its tracks, the
//! muted set) and turning a JoinResponse or ParticipantUpdate into events.
//! Must not touch: the signal connection (`signal`, which feeds it) or the
//! peer connections (`rtc`, which looks up the publication behind a remote
//! track). Both share it through [`SharedRoster`]; neither imports the
//! other for it.

use crate::events::{Event, ParticipantRef, TrackKind, TrackRef, TrackSource};
use livekit_protocol as proto;
use std::collections::HashMap;
use std::sync::Arc;

/// The roster, shared with the track matcher of the media half.
pub(crate) type SharedRoster = Arc<std::sync::Mutex<Roster>>;

/// What the session knows of the remote participants, to compute deltas.
#[derive(Default)]
pub(crate) struct Roster {
    local_sid: String,
    /// sid → (participant, tracks by sid)
    participants: HashMap<String, (ParticipantRef, HashMap<String, TrackRef>)>,
    /// Track sids their publishers muted.
    muted: std::collections::HashSet<String>,
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

    /// Removes participant `sid`, pushing its tracks' `track_unpublished`
    /// and its `participant_left` onto `events`.
    pub(super) fn remove(&mut self, sid: &str, events: &mut Vec<Event>) {
        if let Some((p, tracks)) = self.participants.remove(sid) {
            for t in tracks.into_values() {
                self.muted.remove(&t.sid);
                events.push(Event::TrackUnpublished {
                    participant: p.clone(),
                    track: t,
                });
            }
            events.push(Event::ParticipantLeft { participant: p });
        }
    }

    /// Replaces the roster with a JoinResponse's view (`local_sid` is this
    /// session's own participant): participants no longer there leave (with
    /// their tracks unpublished), the others are applied as updates. Returns
    /// the events and, per participant sid, the newly published tracks.
    pub(super) fn replace_all(
        &mut self,
        local_sid: &str,
        others: &[proto::ParticipantInfo],
    ) -> (Vec<Event>, Vec<(String, Vec<TrackRef>)>) {
        self.local_sid = local_sid.to_string();
        let mut events = Vec::new();
        let present: std::collections::HashSet<&str> =
            others.iter().map(|p| p.sid.as_str()).collect();
        let gone: Vec<String> = self
            .participants
            .keys()
            .filter(|sid| !present.contains(sid.as_str()))
            .cloned()
            .collect();
        for sid in gone {
            self.remove(&sid, &mut events);
        }
        let mut new_tracks = Vec::new();
        for info in others {
            let (evs, tracks) = self.apply(info);
            events.extend(evs);
            new_tracks.push((info.sid.clone(), tracks));
        }
        (events, new_tracks)
    }

    /// Applies one participant's info; returns the events it implies and the
    /// newly published tracks.
    pub(super) fn apply(&mut self, info: &proto::ParticipantInfo) -> (Vec<Event>, Vec<TrackRef>) {
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
            self.remove(&info.sid, &mut events);
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
            self.remove(&sid, &mut events);
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
        for info in &info.tracks {
            let Some(t) = current.get(&info.sid) else {
                continue;
            };
            let was_muted = self.muted.contains(&info.sid);
            if info.muted && !was_muted {
                self.muted.insert(info.sid.clone());
                events.push(Event::TrackMuted {
                    participant: participant.clone(),
                    track: t.clone(),
                });
            } else if !info.muted && was_muted {
                self.muted.remove(&info.sid);
                events.push(Event::TrackUnmuted {
                    participant: participant.clone(),
                    track: t.clone(),
                });
            }
        }
        let removed: Vec<String> = entry
            .1
            .keys()
            .filter(|sid| !current.contains_key(*sid))
            .cloned()
            .collect();
        for sid in removed {
            self.muted.remove(&sid);
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

pub(super) fn track_kind(t: i32) -> TrackKind {
    match proto::TrackType::try_from(t) {
        Ok(proto::TrackType::Audio) => TrackKind::Audio,
        Ok(proto::TrackType::Video) => TrackKind::Video,
        _ => TrackKind::Unknown,
    }
}

pub(super) fn track_source(s: i32) -> TrackSource {
    match proto::TrackSource::try_from(s) {
        Ok(proto::TrackSource::Camera) => TrackSource::Camera,
        Ok(proto::TrackSource::Microphone) => TrackSource::Microphone,
        Ok(proto::TrackSource::ScreenShare) => TrackSource::ScreenShare,
        Ok(proto::TrackSource::ScreenShareAudio) => TrackSource::ScreenShareAudio,
        _ => TrackSource::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
