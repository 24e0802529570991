//! Data streams and RPC: the protocols LiveKit's frontends and agents speak
//! over data packets, for the job's plugin.
//!
//! Owns: [`DataHub`], the room-wide registry (it survives reconnects, like
//! `crate::media::MediaHub`) of
//! - incoming streams ([`incoming`]): reassembled per stream id, kept only
//!   on the topics the plugin accepts (others are dropped and counted),
//!   bounded per stream ([`StreamLimits::max_stream_bytes`]) and in total
//!   ([`StreamLimits::max_buffered`]), aborted when their sender leaves or
//!   they go idle ([`STREAM_IDLE_TIMEOUT`]); at most
//!   [`MAX_WAITING_STREAMS`] wait to be taken;
//! - outgoing streams ([`outgoing`]): header, 15 000-byte chunks, trailer,
//!   in order on the reliable channel, optionally on behalf of another
//!   participant (a text stream's header identity, for user transcripts);
//! - RPC ([`rpc`]) both ways, as the official SDKs do it: the callee acks
//!   every request at once, answers 1404 for an unknown version, 1400 for
//!   an unregistered method, 1502 for an invocation not answered within its
//!   timeout, 1500 when [`rpc::MAX_WAITING_INVOCATIONS`] wait; the caller
//!   waits [`rpc::ACK_TIMEOUT`] for the ack (1501) and its timeout for the
//!   response (1502), fails a call whose callee leaves with 1503, refuses a
//!   v1 payload over 15 KiB locally (1402) and a server older than 1.8
//!   (1403), and sends requests as v1 packets to a callee at client
//!   protocol 0 and as streams on `lk.rpc_request` to one at 1 or more
//!   (responses go back in the request's version);
//! - the legacy Transcription packet.
//!
//! API boundary: the session hands every stream and RPC packet to
//! [`DataHub::on_packet`]; `room::signal` reports peers' client protocols
//! (`set_peer_protocol`), `RoomEmitter::emit` their departures, and `Room`
//! gives the hub a [`PacketSink`] to send through; the
//! plugin API (`plugin::stream_api`) calls the rest. The host never calls
//! plugin code: invocations and streams are pulled.
//!
//! Must not touch: WebRTC, the signal connection, the ABI's C types.

pub mod incoming;
pub mod outgoing;
pub mod rpc;

use incoming::{Buffered, IncomingStream, StreamEnd, StreamHeader, StreamKind};
use livekit_protocol as proto;
use proto::data_packet::Value;
use rpc::RpcFailure;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Streams received but not yet taken by the plugin, at most; the oldest
/// is dropped (and reported as missed) when more arrive.
pub const MAX_WAITING_STREAMS: usize = 64;
/// An open incoming stream with no packet for this long is aborted.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`StreamLimits::max_stream_bytes`] (`--stream-max-bytes`).
pub const DEFAULT_MAX_STREAM_BYTES: u64 = 16 * 1024 * 1024;
/// Default [`StreamLimits::max_buffered`] (`--streams-max-bytes`).
pub const DEFAULT_MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// Reader and writer ids, unique in the process (never 0): the plugin API
/// hands them out as opaque pointers.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// How much incoming stream content the job keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Content one stream may carry, bytes; a stream over it is aborted.
    pub max_stream_bytes: u64,
    /// Unread content of all streams together, bytes; the stream that
    /// would go over it is aborted.
    pub max_buffered: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_stream_bytes: DEFAULT_MAX_STREAM_BYTES,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One packet to send: a DataPacket value, to `destinations` (empty:
/// everyone), reliably; `on_behalf_of` replaces the packet's sender
/// identity (livekit-server keeps it only on a text-stream header from an
/// agent).
pub struct OutPacket {
    pub value: Value,
    pub destinations: Vec<String>,
    pub on_behalf_of: Option<String>,
}

/// Where the hub sends (the session's reliable data channel), in the
/// order of the calls, each call complete once handed to the channel.
pub trait PacketSink: Send + Sync {
    fn send_packet(&self, packet: OutPacket) -> BoxFuture<'_, Result<(), String>>;
}

/// Why a plugin call on the hub failed, as the ABI's result codes name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubError {
    NotConnected,
    Timeout,
    Stopped,
    Closed,
    Invalid(String),
    TooLarge(String),
    Send(String),
}

/// What an incoming stream is for.
#[derive(Clone, Debug)]
enum Target {
    /// The plugin (it accepted the topic).
    Plugin,
    /// The body of a v2 RPC request to the job.
    Request {
        request_id: String,
        method: String,
        timeout_ms: u32,
        caller: String,
    },
    /// The body of a v2 response to one of the job's calls.
    Response { request_id: String },
}

struct Open {
    stream: Arc<IncomingStream>,
    target: Target,
}

struct Reader {
    stream: Arc<IncomingStream>,
    /// Memory the plugin API keeps alive for this reader (info views).
    keep: Vec<Box<dyn std::any::Any + Send>>,
}

/// An RPC request the job must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub request_id: String,
    pub caller: String,
    pub method: String,
    pub payload: String,
    pub response_timeout_ms: u32,
    pub deadline: std::time::SystemTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RpcVersion {
    V1,
    V2,
}

struct Live {
    caller: String,
    version: RpcVersion,
    deadline: Instant,
}

struct Call {
    destination: String,
    acked: bool,
    done: Option<tokio::sync::oneshot::Sender<Result<String, RpcFailure>>>,
}

