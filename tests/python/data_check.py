"""Interop peer: checks an agent's data-packet ping/pong with the official
LiveKit Python SDK.

usage: data_check.py URL TOKEN AGENT_IDENTITY --observer-token TOKEN2
                     [--count 100] [--timeout 30]

Joins the room twice from one process: the "sender" (TOKEN) and an
"observer" (TOKEN2, another identity). Once AGENT_IDENTITY is in the room
the sender sends COUNT reliable packets, payload b"ping N" (N = 0..COUNT-1),
topic "lk.ping", destination_identities=[AGENT_IDENTITY]. The agent is
expected to answer each with the same payload, topic "lk.pong", sent only to
the sender.

Checks: COUNT pongs reach the sender, in order, all with topic lk.pong and
sent by AGENT_IDENTITY; the observer receives no packet at all (it keeps
listening 1 s after the last pong). Prints one JSON line {"received",
"in_order", "wrong_topic", "wrong_sender", "observer_received",
"elapsed_ms"} (elapsed from the first ping to the last pong) and exits 0
only if every check passes; prints {"error": "..."} and exits 1 when the
agent is not there within --timeout s. Missing pongs after --timeout s are
reported in the JSON line (exit 1).
"""

import argparse
import asyncio
import json
import os
import sys
import time

from livekit import rtc

PING_TOPIC = "lk.ping"
PONG_TOPIC = "lk.pong"
OBSERVER_GRACE_S = 1.0


async def main(args: argparse.Namespace) -> int:
    sender = rtc.Room()
    observer = rtc.Room()
    agent_here = asyncio.Event()
    all_pongs = asyncio.Event()
    pongs: "list[bytes]" = []
    wrong_topic = 0
    wrong_sender = 0
    observer_received = 0
    t_last = [0.0]

    @sender.on("participant_connected")
    def on_participant_connected(participant):
        if participant.identity == args.agent:
            agent_here.set()

    @sender.on("data_received")
    def on_sender_data(packet: rtc.DataPacket):
        nonlocal wrong_topic, wrong_sender
        pongs.append(packet.data)
        if packet.topic != PONG_TOPIC:
            wrong_topic += 1
        who = packet.participant.identity if packet.participant is not None else ""
        if who != args.agent:
            wrong_sender += 1
        t_last[0] = time.monotonic()
        if len(pongs) >= args.count:
            all_pongs.set()

    @observer.on("data_received")
    def on_observer_data(packet: rtc.DataPacket):
        nonlocal observer_received
        observer_received += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(
                observer.connect(args.url, args.observer_token),
                sender.connect(args.url, args.token),
            ),
            args.timeout,
        )
        if args.agent in sender.remote_participants:
            agent_here.set()
        await asyncio.wait_for(agent_here.wait(), args.timeout)
    except asyncio.TimeoutError:
        print(json.dumps({"error": f"{args.agent} not in the room within {args.timeout} s"}), flush=True)
        await asyncio.gather(sender.disconnect(), observer.disconnect())
        return 1

    expected = [f"ping {n}".encode() for n in range(args.count)]
    t_first = time.monotonic()
    for payload in expected:
        await sender.local_participant.publish_data(
            payload, reliable=True, destination_identities=[args.agent], topic=PING_TOPIC
        )
    try:
        await asyncio.wait_for(all_pongs.wait(), args.timeout)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(OBSERVER_GRACE_S)

    result = {
        "received": len(pongs),
        "in_order": pongs == expected,
        "wrong_topic": wrong_topic,
        "wrong_sender": wrong_sender,
        "observer_received": observer_received,
        "elapsed_ms": round((t_last[0] - t_first) * 1000, 1) if pongs else None,
    }
    ok = (
        result["received"] == args.count
        and result["in_order"]
        and wrong_topic == 0
        and wrong_sender == 0
        and observer_received == 0
    )
    print(json.dumps(result), flush=True)
    await asyncio.gather(sender.disconnect(), observer.disconnect())
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("agent", metavar="AGENT_IDENTITY")
    parser.add_argument("--observer-token", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=30.0)
    code = asyncio.run(main(parser.parse_args()))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
