"""Reference agent for the browser test peer, written with the official LiveKit Python SDK.

usage: py_agent.py URL TOKEN [--audio tone|echo|none] [--tone-hz 440]
                   [--tone-amplitude 8000] [--state listening]

Implements, with the SDK's public API only, the contract that tests/browser/peer.mjs checks
(the same one lk-go's agents are held to):

- RPC `echo` returns its payload unchanged. Any other method is left unregistered, so the SDK
  answers 1400 (UNSUPPORTED_METHOD).
- Every text stream on `lk.chat` is answered with one text stream on `lk.transcription`
  (broadcast, like LiveKit Agents' transcriptions) whose text is "echo: " + the message, with
  attributes lk.segment_id (SG_ + 12 hex), lk.transcription_final = "true" and
  lk.transcribed_track_id (our microphone track's sid, "" if none).
- A byte stream on `echo.bytes` is answered, to its sender only, with a text stream on
  `echo.bytes.sha256` whose text is the lowercase hex SHA-256 of the bytes and whose
  attribute `name` is the byte stream's name.
- When a remote participant becomes active (its data channel is up) it calls RPC
  `frontend.hello` on it with our own identity as the payload (participants already present
  when we connect are called too).
- It publishes a microphone track ("agent-mic"): a sine (--audio tone, default 440 Hz, peak
  8000), an echo of the first remote microphone track (--audio echo), or nothing
  (--audio none), and sets the attribute lk.agent.state (default "listening").
- Bench protocol: a byte or text stream on `bench.sink` is counted (bytes; UTF-8 bytes for
  text) and, once it ends, answered to its sender with a text stream on `bench.sink.done`
  whose text is that count in decimal. RPC `bench.source` with payload N (decimal) returns
  "N" at once and then sends the caller one byte stream of N pseudo-random bytes on
  `bench.source.data` (name bench.bin, total size N), written in 15 000-byte pieces.

Prints one JSON line {"ready": true, "identity", "room", "mic_track_sid"} on stdout once
connected, published and the state attribute is set; everything else (one JSON object a line:
participants with their client_protocol, RPC calls, streams) goes to stderr. Runs until
SIGTERM/SIGINT or until the room disconnects it; exits 0.
"""

import argparse
import asyncio
import hashlib
import json
import math
import os
import signal
import sys
import time
import uuid

import numpy as np

from livekit import rtc

RATE = 48000
FRAME = RATE // 100  # 10 ms
BENCH_PIECE = 15000
PARTICIPANT_STATE_ACTIVE = 2  # livekit_models ParticipantInfo.State.ACTIVE


def log(event: str, **fields) -> None:
    fields = {"event": event, "t": round(time.time(), 3), **fields}
    print(json.dumps(fields), file=sys.stderr, flush=True)


def pseudo_random_bytes(n: int) -> bytes:
    # Incompressible (so no transport compression can flatter the numbers) and fast to make.
    return np.random.default_rng(n).bytes(n)