struct Writer {
    stream_id: String,
    kind: StreamKind,
    destinations: Vec<String>,
    next_index: tokio::sync::Mutex<u64>,
}

#[derive(Default)]
struct State {
    accept_all: bool,
    topics: HashSet<String>,
    open: HashMap<String, Open>,
    waiting: VecDeque<Arc<IncomingStream>>,
    missed: u64,
    readers: HashMap<u64, Reader>,
    writers: HashMap<u64, Arc<Writer>>,
    /// Client protocol of each remote participant, by identity.
    peers: HashMap<String, i32>,
    methods: HashSet<String>,
    invocations: VecDeque<Invocation>,
    live: HashMap<String, Live>,
    calls: HashMap<String, Call>,
    dropped_topics: HashSet<String>,
    /// Sids of participants who left (the last [`MAX_GONE`]): a stream
    /// whose header arrives after its sender's departure (data and signal
    /// travel separately) is aborted at once.
    gone: VecDeque<String>,
}

/// Departed participants remembered for late stream headers.
const MAX_GONE: usize = 256;

/// Counters for logs and metrics.
#[derive(Debug, Default)]
pub struct DataStats {
    pub streams_received: AtomicU64,
    pub streams_dropped_unread_topic: AtomicU64,
    pub streams_dropped_waiting: AtomicU64,
    pub streams_aborted: AtomicU64,
    pub rpc_received: AtomicU64,
    pub rpc_performed: AtomicU64,
}

type Outgoing = (
    OutPacket,
    Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
);

/// See the module doc.
pub struct DataHub {
    limits: Mutex<StreamLimits>,
    sink: Mutex<Option<Weak<dyn PacketSink>>>,
    /// Every packet the hub sends goes through this one queue, in order:
    /// an RPC ack is sent before the response that follows it.
    outbox: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Outgoing>>>,
    server_version: Mutex<String>,
    buffered: Buffered,
    /// The hub's state and one condvar for every waiter (`next_stream`,
    /// `next_invocation`; each re-checks its own condition), shared with
    /// the stop bell.
    state: Arc<crate::media::bell::Waitable<State>>,
    /// A copy of every stream and RPC packet that arrives (see
    /// [`DataHub::tap`]).
    tap: Mutex<Option<tokio::sync::mpsc::UnboundedSender<proto::DataPacket>>>,
    pub stats: DataStats,
}

impl Default for DataHub {
    fn default() -> Self {
        DataHub {
            limits: Mutex::new(StreamLimits::default()),
            sink: Mutex::new(None),
            outbox: Mutex::new(None),
            server_version: Mutex::new(String::new()),
            buffered: Buffered::new(0),
            state: crate::media::bell::Waitable::new(State::default()),
            tap: Mutex::new(None),
            stats: DataStats::default(),
        }
    }
}

impl std::fmt::Debug for DataHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataHub").finish_non_exhaustive()
    }
}

fn sorted(map: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort();
    v
}

fn now_plus(d: Duration) -> std::time::SystemTime {
    std::time::SystemTime::now() + d
}

/// Whether a server version (`1.13.5`) has RPC (1.8.0 and later); an
/// unparsable or empty version is given the benefit of the doubt.
fn server_has_rpc(version: &str) -> bool {
    let mut it = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>());
    match (it.next(), it.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) >= (1, 8),
        _ => true,
    }
}

