"""Interop peer: the official LiveKit Python SDK as an agent's frontend:
data streams and RPC both ways, against the echo agents' contract
(plugins/echo/src/frontend.rs).

usage: frontend_check.py URL TOKEN AGENT_IDENTITY [--rpc-sizes 5,15000,100000]
                         [--concurrent 0] [--timeout 30]

Registers RPC method `frontend.hello` (returns "hello " + payload) and text
stream handlers on lk.transcription and echo.bytes.sha256, connects, waits
for AGENT_IDENTITY, then:
- perform_rpc "echo" with each payload size (random ASCII): must come back
  unchanged; "nope": must fail with 1400;
- --concurrent N: N "echo" calls at once (asyncio.gather): all must succeed;
- send_text "hello from python" on lk.chat: a stream from the agent on
  lk.transcription must read "echo: hello from python", with
  lk.segment_id, lk.transcribed_track_id and (after the trailer)
  lk.transcription_final "true"; a legacy Transcription for it must arrive;
- stream_text the message "streamed chat" in three writes on lk.chat: the
  same, "echo: streamed chat";
- stream_bytes 100 000 bytes named blob.bin on echo.bytes, and send_file of
  a 20 000-byte file: each answered on echo.bytes.sha256 with its
  lowercase hex SHA-256 and attribute name;
- the agent's frontend.hello call must have arrived with its identity.
Prints one JSON line with every result and "ok"; exits 0 only if all passed.
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import string
import sys
import tempfile
import time

from livekit import rtc


async def main(args: argparse.Namespace) -> int:
    room = rtc.Room()
    agent_here = asyncio.Event()
    result: dict = {"ok": False}
    streams: "dict[str, list]" = {"lk.transcription": [], "echo.bytes.sha256": []}
    arrived = asyncio.Event()
    legacy: list = []
    hello: list = []

    @room.on("participant_connected")
    def on_join(p):
        if p.identity == args.agent:
            agent_here.set()

    @room.on("transcription_received")
    def on_transcription(segments, participant, publication):
        for s in segments:
            legacy.append({"text": s.text, "final": s.final, "from": participant.identity if participant else None})

    def text_handler(topic):
        def handler(reader: rtc.TextStreamReader, sender: str):
            async def read():
                try:
                    text = await reader.read_all()
                    info = reader.info
                    streams[topic].append(
                        {"from": sender, "text": text, "attributes": dict(info.attributes or {})}
                    )
                except Exception as e:  # noqa: BLE001
                    streams[topic].append({"from": sender, "error": repr(e)})
                arrived.set()

            asyncio.ensure_future(read())

        return handler

    for topic in streams:
        room.register_text_stream_handler(topic, text_handler(topic))

    await room.connect(args.url, args.token)

    @room.local_participant.register_rpc_method("frontend.hello")
    async def on_hello(data: rtc.RpcInvocationData):
        hello.append({"caller": data.caller_identity, "payload": data.payload})
        return "hello " + data.payload

    if args.agent in [p.identity for p in room.remote_participants.values()]:
        agent_here.set()
    try:
        await asyncio.wait_for(agent_here.wait(), args.timeout)
    except asyncio.TimeoutError:
        print(json.dumps({"ok": False, "error": f"{args.agent} not in the room"}), flush=True)
        return 1
    lp = room.local_participant
    checks = {}

    # RPC to the agent.
    sizes = [int(s) for s in args.rpc_sizes.split(",") if s]
    rpc = []
    for n in sizes:
        payload = "".join(random.choices(string.ascii_letters, k=n))
        t = time.monotonic()
        try:
            got = await lp.perform_rpc(destination_identity=args.agent, method="echo", payload=payload)
            rpc.append({"size": n, "ok": got == payload, "ms": round((time.monotonic() - t) * 1000, 1)})
        except rtc.RpcError as e:
            rpc.append({"size": n, "ok": False, "code": e.code, "message": e.message})
    result["rpc"] = rpc
    checks["rpc"] = all(r["ok"] for r in rpc)
    try:
        await lp.perform_rpc(destination_identity=args.agent, method="nope", payload="x")
        result["nope"] = None
    except rtc.RpcError as e:
        result["nope"] = e.code
    checks["nope"] = result["nope"] == 1400
    if args.concurrent:
        t = time.monotonic()
        outs = await asyncio.gather(
            *[lp.perform_rpc(destination_identity=args.agent, method="echo", payload=f"c{i}") for i in range(args.concurrent)],
            return_exceptions=True,
        )
        good = sum(1 for i, o in enumerate(outs) if o == f"c{i}")
        result["concurrent"] = {"calls": args.concurrent, "ok": good, "ms": round((time.monotonic() - t) * 1000)}
        checks["concurrent"] = good == args.concurrent

    async def wait_for(topic, pred, within=10.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for s in streams[topic]:
                if pred(s):
                    return s
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        return None

    # Chat, sent whole and streamed.
    await lp.send_text("hello from python", topic="lk.chat")
    s = await wait_for("lk.transcription", lambda s: s.get("text") == "echo: hello from python")
    result["chat"] = s
    checks["chat"] = bool(
        s
        and s["from"] == args.agent
        and s["attributes"].get("lk.segment_id", "").startswith("SG_")
        and s["attributes"].get("lk.transcribed_track_id", "").startswith("TR_")
        and s["attributes"].get("lk.transcription_final") == "true"
    )
    writer = await lp.stream_text(topic="lk.chat")
    for part in ["streamed", " ", "chat"]:
        await writer.write(part)
    await writer.aclose()
    s = await wait_for("lk.transcription", lambda s: s.get("text") == "echo: streamed chat")
    result["stream_chat"] = s
    checks["stream_chat"] = bool(s)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        l["final"] and l["text"] == "echo: hello from python" for l in legacy
    ):
        await asyncio.sleep(0.1)
    result["legacy_transcriptions"] = len(legacy)
    checks["legacy"] = any(l["final"] and l["text"] == "echo: hello from python" for l in legacy)

    # Bytes: streamed, and a file.
    blob = bytes(random.getrandbits(8) for _ in range(100_000))
    writer = await lp.stream_bytes("blob.bin", topic="echo.bytes", destination_identities=[args.agent])
    for i in range(0, len(blob), 30_000):
        await writer.write(blob[i : i + 30_000])
    await writer.aclose()
    want = hashlib.sha256(blob).hexdigest()
    s = await wait_for("echo.bytes.sha256", lambda s: s.get("text") == want)
    result["bytes"] = s
    checks["bytes"] = bool(s and s["attributes"].get("name") == "blob.bin")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "small.txt")
        data = bytes(random.getrandbits(8) for _ in range(20_000))
        with open(path, "wb") as f:
            f.write(data)
        await lp.send_file(path, topic="echo.bytes", destination_identities=[args.agent])
        want = hashlib.sha256(data).hexdigest()
        s = await wait_for("echo.bytes.sha256", lambda s: s.get("text") == want)
        result["file"] = s
        checks["file"] = bool(s and s["attributes"].get("name") == "small.txt")

    # The agent called us on join.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not hello:
        await asyncio.sleep(0.1)
    result["hello"] = hello
    checks["hello"] = bool(hello and hello[0]["payload"] == args.agent and hello[0]["caller"] == args.agent)

    result["checks"] = checks
    result["ok"] = all(checks.values())
    print(json.dumps(result), flush=True)
    await room.disconnect()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("agent", metavar="AGENT_IDENTITY")
    parser.add_argument("--rpc-sizes", default="5,15000,100000")
    parser.add_argument("--concurrent", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    code = asyncio.run(main(parser.parse_args()))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
