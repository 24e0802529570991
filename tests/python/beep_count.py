"""Interop peer: counts the beeps an agent speaks, with the official LiveKit
Python SDK (the listener of "first words lost", livekit/agents#3161).

usage: beep_count.py URL TOKEN AGENT_IDENTITY SECONDS

Subscribes to the audio track AGENT_IDENTITY publishes, reads it with
AudioStream(sample_rate=48000, num_channels=1) in 10 ms frames, and counts
beeps: a beep starts with a frame of RMS > 1000 after at least 3 frames of
RMS < 300. Listens SECONDS after the track arrived. Prints one JSON line
{"beeps", "first_beep_ms"} (ms from subscription to the first beep) and
exits 0; {"error": ...} and 1 when no track came within SECONDS.
"""

import asyncio
import json
import os
import sys
import time

import numpy as np

from livekit import rtc

LOUD = 1000.0
QUIET = 300.0


async def main(url: str, token: str, agent: str, seconds: float) -> int:
    room = rtc.Room()
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    def offer(track, participant) -> None:
        if participant.identity == agent and track.kind == rtc.TrackKind.KIND_AUDIO and not got.done():
            got.set_result(track)

    @room.on("track_subscribed")
    def on_sub(track, publication, participant):
        offer(track, participant)

    await room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=True))
    for p in room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.track is not None:
                offer(pub.track, p)
    try:
        track = await asyncio.wait_for(got, seconds)
    except asyncio.TimeoutError:
        print(json.dumps({"error": f"no audio track of {agent} within {seconds} s"}), flush=True)
        return 1
    t0 = time.monotonic()
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
    beeps = 0
    quiet = 3
    first = None
    try:
        async for ev in stream:
            x = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
            rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
            if rms > LOUD and quiet >= 3:
                beeps += 1
                if first is None:
                    first = round((time.monotonic() - t0) * 1000)
                quiet = 0
            elif rms < QUIET:
                quiet += 1
            if time.monotonic() - t0 > seconds:
                break
    finally:
        await stream.aclose()
    print(json.dumps({"beeps": beeps, "first_beep_ms": first}), flush=True)
    await room.disconnect()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
