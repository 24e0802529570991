//! The hub's state machines against a sink that records what it sends
//! (and can play the peer back): streams in and out, RPC both ways, every
//! built-in error the hub itself raises.

use super::*;

#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<OutPacket>>,
}

impl PacketSink for Recorder {
    fn send_packet(&self, packet: OutPacket) -> BoxFuture<'_, Result<(), String>> {
        self.sent.lock().unwrap().push(packet);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    fn take(&self) -> Vec<OutPacket> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

fn hub() -> (Arc<DataHub>, Arc<Recorder>) {
    let hub = Arc::new(DataHub::default());
    let rec = Arc::new(Recorder::default());
    let sink: Arc<dyn PacketSink> = rec.clone();
    hub.set_sink(Arc::downgrade(&sink));
    std::mem::forget(sink); // the test owns `rec`; keep the weak one alive
    (hub, rec)
}

fn packet(from: &str, value: Value) -> proto::DataPacket {
    proto::DataPacket {
        participant_identity: from.into(),
        participant_sid: format!("PA_{from}"),
        value: Some(value),
        ..Default::default()
    }
}

fn text_header(id: &str, topic: &str, attrs: &[(&str, &str)], inline: Option<&str>) -> Value {
    Value::StreamHeader(proto::data_stream::Header {
        stream_id: id.into(),
        topic: topic.into(),
        mime_type: "text/plain".into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        inline_content: inline.map(|t| t.as_bytes().to_vec()),
        content_header: Some(proto::data_stream::header::ContentHeader::TextHeader(
            Default::default(),
        )),
        ..Default::default()
    })
}

fn chunk(id: &str, index: u64, content: &str) -> Value {
    Value::StreamChunk(outgoing::chunk(id, index, content.as_bytes()))
}

fn trailer(id: &str, reason: &str) -> Value {
    Value::StreamTrailer(outgoing::trailer(id, reason, &[]))
}

fn rpc_request(id: &str, method: &str, payload: &str, version: u32) -> Value {
    Value::RpcRequest(proto::RpcRequest {
        id: id.into(),
        method: method.into(),
        payload: payload.into(),
        response_timeout_ms: 10_000,
        version,
        ..Default::default()
    })
}

fn never() -> bool {
    false
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(200)
}

/// Lets spawned sends run.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn kinds(sent: &[OutPacket]) -> Vec<String> {
    sent.iter()
        .map(|p| match &p.value {
            Value::RpcAck(_) => "ack".to_string(),
            Value::RpcResponse(r) => match &r.value {
                Some(proto::rpc_response::Value::Error(e)) => format!("error {}", e.code),
                Some(proto::rpc_response::Value::Payload(p)) => format!("payload {p}"),
                _ => "response".to_string(),
            },
            Value::StreamHeader(h) => format!("header {}", h.topic),
            Value::StreamChunk(_) => "chunk".to_string(),
            Value::StreamTrailer(_) => "trailer".to_string(),
            _ => "other".to_string(),
        })
        .collect()
}