async def main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    room = rtc.Room()
    tasks: "set[asyncio.Task]" = set()
    mic_sid = [""]
    source = rtc.AudioSource(RATE, 1, queue_size_ms=100)
    echo_task: "list[asyncio.Task | None]" = [None]
    echo_sid = [""]
    greeted: "set[str]" = set()

    def spawn(coro) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # --- RPC -------------------------------------------------------------------------------

    async def rpc_echo(data: rtc.RpcInvocationData) -> str:
        log("rpc", method="echo", caller=data.caller_identity, size=len(data.payload))
        return data.payload

    async def rpc_bench_source(data: rtc.RpcInvocationData) -> str:
        try:
            n = int(data.payload)
        except ValueError:
            raise rtc.RpcError(1500, "payload must be a decimal byte count")
        log("rpc", method="bench.source", caller=data.caller_identity, bytes=n)
        spawn(send_bench_source(data.caller_identity, n))
        return str(n)

    async def send_bench_source(caller: str, n: int) -> None:
        blob = pseudo_random_bytes(n)
        t0 = time.monotonic()
        writer = await room.local_participant.stream_bytes(
            "bench.bin",
            total_size=n,
            destination_identities=[caller],
            topic="bench.source.data",
        )
        for off in range(0, n, BENCH_PIECE):
            await writer.write(blob[off : off + BENCH_PIECE])
        await writer.aclose()
        log("bench.source.sent", to=caller, bytes=n, ms=round((time.monotonic() - t0) * 1000, 1))

    async def greet(p: rtc.RemoteParticipant) -> None:
        if p.identity in greeted:
            return
        greeted.add(p.identity)
        t0 = time.monotonic()
        try:
            reply = await room.local_participant.perform_rpc(
                destination_identity=p.identity,
                method="frontend.hello",
                payload=room.local_participant.identity,
            )
            log("hello", to=p.identity, reply=reply, ms=round((time.monotonic() - t0) * 1000, 1))
        except rtc.RpcError as e:
            log("hello", to=p.identity, error_code=e.code, error=e.message)

    # --- streams ---------------------------------------------------------------------------

    async def on_chat(reader: rtc.TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        log("chat", sender=sender, text=text, attributes=dict(reader.info.attributes or {}))
        attrs = {
            "lk.segment_id": "SG_" + uuid.uuid4().hex[:12],
            "lk.transcription_final": "true",
            "lk.transcribed_track_id": mic_sid[0],
        }
        await room.local_participant.send_text(
            "echo: " + text, topic="lk.transcription", attributes=attrs
        )

    async def on_echo_bytes(reader: rtc.ByteStreamReader, sender: str) -> None:
        h = hashlib.sha256()
        n = 0
        async for chunk in reader:
            h.update(chunk)
            n += len(chunk)
        name = reader.info.name
        log("echo.bytes", sender=sender, name=name, bytes=n, attributes=dict(reader.info.attributes or {}))
        await room.local_participant.send_text(
            h.hexdigest(),
            topic="echo.bytes.sha256",
            destination_identities=[sender],
            attributes={"name": name},
        )

    async def bench_done(sender: str, n: int, t0: float) -> None:
        log("bench.sink", sender=sender, bytes=n, ms=round((time.monotonic() - t0) * 1000, 1))
        await room.local_participant.send_text(
            str(n), topic="bench.sink.done", destination_identities=[sender]
        )

    async def on_bench_bytes(reader: rtc.ByteStreamReader, sender: str) -> None:
        t0 = time.monotonic()
        n = 0
        async for chunk in reader:
            n += len(chunk)
        await bench_done(sender, n, t0)

    async def on_bench_text(reader: rtc.TextStreamReader, sender: str) -> None:
        t0 = time.monotonic()
        n = 0
        async for chunk in reader:
            n += len(chunk.encode("utf-8"))
        await bench_done(sender, n, t0)

    def handler(fn):
        return lambda reader, sender: spawn(fn(reader, sender))

    room.register_text_stream_handler("lk.chat", handler(on_chat))
    room.register_byte_stream_handler("echo.bytes", handler(on_echo_bytes))
    room.register_byte_stream_handler("bench.sink", handler(on_bench_bytes))
    room.register_text_stream_handler("bench.sink", handler(on_bench_text))

    # --- audio -----------------------------------------------------------------------------

    async def tone() -> None:
        step = 2 * math.pi * args.tone_hz / RATE
        k = np.arange(FRAME)
        phase = 0.0
        while True:
            pcm = np.round(args.tone_amplitude * np.sin(phase + step * k)).astype(np.int16)
            phase = math.fmod(phase + step * FRAME, 2 * math.pi)
            await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, FRAME))

    async def echo(track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        try:
            async for ev in stream:
                await source.capture_frame(ev.frame)
        finally:
            await stream.aclose()

    def maybe_echo(track: rtc.Track, pub: rtc.RemoteTrackPublication, who: str) -> None:
        if args.audio != "echo" or echo_task[0] is not None:
            return
        if track.kind != rtc.TrackKind.KIND_AUDIO or pub.source != rtc.TrackSource.SOURCE_MICROPHONE:
            return
        log("echoing", participant=who, track_sid=pub.sid)
        echo_sid[0] = pub.sid
        echo_task[0] = asyncio.ensure_future(echo(track))

    def stop_echo_of(sid: str) -> None:
        # The echoed track went away: echo the next remote microphone, if any.
        if echo_task[0] is None or echo_sid[0] != sid:
            return
        echo_task[0].cancel()
        echo_task[0] = None
        echo_sid[0] = ""
        for p in room.remote_participants.values():
            for rpub in p.track_publications.values():
                if rpub.track is not None and rpub.sid != sid:
                    maybe_echo(rpub.track, rpub, p.identity)

    # --- room events -----------------------------------------------------------------------

    def describe(p: rtc.RemoteParticipant) -> dict:
        return {
            "identity": p.identity,
            "kind": int(p.kind),
            "state": int(p.state),
            # ParticipantInfo.client_protocol as the SFU relays it (not public API).
            "client_protocol": int(getattr(p._info, "client_protocol", -1)),
            "attributes": dict(p.attributes),
        }

    @room.on("participant_connected")
    def on_participant_connected(p: rtc.RemoteParticipant):
        log("participant_connected", **describe(p))

    @room.on("participant_active")
    def on_participant_active(p: rtc.RemoteParticipant):
        log("participant_active", **describe(p))
        spawn(greet(p))

    @room.on("participant_disconnected")
    def on_participant_disconnected(p: rtc.RemoteParticipant):
        log("participant_disconnected", identity=p.identity)
        greeted.discard(p.identity)

    @room.on("track_subscribed")
    def on_track_subscribed(track, pub, p):
        log("track_subscribed", participant=p.identity, track_sid=pub.sid, kind=int(track.kind))
        maybe_echo(track, pub, p.identity)

    @room.on("track_unsubscribed")
    def on_track_unsubscribed(track, pub, p):
        log("track_unsubscribed", participant=p.identity, track_sid=pub.sid)
        stop_echo_of(pub.sid)

    @room.on("disconnected")
    def on_disconnected(*_a):
        log("disconnected")
        stop.set()

    connecting = asyncio.ensure_future(
        room.connect(args.url, args.token, options=rtc.RoomOptions(auto_subscribe=True))
    )
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([connecting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        log("stopped while connecting")
        return 0
    connecting.result()  # raises if the connection failed
    # The local participant exists only once connected: register at once.
    room.local_participant.register_rpc_method("echo", rpc_echo)
    room.local_participant.register_rpc_method("bench.source", rpc_bench_source)

    if args.audio != "none":
        track = rtc.LocalAudioTrack.create_audio_track("agent-mic", source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        pub = await room.local_participant.publish_track(track, opts)
        mic_sid[0] = pub.sid
        if args.audio == "tone":
            spawn(tone())
    if args.state:
        await room.local_participant.set_attributes({"lk.agent.state": args.state})

    for p in room.remote_participants.values():
        log("participant_present", **describe(p))
        if p.state == PARTICIPANT_STATE_ACTIVE:
            spawn(greet(p))
        for rpub in p.track_publications.values():
            if rpub.track is not None:
                maybe_echo(rpub.track, rpub, p.identity)

    print(
        json.dumps(
            {
                "ready": True,
                "identity": room.local_participant.identity,
                "room": room.name,
                "mic_track_sid": mic_sid[0],
            }
        ),
        flush=True,
    )

    await stop.wait()
    for t in list(tasks):
        t.cancel()
    if echo_task[0] is not None:
        echo_task[0].cancel()
    await room.disconnect()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--audio", choices=["tone", "echo", "none"], default="tone")
    parser.add_argument("--tone-hz", type=float, default=440.0)
    parser.add_argument("--tone-amplitude", type=int, default=8000)
    parser.add_argument("--state", default="listening", help='lk.agent.state value ("" = leave unset)')
    code = asyncio.run(main(parser.parse_args()))
    # Like tests/python/*: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