impl DataHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn set_limits(&self, limits: StreamLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    fn limits(&self) -> StreamLimits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session the hub sends through (a new one after a rejoin); held
    /// weakly, so the hub never keeps a session alive. Starts the idle
    /// sweep (once, on the runtime this is called on).
    pub fn set_sink(self: &Arc<Self>, sink: Weak<dyn PacketSink>) {
        let first = {
            let mut s = self.sink.lock().unwrap_or_else(|e| e.into_inner());
            let first = s.is_none();
            *s = Some(sink);
            first
        };
        if first {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outgoing>();
                *self.outbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
                let hub = Arc::downgrade(self);
                rt.spawn(async move {
                    while let Some((packet, done)) = rx.recv().await {
                        let sent = match hub.upgrade() {
                            Some(hub) => hub.send_now(packet).await,
                            None => Err("the room is gone".to_string()),
                        };
                        match done {
                            Some(done) => {
                                let _ = done.send(sent);
                            }
                            None => {
                                if let Err(e) = sent {
                                    tracing::debug!(error = %e, "data packet not sent");
                                }
                            }
                        }
                    }
                });
                let hub = Arc::downgrade(self);
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tick.tick().await;
                        let Some(hub) = hub.upgrade() else { return };
                        hub.sweep(Instant::now());
                    }
                });
            }
        }
    }

    /// The server's version (JoinResponse.server_info), for 1403.
    pub fn set_server_version(&self, version: &str) {
        *self
            .server_version
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = version.to_string();
    }

    /// A remote participant's client protocol (ParticipantInfo field 20).
    pub fn set_peer_protocol(&self, identity: &str, client_protocol: i32) {
        self.lock()
            .peers
            .insert(identity.to_string(), client_protocol);
    }

    fn peer_protocol(&self, identity: &str) -> i32 {
        self.lock().peers.get(identity).copied().unwrap_or(0)
    }

    /// Sends through the outbox (in order with everything else), waiting
    /// until the packet was handed to the channel.
    async fn send(&self, packet: OutPacket) -> Result<(), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(packet, Some(tx));
        rx.await
            .unwrap_or_else(|_| Err("not connected".to_string()))
    }

    fn enqueue(
        &self,
        packet: OutPacket,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) {
        let outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        let refused = match outbox.as_ref() {
            Some(tx) => tx.send((packet, done)).err().and_then(|e| (e.0).1),
            None => done,
        };
        if let Some(done) = refused {
            let _ = done.send(Err("not connected".to_string()));
        }
    }

    async fn send_now(&self, packet: OutPacket) -> Result<(), String> {
        let sink = self
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        match sink {
            Some(sink) => sink.send_packet(packet).await,
            None => Err("not connected".to_string()),
        }
    }

    /// Queues a packet without waiting (acks, host-made answers); a
    /// failure is logged at debug.
    fn spawn_send(self: &Arc<Self>, what: &'static str, packet: OutPacket) {
        tracing::trace!("{what}");
        self.enqueue(packet, None);
    }

    /// Every stream and RPC packet that arrives from now on, as it came
    /// (for tests and tools that check what a peer sent; unbounded: read
    /// it or drop it).
    pub fn tap(&self) -> tokio::sync::mpsc::UnboundedReceiver<proto::DataPacket> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self.tap.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Sends any stream or RPC packet as it is (for tests and tools that
    /// play a peer, malformed packets included).
    pub async fn send_raw(&self, value: Value, destinations: Vec<String>) -> Result<(), String> {
        self.send(OutPacket {
            value,
            destinations,
            on_behalf_of: None,
        })
        .await
    }

    // ---- incoming packets --------------------------------------------

    /// A stream or RPC packet from the room. Must be called on the job's
    /// runtime (acks and answers are sent from tasks).
    pub fn on_packet(self: &Arc<Self>, packet: proto::DataPacket) {
        if let Some(tap) = self.tap.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tap.send(packet.clone());
        }
        let sender = packet.participant_identity;
        let sender_sid = packet.participant_sid;
        match packet.value {
            Some(Value::StreamHeader(h)) => self.on_header(h, sender, sender_sid),
            Some(Value::StreamChunk(c)) => self.on_chunk(c),
            Some(Value::StreamTrailer(t)) => self.on_trailer(t),
            Some(Value::RpcRequest(r)) => self.on_request_v1(r, sender),
            Some(Value::RpcAck(a)) => self.on_ack(&a.request_id, &sender),
            Some(Value::RpcResponse(r)) => self.on_response_v1(r, &sender),
            _ => {}
        }
    }

    fn on_header(
        self: &Arc<Self>,
        h: proto::data_stream::Header,
        sender: String,
        sender_sid: String,
    ) {
        use proto::data_stream::header::ContentHeader;
        self.stats.streams_received.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        self.sweep(now);
        if h.compression != 0 {
            // Only sent to peers advertising CAP_COMPRESSION_DEFLATE_RAW,
            // which lk-go does not.
            tracing::warn!(stream_id = %h.stream_id, topic = %h.topic, sender = %sender, "dropped a compressed data stream (lk-go does not advertise compression)");
            return;
        }
        let (kind, name) = match &h.content_header {
            Some(ContentHeader::ByteHeader(b)) => (StreamKind::Bytes, b.name.clone()),
            _ => (StreamKind::Text, String::new()),
        };
        let header = StreamHeader {
            stream_id: h.stream_id.clone(),
            kind,
            topic: h.topic.clone(),
            mime_type: h.mime_type.clone(),
            sender_identity: sender.clone(),
            sender_sid,
            name,
            total_length: h.total_length,
            timestamp_ms: h.timestamp,
            attributes: sorted(&h.attributes),
        };
        let target = match h.topic.as_str() {
            rpc::REQUEST_TOPIC => match self.request_target(&h.attributes, &sender) {
                Some(t) => t,
                None => return,
            },
            rpc::RESPONSE_TOPIC => {
                let Some(id) = h.attributes.get(rpc::ATTR_REQUEST_ID) else {
                    return;
                };
                let st = self.lock();
                match st.calls.get(id) {
                    // A response stream from anyone but the callee is ignored.
                    Some(c) if c.destination == sender => Target::Response {
                        request_id: id.clone(),
                    },
                    _ => return,
                }
            }
            topic => {
                let st = self.lock();
                if !(st.accept_all || st.topics.contains(topic)) {
                    drop(st);
                    self.stats
                        .streams_dropped_unread_topic
                        .fetch_add(1, Ordering::Relaxed);
                    let first = self.lock().dropped_topics.insert(topic.to_string());
                    if first {
                        tracing::info!(topic, sender = %sender, "dropped a data stream: the plugin does not accept its topic (stream_accept_topic); further ones on it are counted, not logged");
                    }
                    return;
                }
                Target::Plugin
            }
        };
        let sender_gone = !header.sender_sid.is_empty()
            && self.lock().gone.iter().any(|g| *g == header.sender_sid);
        let stream = Arc::new(IncomingStream::new(header, now));
        if sender_gone {
            stream.abort("the sender left the room".to_string(), &self.buffered);
        }
        let limits = self.limits();
        if let Some(total) = h.total_length {
            if total > limits.max_stream_bytes {
                stream.abort(
                    format!(
                        "its header announced {total} bytes, over the {}-byte limit of one stream (--stream-max-bytes)",
                        limits.max_stream_bytes
                    ),
                    &self.buffered,
                );
            }
        }
        if let Some(inline) = &h.inline_content {
            // Protocol v2: the whole content in the header.
            stream.on_chunk(
                0,
                inline,
                now,
                limits.max_stream_bytes,
                limits.max_buffered,
                &self.buffered,
            );
            stream.on_trailer("", Vec::new(), &self.buffered);
        }
        {
            let mut st = self.lock();
            if st.open.contains_key(&h.stream_id) {
                return; // a repeated header: the first one counts
            }
            if stream.end() == StreamEnd::Open {
                st.open.insert(
                    h.stream_id.clone(),
                    Open {
                        stream: stream.clone(),
                        target: target.clone(),
                    },
                );
            }
            if let Target::Plugin = target {
                if st.waiting.len() >= MAX_WAITING_STREAMS {
                    if let Some(old) = st.waiting.pop_front() {
                        old.abort(
                            "not taken in time (next_stream)".to_string(),
                            &self.buffered,
                        );
                        st.missed += 1;
                        self.stats
                            .streams_dropped_waiting
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                st.waiting.push_back(stream.clone());
                self.state.notify_all();
            }
        }
        if stream.end() != StreamEnd::Open {
            self.finished(&h.stream_id, &stream, &target);
        }
    }

    fn on_chunk(self: &Arc<Self>, c: proto::data_stream::Chunk) {
        let Some((stream, target)) = self
            .lock()
            .open
            .get(&c.stream_id)
            .map(|o| (o.stream.clone(), o.target.clone()))
        else {
            return; // an unknown (or dropped) stream's chunk
        };
        let limits = self.limits();
        stream.on_chunk(
            c.chunk_index,
            &c.content,
            Instant::now(),
            limits.max_stream_bytes,
            limits.max_buffered,
            &self.buffered,
        );
        if stream.end() != StreamEnd::Open {
            self.finished(&c.stream_id, &stream, &target);
        }
    }

    fn on_trailer(self: &Arc<Self>, t: proto::data_stream::Trailer) {
        let Some((stream, target)) = self
            .lock()
            .open
            .get(&t.stream_id)
            .map(|o| (o.stream.clone(), o.target.clone()))
        else {
            return;
        };
        stream.on_trailer(&t.reason, sorted(&t.attributes), &self.buffered);
        self.finished(&t.stream_id, &stream, &target);
    }

    /// A stream ended (complete or aborted): no longer open; an RPC body
    /// is acted on.
    fn finished(self: &Arc<Self>, stream_id: &str, stream: &Arc<IncomingStream>, target: &Target) {
        self.lock().open.remove(stream_id);
        let end = stream.end();
        if let StreamEnd::Aborted(why) = &end {
            self.stats.streams_aborted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(stream_id, topic = %stream.header.topic, sender = %stream.header.sender_identity, "data stream aborted: {why}");
        }
        match target {
            Target::Plugin => {}
            Target::Request {
                request_id,
                method,
                timeout_ms,
                caller,
            } => match (end, stream.take_all(&self.buffered)) {
                (StreamEnd::Complete, Some(body)) => match String::from_utf8(body) {
                    Ok(payload) => self.invoke(
                        request_id.clone(),
                        caller.clone(),
                        method.clone(),
                        payload,
                        *timeout_ms,
                        RpcVersion::V2,
                    ),
                    Err(_) => self.answer_error(
                        caller,
                        request_id,
                        RpcFailure::builtin_with(
                            rpc::APPLICATION_ERROR,
                            "the request is not UTF-8",
                        ),
                    ),
                },
                _ => self.answer_error(
                    caller,
                    request_id,
                    RpcFailure::builtin_with(
                        rpc::APPLICATION_ERROR,
                        "the request stream did not complete",
                    ),
                ),
            },
            Target::Response { request_id } => {
                let result = match stream.take_all(&self.buffered).map(String::from_utf8) {
                    Some(Ok(payload)) => Ok(payload),
                    _ => Err(RpcFailure::builtin_with(
                        rpc::APPLICATION_ERROR,
                        "the response stream did not complete",
                    )),
                };
                self.resolve(request_id, result);
            }
        }
    }

    /// Aborts streams idle for [`STREAM_IDLE_TIMEOUT`].
    pub fn sweep(self: &Arc<Self>, now: Instant) {
        let idle: Vec<(String, Arc<IncomingStream>, Target)> = self
            .lock()
            .open
            .iter()
            .filter(|(_, o)| {
                now.saturating_duration_since(o.stream.last_packet()) > STREAM_IDLE_TIMEOUT
            })
            .map(|(id, o)| (id.clone(), o.stream.clone(), o.target.clone()))
            .collect();
        for (id, stream, target) in idle {
            stream.abort(
                format!("no packet for {} s", STREAM_IDLE_TIMEOUT.as_secs()),
                &self.buffered,
            );
            self.finished(&id, &stream, &target);
        }
    }

    /// A remote participant left: its open streams are aborted, calls to
    /// it fail with 1503.
    pub fn participant_left(self: &Arc<Self>, identity: &str, sid: &str) {
        let (streams, calls) = {
            let mut st = self.lock();
            st.peers.remove(identity);
            if !sid.is_empty() {
                if st.gone.len() >= MAX_GONE {
                    st.gone.pop_front();
                }
                st.gone.push_back(sid.to_string());
            }
            let streams: Vec<(String, Arc<IncomingStream>, Target)> = st
                .open
                .iter()
                .filter(|(_, o)| {
                    let h = &o.stream.header;
                    // The sid is the sender's own (the server sets it on
                    // every packet); without one, the header's identity.
                    if h.sender_sid.is_empty() {
                        h.sender_identity == identity
                    } else {
                        h.sender_sid == sid
                    }
                })
                .map(|(id, o)| (id.clone(), o.stream.clone(), o.target.clone()))
                .collect();
            let calls: Vec<String> = st
                .calls
                .iter()
                .filter(|(_, c)| c.destination == identity)
                .map(|(id, _)| id.clone())
                .collect();
            (streams, calls)
        };
        for (id, stream, target) in streams {
            stream.abort("the sender left the room".to_string(), &self.buffered);
            self.finished(&id, &stream, &target);
        }
        for id in calls {
            self.resolve(&id, Err(RpcFailure::builtin(rpc::RECIPIENT_DISCONNECTED)));
        }
    }

    // ---- the plugin's incoming streams -------------------------------

    /// Accepts streams on `topic` ("" accepts every topic but RPC's).
    pub fn accept_topic(&self, topic: &str) {
        let mut st = self.lock();
        if topic.is_empty() {
            st.accept_all = true;
        } else {
            st.topics.insert(topic.to_string());
        }
    }

    /// Waits until `deadline` or `stop()` for the next stream on an
    /// accepted topic: its reader id, and how many streams were dropped
    /// before it because nobody took them ([`MAX_WAITING_STREAMS`]).
    pub fn next_stream(
        &self,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<(u64, u64), HubError> {
        let mut st = self.lock();
        let mut parked = None;
        loop {
            if st.missed > 0 {
                let missed = std::mem::take(&mut st.missed);
                // Reported first; the next call takes the stream.
                return Ok((0, missed));
            }
            if let Some(stream) = st.waiting.pop_front() {
                let id = next_id();
                st.readers.insert(
                    id,
                    Reader {
                        stream,
                        keep: Vec::new(),
                    },
                );
                return Ok((id, 0));
            }
            if stop() {
                return Err(HubError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HubError::Timeout);
            }
            st = self.state.park_or_wait(st, deadline, &mut parked);
        }
    }

    pub fn reader(&self, id: u64) -> Option<Arc<IncomingStream>> {
        self.lock().readers.get(&id).map(|r| r.stream.clone())
    }

    /// Keeps `what` alive until the reader is closed (the plugin API's
    /// views of the header).
    pub fn keep_for_reader(&self, id: u64, what: Box<dyn std::any::Any + Send>) -> bool {
        match self.lock().readers.get_mut(&id) {
            Some(r) => {
                r.keep.push(what);
                true
            }
            None => false,
        }
    }

    pub fn read(
        &self,
        id: u64,
        cap: usize,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<u8>, incoming::ReadEnd> {
        match self.reader(id) {
            Some(s) => s.read(cap, deadline, stop, &self.buffered),
            None => Err(incoming::ReadEnd::Closed),
        }
    }

    /// Closes a reader: its stream's unread content is dropped. Returns
    /// whether it was open.
    pub fn close_reader(&self, id: u64) -> bool {
        let reader = self.lock().readers.remove(&id);
        match reader {
            Some(r) => {
                r.stream.close(&self.buffered);
                true
            }
            None => false,
        }
    }

    /// The job ended: every reader and writer is closed, waiting streams
    /// dropped.
    pub fn close_all(&self) {
        let (readers, waiting, writers) = {
            let mut st = self.lock();
            (
                std::mem::take(&mut st.readers),
                std::mem::take(&mut st.waiting),
                std::mem::take(&mut st.writers),
            )
        };
        for r in readers.into_values() {
            r.stream.close(&self.buffered);
        }
        for s in waiting {
            s.close(&self.buffered);
        }
        drop(writers);
        self.state.notify_all();
    }

    /// Bytes of unread stream content held now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    // ---- the plugin's outgoing streams -------------------------------

    /// Opens an outgoing stream: sends its header. Returns the writer id
    /// and the stream id.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_writer(
        &self,
        kind: StreamKind,
        topic: String,
        mime_type: String,
        name: String,
        stream_id: Option<String>,
        total_length: Option<u64>,
        attributes: Vec<(String, String)>,
        destinations: Vec<String>,
        on_behalf_of: Option<String>,
    ) -> Result<(u64, String), HubError> {
        let stream_id = stream_id.unwrap_or_else(outgoing::new_stream_id);
        let header = outgoing::header(
            &stream_id,
            kind,
            &topic,
            &mime_type,
            &name,
            total_length,
            &attributes,
            false,
        );
        use prost::Message as _;
        if header.encoded_len() > outgoing::MAX_HEADER_BYTES {
            return Err(HubError::TooLarge(format!(
                "the stream header is {} bytes encoded, over {}",
                header.encoded_len(),
                outgoing::MAX_HEADER_BYTES
            )));
        }
        self.send(OutPacket {
            value: Value::StreamHeader(header),
            destinations: destinations.clone(),
            on_behalf_of,
        })
        .await
        .map_err(HubError::Send)?;
        let writer = Arc::new(Writer {
            stream_id: stream_id.clone(),
            kind,
            destinations,
            next_index: tokio::sync::Mutex::new(0),
        });
        let id = next_id();
        self.lock().writers.insert(id, writer);
        Ok((id, stream_id))
    }

    fn writer(&self, id: u64) -> Option<Arc<Writer>> {
        self.lock().writers.get(&id).cloned()
    }

    pub fn writer_stream_id(&self, id: u64) -> Option<String> {
        self.writer(id).map(|w| w.stream_id.clone())
    }

    /// Sends `data` as the stream's next chunks, in order.
    pub async fn write(&self, id: u64, data: Vec<u8>) -> Result<(), HubError> {
        let writer = self.writer(id).ok_or(HubError::Closed)?;
        if writer.kind == StreamKind::Text && std::str::from_utf8(&data).is_err() {
            return Err(HubError::Invalid(
                "a text stream's data must be valid UTF-8".into(),
            ));
        }
        let mut index = writer.next_index.lock().await;
        for part in outgoing::split_chunks(writer.kind, &data, outgoing::CHUNK_BYTES) {
            self.send(OutPacket {
                value: Value::StreamChunk(outgoing::chunk(&writer.stream_id, *index, part)),
                destinations: writer.destinations.clone(),
                on_behalf_of: None,
            })
            .await
            .map_err(HubError::Send)?;
            *index += 1;
        }
        Ok(())
    }

    /// Sends the trailer and forgets the writer (also when sending fails).
    pub async fn close_writer(
        &self,
        id: u64,
        reason: String,
        attributes: Vec<(String, String)>,
    ) -> Result<(), HubError> {
        let writer = self.lock().writers.remove(&id).ok_or(HubError::Closed)?;
        // After any write still sending.
        let _index = writer.next_index.lock().await;
        self.send(OutPacket {
            value: Value::StreamTrailer(outgoing::trailer(&writer.stream_id, &reason, &attributes)),
            destinations: writer.destinations.clone(),
            on_behalf_of: None,
        })
        .await
        .map_err(HubError::Send)
    }

    /// Sends a whole text to `destinations` as one stream (the SDKs'
    /// `send_text`): used for RPC v2 bodies.
    async fn send_text(
        &self,
        topic: &str,
        text: String,
        attributes: Vec<(String, String)>,
        destinations: Vec<String>,
    ) -> Result<(), HubError> {
        let total = text.len() as u64;
        let (id, _) = self
            .open_writer(
                StreamKind::Text,
                topic.to_string(),
                String::new(),
                String::new(),
                None,
                Some(total),
                attributes,
                destinations,
                None,
            )
            .await?;
        if let Err(e) = self.write(id, text.into_bytes()).await {
            let _ = self
                .close_writer(id, "send failed".into(), Vec::new())
                .await;
            return Err(e);
        }
        self.close_writer(id, String::new(), Vec::new()).await
    }

    // ---- RPC: the job as callee --------------------------------------

    pub fn register_method(&self, method: &str) -> Result<(), HubError> {
        let mut st = self.lock();
        if !st.methods.contains(method) && st.methods.len() >= rpc::MAX_METHODS {
            return Err(HubError::TooLarge(format!(
                "{} methods are registered already",
                rpc::MAX_METHODS
            )));
        }
        st.methods.insert(method.to_string());
        Ok(())
    }

    pub fn unregister_method(&self, method: &str) {
        self.lock().methods.remove(method);
    }

    /// The target of a v2 request stream, after acking it; `None` when the
    /// request is answered (malformed, wrong version) or unusable.
    fn request_target(
        self: &Arc<Self>,
        attributes: &HashMap<String, String>,
        caller: &str,
    ) -> Option<Target> {
        let id = attributes.get(rpc::ATTR_REQUEST_ID)?.clone();
        self.stats.rpc_received.fetch_add(1, Ordering::Relaxed);
        let method = attributes.get(rpc::ATTR_METHOD).cloned();
        let timeout = attributes
            .get(rpc::ATTR_TIMEOUT_MS)
            .and_then(|t| t.parse::<u32>().ok());
        let (Some(method), Some(timeout_ms)) = (method, timeout) else {
            self.answer_error(
                caller,
                &id,
                RpcFailure::builtin_with(
                    rpc::APPLICATION_ERROR,
                    "malformed RPC request attributes",
                ),
            );
            return None;
        };
        self.ack(caller, &id);
        if attributes.get(rpc::ATTR_VERSION).map(String::as_str) != Some("2") {
            self.answer_error(caller, &id, RpcFailure::builtin(rpc::UNSUPPORTED_VERSION));
            return None;
        }
        Some(Target::Request {
            request_id: id,
            method,
            timeout_ms,
            caller: caller.to_string(),
        })
    }

    fn ack(self: &Arc<Self>, caller: &str, request_id: &str) {
        self.spawn_send(
            "RPC ack",
            OutPacket {
                value: Value::RpcAck(proto::RpcAck {
                    request_id: request_id.to_string(),
                }),
                destinations: vec![caller.to_string()],
                on_behalf_of: None,
            },
        );
    }

    fn answer_error(self: &Arc<Self>, caller: &str, request_id: &str, failure: RpcFailure) {
        self.spawn_send(
            "RPC error response",
            OutPacket {
                value: Value::RpcResponse(proto::RpcResponse {
                    request_id: request_id.to_string(),
                    value: Some(proto::rpc_response::Value::Error(proto::RpcError {
                        code: failure.code,
                        message: rpc::cut(&failure.message, rpc::MAX_MESSAGE),
                        data: rpc::cut(&failure.data, rpc::MAX_DATA),
                    })),
                }),
                destinations: vec![caller.to_string()],
                on_behalf_of: None,
            },
        );
    }

    fn on_request_v1(self: &Arc<Self>, r: proto::RpcRequest, caller: String) {
        self.stats.rpc_received.fetch_add(1, Ordering::Relaxed);
        // Ack before any check, as the SDKs do.
        self.ack(&caller, &r.id);
        if r.version != 1 {
            return self.answer_error(
                &caller,
                &r.id,
                RpcFailure::builtin(rpc::UNSUPPORTED_VERSION),
            );
        }
        self.invoke(
            r.id,
            caller,
            r.method,
            r.payload,
            r.response_timeout_ms,
            RpcVersion::V1,
        );
    }

    /// A request whose body is complete: queued for the plugin, or
    /// answered by the host (1400, 1500).
    fn invoke(
        self: &Arc<Self>,
        request_id: String,
        caller: String,
        method: String,
        payload: String,
        timeout_ms: u32,
        version: RpcVersion,
    ) {
        let timeout = Duration::from_millis(timeout_ms.max(1) as u64);
        {
            let mut st = self.lock();
            if !st.methods.contains(&method) {
                drop(st);
                return self.answer_error(
                    &caller,
                    &request_id,
                    RpcFailure::builtin(rpc::UNSUPPORTED_METHOD),
                );
            }
            if st.invocations.len() >= rpc::MAX_WAITING_INVOCATIONS
                || st.live.contains_key(&request_id)
            {
                drop(st);
                return self.answer_error(
                    &caller,
                    &request_id,
                    RpcFailure::builtin_with(
                        rpc::APPLICATION_ERROR,
                        format!(
                            "{} calls wait for the agent already",
                            rpc::MAX_WAITING_INVOCATIONS
                        ),
                    ),
                );
            }
            st.live.insert(
                request_id.clone(),
                Live {
                    caller: caller.clone(),
                    version,
                    deadline: Instant::now() + timeout,
                },
            );
            st.invocations.push_back(Invocation {
                request_id: request_id.clone(),
                caller,
                method,
                payload,
                response_timeout_ms: timeout_ms,
                deadline: now_plus(timeout),
            });
        }
        self.state.notify_all();
        // An invocation not answered in time costs the caller a 1502 and
        // the host nothing more.
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(hub) = hub.upgrade() else { return };
            let expired = {
                let mut st = hub.lock();
                st.invocations.retain(|i| i.request_id != request_id);
                st.live.remove(&request_id)
            };
            if let Some(live) = expired {
                tracing::info!(
                    request_id,
                    "RPC invocation not answered in time; the caller gets 1502"
                );
                hub.answer_error(
                    &live.caller,
                    &request_id,
                    RpcFailure::builtin(rpc::RESPONSE_TIMEOUT),
                );
            }
        });
    }

    /// Waits until `deadline` or `stop()` for the next invocation.
    pub fn next_invocation(
        &self,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<Invocation, HubError> {
        let mut st = self.lock();
        let mut parked = None;
        loop {
            if let Some(inv) = st.invocations.pop_front() {
                return Ok(inv);
            }
            if stop() {
                return Err(HubError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HubError::Timeout);
            }
            st = self.state.park_or_wait(st, deadline, &mut parked);
        }
    }

    /// Answers an invocation the plugin took. `Err(Closed)`: answered
    /// already (or never taken); `Err(Timeout)`: past its deadline (the
    /// host answered 1502); `Err(TooLarge)`: sent as 1504.
    pub async fn respond(
        self: &Arc<Self>,
        request_id: &str,
        result: Result<String, RpcFailure>,
    ) -> Result<(), HubError> {
        let live = self.lock().live.remove(request_id);
        let Some(live) = live else {
            return Err(HubError::Closed);
        };
        if Instant::now() > live.deadline {
            return Err(HubError::Timeout);
        }
        let error = |failure: RpcFailure| OutPacket {
            value: Value::RpcResponse(proto::RpcResponse {
                request_id: request_id.to_string(),
                value: Some(proto::rpc_response::Value::Error(proto::RpcError {
                    code: failure.code,
                    message: rpc::cut(&failure.message, rpc::MAX_MESSAGE),
                    data: rpc::cut(&failure.data, rpc::MAX_DATA),
                })),
            }),
            destinations: vec![live.caller.clone()],
            on_behalf_of: None,
        };
        match result {
            Err(failure) => self.send(error(failure)).await.map_err(HubError::Send),
            Ok(payload) if live.version == RpcVersion::V2 => {
                self.send_text(
                    rpc::RESPONSE_TOPIC,
                    payload,
                    vec![(rpc::ATTR_REQUEST_ID.to_string(), request_id.to_string())],
                    vec![live.caller.clone()],
                )
                .await
            }
            Ok(payload) if payload.len() > rpc::MAX_V1_PAYLOAD => {
                self.send(error(RpcFailure::builtin(rpc::RESPONSE_PAYLOAD_TOO_LARGE)))
                    .await
                    .map_err(HubError::Send)?;
                Err(HubError::TooLarge(format!(
                    "{} bytes, over {} for a caller at protocol 0",
                    payload.len(),
                    rpc::MAX_V1_PAYLOAD
                )))
            }
            Ok(payload) => self
                .send(OutPacket {
                    value: Value::RpcResponse(proto::RpcResponse {
                        request_id: request_id.to_string(),
                        value: Some(proto::rpc_response::Value::Payload(payload)),
                    }),
                    destinations: vec![live.caller.clone()],
                    on_behalf_of: None,
                })
                .await
                .map_err(HubError::Send),
        }
    }

    // ---- RPC: the job as caller --------------------------------------

    fn on_ack(&self, request_id: &str, sender: &str) {
        if let Some(call) = self.lock().calls.get_mut(request_id) {
            if call.destination == sender {
                call.acked = true;
            }
        }
    }

    fn on_response_v1(self: &Arc<Self>, r: proto::RpcResponse, sender: &str) {
        let from_callee = self
            .lock()
            .calls
            .get(&r.request_id)
            .is_some_and(|c| c.destination == sender);
        if !from_callee {
            return;
        }
        let result = match r.value {
            Some(proto::rpc_response::Value::Payload(p)) => Ok(p),
            Some(proto::rpc_response::Value::Error(e)) => Err(RpcFailure {
                code: e.code,
                message: e.message,
                data: e.data,
            }),
            // No SDK sets it; the Rust SDK reads it as empty, as here.
            Some(proto::rpc_response::Value::CompressedPayload(_)) | None => Ok(String::new()),
        };
        self.resolve(&r.request_id, result);
    }

    fn resolve(&self, request_id: &str, result: Result<String, RpcFailure>) {
        let done = self
            .lock()
            .calls
            .remove(request_id)
            .and_then(|mut c| c.done.take());
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }

    /// Calls `method` on `destination` and waits for its answer (see the
    /// module doc for the errors). Runs on the job's runtime.
    pub async fn call(
        self: &Arc<Self>,
        destination: String,
        method: String,
        payload: String,
        timeout: Duration,
    ) -> Result<String, RpcFailure> {
        self.stats.rpc_performed.fetch_add(1, Ordering::Relaxed);
        let version = self
            .server_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !server_has_rpc(&version) {
            return Err(RpcFailure::builtin(rpc::UNSUPPORTED_SERVER));
        }
        let v2 = self.peer_protocol(&destination) >= 1;
        if !v2 && payload.len() > rpc::MAX_V1_PAYLOAD {
            return Err(RpcFailure::builtin(rpc::REQUEST_PAYLOAD_TOO_LARGE));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Recorded before sending: a fast answer must find it.
        self.lock().calls.insert(
            request_id.clone(),
            Call {
                destination: destination.clone(),
                acked: false,
                done: Some(tx),
            },
        );
        let announced = (timeout.as_millis() as u32).max(rpc::MIN_ANNOUNCED_TIMEOUT_MS);
        let sent = if v2 {
            self.send_text(
                rpc::REQUEST_TOPIC,
                payload,
                vec![
                    (rpc::ATTR_REQUEST_ID.to_string(), request_id.clone()),
                    (rpc::ATTR_METHOD.to_string(), method),
                    (rpc::ATTR_TIMEOUT_MS.to_string(), announced.to_string()),
                    (rpc::ATTR_VERSION.to_string(), "2".to_string()),
                ],
                vec![destination.clone()],
            )
            .await
            .map_err(|e| format!("{e:?}"))
        } else {
            self.send(OutPacket {
                value: Value::RpcRequest(proto::RpcRequest {
                    id: request_id.clone(),
                    method,
                    payload,
                    response_timeout_ms: announced,
                    version: 1,
                    ..Default::default()
                }),
                destinations: vec![destination.clone()],
                on_behalf_of: None,
            })
            .await
        };
        if let Err(e) = sent {
            self.lock().calls.remove(&request_id);
            return Err(RpcFailure::builtin_with(rpc::SEND_FAILED, e));
        }
        let ack_deadline = tokio::time::Instant::now() + rpc::ACK_TIMEOUT;
        let response_deadline = tokio::time::Instant::now() + timeout;
        let mut rx = rx;
        let result = tokio::select! {
            r = &mut rx => r.ok(),
            _ = async {
                tokio::time::sleep_until(ack_deadline).await;
                let acked = self.lock().calls.get(&request_id).is_none_or(|c| c.acked);
                if acked {
                    std::future::pending::<()>().await;
                }
            } => Some(Err(RpcFailure::builtin(rpc::CONNECTION_TIMEOUT))),
            _ = tokio::time::sleep_until(response_deadline) => Some(Err(RpcFailure::builtin(rpc::RESPONSE_TIMEOUT))),
        };
        self.lock().calls.remove(&request_id);
        result.unwrap_or_else(|| Err(RpcFailure::builtin(rpc::RECIPIENT_DISCONNECTED)))
    }

    // ---- transcriptions ----------------------------------------------

    /// Sends one legacy Transcription packet to everyone.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_transcription(
        &self,
        participant_identity: String,
        track_sid: String,
        segment_id: String,
        text: String,
        language: String,
        start_ms: u64,
        end_ms: u64,
        is_final: bool,
    ) -> Result<(), HubError> {
        let value = Value::Transcription(proto::Transcription {
            transcribed_participant_identity: participant_identity,
            track_id: track_sid,
            segments: vec![proto::TranscriptionSegment {
                id: segment_id,
                text,
                start_time: start_ms,
                end_time: end_ms,
                r#final: is_final,
                language,
            }],
        });
        self.send(OutPacket {
            value,
            destinations: Vec::new(),
            on_behalf_of: None,
        })
        .await
        .map_err(HubError::Send)
    }
}

#[cfg(test)]
mod tests;
