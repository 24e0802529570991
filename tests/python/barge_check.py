"""Interop peer: times a tone an agent plays (e.g. until a barge-in stops
it), with the official LiveKit Python SDK.

usage: barge_check.py URL TOKEN AGENT_IDENTITY TIMEOUT_S

Subscribes to the audio track AGENT_IDENTITY publishes and reads it with
AudioStream(sample_rate=48000, num_channels=1), 10 ms frames. Onset is the
first frame with RMS > 1000; stop is the first frame after onset that starts
a run of 3 consecutive frames with RMS < 300. Times are time.time() at the
frame's arrival in this process. Prints one JSON line {"onset_unix_ms",
"stop_unix_ms", "tone_ms": stop - onset} and exits 0; prints
{"error": "..."} and exits 1 when no onset and stop were seen within
TIMEOUT_S (connecting included).
"""

import asyncio
import json
import os
import sys
import time

import numpy as np

from livekit import rtc

RATE = 48000
ONSET_RMS = 1000.0
QUIET_RMS = 300.0
QUIET_FRAMES = 3


async def main(url: str, token: str, agent: str, timeout: float) -> int:
    room = rtc.Room()
    agent_track: asyncio.Future = asyncio.get_running_loop().create_future()
    state = {"onset": None, "stop": None}

    def offer(track, participant) -> None:
        if (
            participant.identity == agent
            and track.kind == rtc.TrackKind.KIND_AUDIO
            and not agent_track.done()
        ):
            agent_track.set_result(track)

    @room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        offer(track, participant)

    async def run() -> None:
        await room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=True))
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    offer(pub.track, p)
        track = await asyncio.shield(agent_track)
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        quiet_run = 0
        quiet_start = 0.0
        try:
            async for event in stream:
                now_ms = time.time() * 1000
                x = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
                rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
                if state["onset"] is None:
                    if rms > ONSET_RMS:
                        state["onset"] = now_ms
                    continue
                if rms < QUIET_RMS:
                    if quiet_run == 0:
                        quiet_start = now_ms
                    quiet_run += 1
                    if quiet_run >= QUIET_FRAMES:
                        state["stop"] = quiet_start
                        return
                else:
                    quiet_run = 0
        finally:
            await stream.aclose()

    try:
        await asyncio.wait_for(run(), timeout)
    except asyncio.TimeoutError:
        if not agent_track.done():
            what = f"no audio track from {agent}"
        elif state["onset"] is None:
            what = "no tone onset"
        else:
            what = "the tone did not stop"
        print(json.dumps({"error": f"{what} within {timeout} s"}), flush=True)
        await room.disconnect()
        return 1
    if state["stop"] is None:
        print(json.dumps({"error": "the agent's audio track ended before the tone stopped"}), flush=True)
        await room.disconnect()
        return 1
    result = {
        "onset_unix_ms": round(state["onset"], 1),
        "stop_unix_ms": round(state["stop"], 1),
        "tone_ms": round(state["stop"] - state["onset"], 1),
    }
    print(json.dumps(result), flush=True)
    await room.disconnect()
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    code = asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
