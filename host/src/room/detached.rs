//! A room session with no server behind it.
//!
//! Owns: [`DetachedConnector`] / [`DetachedLink`], used by `lk-go job
//! run-script --detached` (run a plugin with no LiveKit server, e.g. while
//! writing it) and by tests that exercise the job without a server. Events
//! only arrive if something emits them through the room's emitter.

use super::{BoxFuture, ConnectError, JoinRequest, Joined, RoomConnector, RoomEmitter, RoomLink};

/// Connects instantly to nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct DetachedConnector;

/// The link of a detached room: leaving and closing tracks do nothing.
#[derive(Debug, Default)]
pub struct DetachedLink {
    joined: Joined,
}

impl RoomLink for DetachedLink {
    fn joined(&self) -> Joined {
        self.joined.clone()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn close_tracks(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl RoomConnector for DetachedConnector {
    fn connect<'a>(
        &'a self,
        request: &'a JoinRequest,
        _emitter: RoomEmitter,
    ) -> BoxFuture<'a, Result<Box<dyn RoomLink>, ConnectError>> {
        Box::pin(async move {
            tracing::info!(room = %request.room_name, "running detached: no LiveKit server, no room events");
            let joined = Joined {
                room_name: request.room_name.clone(),
                participant_identity: request.identity.clone(),
                ..Default::default()
            };
            Ok(Box::new(DetachedLink { joined }) as Box<dyn RoomLink>)
        })
    }
}
