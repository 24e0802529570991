"""Interop peer: reliable data from many plugin threads arrives whole.

usage: data_flood_check.py URL TOKEN AGENT_IDENTITY [--count 1000]
                           [--threads 4] [--timeout 30]

Once AGENT_IDENTITY is in the room, sends it one reliable packet on topic
"lk.flood" with payload "COUNT THREADS"; the agent (plugins/echo) answers
with COUNT reliable packets on "lk.flood" to this participant only, sent
from THREADS threads at once. Counts what arrives until COUNT packets came
or nothing came for 3 s (or --timeout). Prints one JSON line {"received",
"unique", "elapsed_ms"}; exits 0 only when every packet arrived once.
"""

import argparse
import asyncio
import json
import os
import sys
import time

from livekit import rtc


async def main(args: argparse.Namespace) -> int:
    room = rtc.Room()
    agent_here = asyncio.Event()
    done = asyncio.Event()
    got: "list[bytes]" = []
    last = [time.monotonic()]

    @room.on("participant_connected")
    def on_participant_connected(participant):
        if participant.identity == args.agent:
            agent_here.set()

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket):
        if packet.topic == "lk.flood":
            got.append(packet.data)
            last[0] = time.monotonic()
            if len(got) >= args.count:
                done.set()

    try:
        await asyncio.wait_for(room.connect(args.url, args.token), args.timeout)
        if args.agent in room.remote_participants:
            agent_here.set()
        await asyncio.wait_for(agent_here.wait(), args.timeout)
    except asyncio.TimeoutError:
        print(json.dumps({"error": f"{args.agent} not in the room within {args.timeout} s"}), flush=True)
        return 1
    t0 = time.monotonic()
    await room.local_participant.publish_data(
        f"{args.count} {args.threads}".encode(),
        reliable=True,
        destination_identities=[args.agent],
        topic="lk.flood",
    )
    deadline = t0 + args.timeout
    while not done.is_set() and time.monotonic() < deadline:
        if got and time.monotonic() - last[0] > 3.0:
            break
        try:
            await asyncio.wait_for(done.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    result = {
        "received": len(got),
        "unique": len(set(got)),
        "elapsed_ms": round((last[0] - t0) * 1000, 1) if got else None,
    }
    print(json.dumps(result), flush=True)
    await room.disconnect()
    return 0 if result["unique"] == args.count and result["received"] == args.count else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("agent", metavar="AGENT_IDENTITY")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0)
    code = asyncio.run(main(parser.parse_args()))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
