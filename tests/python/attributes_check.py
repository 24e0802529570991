"""Interop peer: waits, with the official LiveKit Python SDK, until an agent
participant carries an attribute.

usage: attributes_check.py URL TOKEN AGENT_IDENTITY KEY VALUE TIMEOUT_S

Connects and waits until the participant AGENT_IDENTITY has attribute
KEY == VALUE: checked at once after connecting (it may already be set, then
it arrives with the room as joined), when the participant connects, and on
every participant_attributes_changed. Prints one JSON line
{"seen": true, "after_ms": ms from connect() returning to the sighting,
"seen_unix_ms": the sighting's wall-clock time} (after_ms 0 when already set) and exits 0; prints {"seen": false, "error": "..."}
and exits 1 after TIMEOUT_S (connecting included), naming the agent's attributes at that time.
"""

import asyncio
import json
import os
import sys
import time

from livekit import rtc


async def main(url: str, token: str, agent: str, key: str, value: str, timeout: float) -> int:
    room = rtc.Room()
    seen = asyncio.Event()
    t_seen = [0.0]
    t_seen_unix = [0.0]

    def check(participant) -> None:
        if seen.is_set() or participant is None or participant.identity != agent:
            return
        if participant.attributes.get(key) == value:
            t_seen[0] = time.monotonic()
            t_seen_unix[0] = time.time()
            seen.set()

    @room.on("participant_connected")
    def on_participant_connected(participant):
        check(participant)

    @room.on("participant_attributes_changed")
    def on_attributes_changed(changed, participant):
        check(participant)

    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(room.connect(url, token), timeout)
    except asyncio.TimeoutError:
        print(json.dumps({"seen": False, "error": f"could not connect within {timeout} s"}), flush=True)
        return 1
    t_connected = time.monotonic()
    check(room.remote_participants.get(agent))
    if seen.is_set():
        t_seen[0] = t_connected
    try:
        await asyncio.wait_for(seen.wait(), max(deadline - time.monotonic(), 0.01))
    except asyncio.TimeoutError:
        p = room.remote_participants.get(agent)
        attrs = p.attributes if p is not None else None
        print(
            json.dumps(
                {
                    "seen": False,
                    "error": f"{agent} without {key}={value} after {timeout} s",
                    "attributes": attrs,
                }
            ),
            flush=True,
        )
        await room.disconnect()
        return 1
    print(json.dumps({"seen": True, "after_ms": round((t_seen[0] - t_connected) * 1000, 1),
                      "seen_unix_ms": round(t_seen_unix[0] * 1000, 1)}), flush=True)
    await room.disconnect()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 7:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    code = asyncio.run(
        main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6]))
    )
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