#[tokio::test]
async fn a_v1_request_is_acked_then_answered() {
    let (hub, rec) = hub();
    hub.register_method("echo").unwrap();
    hub.on_packet(packet("bob", rpc_request("r1", "nope", "x", 1)));
    hub.on_packet(packet("bob", rpc_request("r2", "echo", "x", 0)));
    hub.on_packet(packet("bob", rpc_request("r3", "echo", "hi", 1)));
    settle().await;
    assert_eq!(
        kinds(&rec.take()),
        ["ack", "error 1400", "ack", "error 1404", "ack"],
        "acked before any check; unknown method 1400, version 0 is 1404"
    );
    let inv = hub.next_invocation(soon(), &never).unwrap();
    assert_eq!((inv.caller.as_str(), inv.payload.as_str()), ("bob", "hi"));
    hub.respond(&inv.request_id, Ok("hi".into())).await.unwrap();
    assert_eq!(kinds(&rec.take()), ["payload hi"]);
    assert_eq!(
        hub.respond(&inv.request_id, Ok("again".into())).await,
        Err(HubError::Closed)
    );
    // 15 KiB + 1 to a v1 caller: 1504 instead.
    hub.on_packet(packet("bob", rpc_request("r4", "echo", "x", 1)));
    let inv = hub.next_invocation(soon(), &never).unwrap();
    let big = "y".repeat(rpc::MAX_V1_PAYLOAD + 1);
    assert!(matches!(
        hub.respond(&inv.request_id, Ok(big)).await,
        Err(HubError::TooLarge(_))
    ));
    settle().await;
    assert_eq!(kinds(&rec.take()), ["ack", "error 1504"]);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_invocation_costs_the_caller_1502_and_the_host_nothing() {
    let (hub, rec) = hub();
    hub.register_method("slow").unwrap();
    hub.on_packet(packet("bob", rpc_request("r1", "slow", "x", 1)));
    let inv = hub.next_invocation(soon(), &never).unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(kinds(&rec.take()), ["ack", "error 1502"]);
    assert!(hub.lock().live.is_empty());
    assert_eq!(
        hub.respond(&inv.request_id, Ok("late".into())).await,
        Err(HubError::Closed)
    );
}

#[tokio::test]
async fn a_v2_request_arrives_as_a_stream_and_is_answered_as_one() {
    let (hub, rec) = hub();
    hub.register_method("echo").unwrap();
    let attrs = [
        (rpc::ATTR_REQUEST_ID, "r1"),
        (rpc::ATTR_METHOD, "echo"),
        (rpc::ATTR_TIMEOUT_MS, "10000"),
        (rpc::ATTR_VERSION, "2"),
    ];
    hub.on_packet(packet(
        "web",
        text_header("s1", rpc::REQUEST_TOPIC, &attrs, None),
    ));
    hub.on_packet(packet("web", chunk("s1", 0, "hello ")));
    hub.on_packet(packet("web", chunk("s1", 1, "world")));
    hub.on_packet(packet("web", trailer("s1", "")));
    let inv = hub.next_invocation(soon(), &never).unwrap();
    assert_eq!(inv.payload, "hello world");
    hub.respond(&inv.request_id, Ok("big".repeat(10_000)))
        .await
        .unwrap();
    settle().await;
    let sent = rec.take();
    let k = kinds(&sent);
    assert_eq!(k[0], "ack");
    assert_eq!(k[1], "header lk.rpc_response");
    assert_eq!(k.last().unwrap(), "trailer");
    assert_eq!(
        k.iter().filter(|k| *k == "chunk").count(),
        2,
        "30 000 bytes"
    );
    // Inline (protocol 2) with a wrong version: acked, 1404.
    let attrs = [
        (rpc::ATTR_REQUEST_ID, "r2"),
        (rpc::ATTR_METHOD, "echo"),
        (rpc::ATTR_TIMEOUT_MS, "10000"),
        (rpc::ATTR_VERSION, "3"),
    ];
    hub.on_packet(packet(
        "web",
        text_header("s2", rpc::REQUEST_TOPIC, &attrs, Some("x")),
    ));
    settle().await;
    assert_eq!(kinds(&rec.take()), ["ack", "error 1404"]);
}

#[tokio::test]
async fn streams_are_kept_only_on_accepted_topics() {
    let (hub, _rec) = hub();
    hub.accept_topic("lk.chat");
    hub.on_packet(packet("bob", text_header("a", "other", &[], None)));
    hub.on_packet(packet("bob", chunk("a", 0, "ignored")));
    hub.on_packet(packet(
        "bob",
        text_header("b", "lk.chat", &[("k", "v")], None),
    ));
    hub.on_packet(packet("bob", chunk("b", 0, "hi")));
    hub.on_packet(packet("bob", trailer("b", "")));
    hub.on_packet(packet("bob", chunk("nobody", 0, "unknown id: ignored")));
    assert_eq!(
        hub.stats
            .streams_dropped_unread_topic
            .load(Ordering::Relaxed),
        1
    );
    let (id, missed) = hub.next_stream(soon(), &never).unwrap();
    assert_eq!(missed, 0);
    let s = hub.reader(id).unwrap();
    assert_eq!(s.header.topic, "lk.chat");
    assert_eq!(s.header.sender_identity, "bob");
    assert_eq!(hub.read(id, 100, soon(), &never).unwrap(), b"hi");
    assert_eq!(
        hub.read(id, 100, soon(), &never),
        Err(incoming::ReadEnd::Ended)
    );
    assert!(hub.close_reader(id));
    assert_eq!(
        hub.read(id, 100, soon(), &never),
        Err(incoming::ReadEnd::Closed)
    );
    assert_eq!(
        hub.next_stream(Instant::now(), &never),
        Err(HubError::Timeout)
    );
    assert_eq!(hub.buffered_bytes(), 0);
}

#[tokio::test]
async fn a_sender_leaving_aborts_its_streams_and_fails_calls_to_it() {
    let (hub, _rec) = hub();
    hub.accept_topic("");
    hub.on_packet(packet("bob", text_header("a", "t", &[], None)));
    hub.on_packet(packet("bob", chunk("a", 0, "part")));
    let (id, _) = hub.next_stream(soon(), &never).unwrap();
    let call = {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.call(
                "bob".into(),
                "m".into(),
                "p".into(),
                Duration::from_secs(10),
            )
            .await
        })
    };
    settle().await;
    hub.participant_left("bob", "PA_bob");
    match hub.read(id, 100, soon(), &never) {
        Err(incoming::ReadEnd::Aborted(why)) => assert!(why.contains("left"), "{why}"),
        other => panic!("{other:?}"),
    }
    let failure = call.await.unwrap().unwrap_err();
    assert_eq!(failure.code, rpc::RECIPIENT_DISCONNECTED);
    // Data and signal travel separately: a header that arrives after its
    // sender's departure is aborted at once, not kept until it goes idle.
    hub.on_packet(packet("bob", text_header("late", "t", &[], None)));
    let (id, _) = hub.next_stream(soon(), &never).unwrap();
    match hub.read(id, 100, soon(), &never) {
        Err(incoming::ReadEnd::Aborted(why)) => assert!(why.contains("left"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn streams_nobody_takes_are_dropped_and_reported() {
    let (hub, _rec) = hub();
    hub.accept_topic("t");
    for i in 0..MAX_WAITING_STREAMS + 3 {
        let id = format!("s{i}");
        hub.on_packet(packet("bob", text_header(&id, "t", &[], Some("x"))));
    }
    assert_eq!(hub.next_stream(soon(), &never).unwrap(), (0, 3));
    let (id, missed) = hub.next_stream(soon(), &never).unwrap();
    assert_eq!(missed, 0);
    assert_eq!(hub.reader(id).unwrap().header.stream_id, "s3");
}

#[tokio::test]
async fn a_huge_announced_length_or_a_compressed_stream_is_refused() {
    let (hub, _rec) = hub();
    hub.accept_topic("");
    hub.on_packet(packet(
        "bob",
        Value::StreamHeader(proto::data_stream::Header {
            stream_id: "big".into(),
            topic: "t".into(),
            total_length: Some(u64::MAX),
            ..Default::default()
        }),
    ));
    let (id, _) = hub.next_stream(soon(), &never).unwrap();
    match hub.read(id, 10, soon(), &never) {
        Err(incoming::ReadEnd::Aborted(why)) => assert!(why.contains("--stream-max-bytes")),
        other => panic!("{other:?}"),
    }
    hub.on_packet(packet(
        "bob",
        Value::StreamHeader(proto::data_stream::Header {
            stream_id: "z".into(),
            topic: "t".into(),
            compression: 1,
            ..Default::default()
        }),
    ));
    assert_eq!(
        hub.next_stream(Instant::now(), &never),
        Err(HubError::Timeout)
    );
}

/// A peer that acks and answers every request it is sent.
struct Echoer {
    hub: std::sync::OnceLock<Weak<DataHub>>,
    ack: bool,
}

impl PacketSink for Echoer {
    fn send_packet(&self, packet: OutPacket) -> BoxFuture<'_, Result<(), String>> {
        let hub = self.hub.get().and_then(Weak::upgrade);
        let ack = self.ack;
        Box::pin(async move {
            if let (Some(hub), Value::RpcRequest(r)) = (hub, packet.value) {
                if ack {
                    hub.on_packet(packet_from(
                        "callee",
                        Value::RpcAck(proto::RpcAck {
                            request_id: r.id.clone(),
                        }),
                    ));
                    hub.on_packet(packet_from(
                        "callee",
                        Value::RpcResponse(proto::RpcResponse {
                            request_id: r.id,
                            value: Some(proto::rpc_response::Value::Payload(r.payload)),
                        }),
                    ));
                }
            }
            Ok(())
        })
    }
}

fn packet_from(from: &str, value: Value) -> proto::DataPacket {
    packet(from, value)
}

#[tokio::test(start_paused = true)]
async fn calls_get_answers_or_the_sdks_errors() {
    for ack in [true, false] {
        let hub = Arc::new(DataHub::default());
        let echoer: Arc<dyn PacketSink> = Arc::new(Echoer {
            hub: std::sync::OnceLock::from(Arc::downgrade(&hub)),
            ack,
        });
        hub.set_sink(Arc::downgrade(&echoer));
        let got = hub
            .call(
                "callee".into(),
                "m".into(),
                "ping".into(),
                Duration::from_secs(15),
            )
            .await;
        if ack {
            assert_eq!(got, Ok("ping".to_string()));
        } else {
            assert_eq!(got.unwrap_err().code, rpc::CONNECTION_TIMEOUT);
        }
        // A v1 callee cannot take more than 15 KiB.
        let big = "x".repeat(rpc::MAX_V1_PAYLOAD + 1);
        let got = hub
            .call("callee".into(), "m".into(), big, Duration::from_secs(15))
            .await;
        assert_eq!(got.unwrap_err().code, rpc::REQUEST_PAYLOAD_TOO_LARGE);
        assert!(hub.lock().calls.is_empty());
    }
    let hub = Arc::new(DataHub::default());
    hub.set_server_version("1.7.2");
    let got = hub
        .call(
            "callee".into(),
            "m".into(),
            "p".into(),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(got.unwrap_err().code, rpc::UNSUPPORTED_SERVER);
}

#[tokio::test]
async fn outgoing_streams_are_header_chunks_trailer() {
    let (hub, rec) = hub();
    let (id, stream_id) = hub
        .open_writer(
            StreamKind::Text,
            "lk.transcription".into(),
            String::new(),
            String::new(),
            None,
            None,
            vec![("lk.segment_id".into(), "SG_1".into())],
            vec!["alice".into()],
            Some("alice".into()),
        )
        .await
        .unwrap();
    hub.write(id, "é".repeat(10_000).into_bytes())
        .await
        .unwrap();
    assert!(matches!(
        hub.write(id, vec![0xFF]).await,
        Err(HubError::Invalid(_))
    ));
    hub.close_writer(
        id,
        String::new(),
        vec![("lk.transcription_final".into(), "true".into())],
    )
    .await
    .unwrap();
    assert_eq!(
        hub.close_writer(id, String::new(), vec![]).await,
        Err(HubError::Closed)
    );
    let sent = rec.take();
    assert_eq!(
        kinds(&sent),
        ["header lk.transcription", "chunk", "chunk", "trailer"]
    );
    assert_eq!(sent[0].on_behalf_of.as_deref(), Some("alice"));
    assert!(sent[1..].iter().all(|p| p.on_behalf_of.is_none()));
    assert!(sent.iter().all(|p| p.destinations == ["alice"]));
    match &sent[1].value {
        Value::StreamChunk(c) => {
            assert_eq!(c.stream_id, stream_id);
            assert_eq!(c.content.len(), 15_000);
        }
        _ => unreachable!(),
    }
}
