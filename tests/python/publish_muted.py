"""Interop peer: a microphone published, then muted before the agent joins.

usage: publish_muted.py URL TOKEN AGENT_IDENTITY MUTED_SECONDS [--dtx]

Connects, publishes a 440 Hz microphone track (AudioSource, 10 ms frames),
mutes it (LocalAudioTrack.mute: livekit-server then forwards no media for
it) and prints one JSON line {"muted": "<track sid>"}. Once AGENT_IDENTITY
is in the room it keeps the track muted MUTED_SECONDS more, unmutes it,
prints {"unmuted": "<track sid>"}, feeds 2 s more and exits 0. Exits 1 with
{"error": ...} when the agent is not there within 30 s.
"""

import asyncio
import json
import math
import os
import sys
import time

from livekit import rtc

RATE = 48000
FRAME = RATE // 100


async def main(url: str, token: str, agent: str, muted_s: float) -> int:
    room = rtc.Room()
    here = asyncio.Event()

    @room.on("participant_connected")
    def on_join(p):
        if p.identity == agent:
            here.set()

    await room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=False))
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("muted-mic", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)
    phase = 0

    async def feed(seconds: float) -> None:
        nonlocal phase
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frame = rtc.AudioFrame.create(RATE, 1, FRAME)
            d = frame.data
            for i in range(FRAME):
                d[i] = int(8000 * math.sin(2 * math.pi * 440 * (phase + i) / RATE))
            phase += FRAME
            await source.capture_frame(frame)

    # Some media first, so the server has the track; then mute.
    await feed(0.5)
    track.mute()
    print(json.dumps({"muted": publication.sid}), flush=True)
    if agent in [p.identity for p in room.remote_participants.values()]:
        here.set()
    try:
        await asyncio.wait_for(here.wait(), 30)
    except asyncio.TimeoutError:
        print(json.dumps({"error": f"{agent} not in the room within 30 s"}), flush=True)
        return 1
    await asyncio.sleep(muted_s)
    track.unmute()
    print(json.dumps({"unmuted": publication.sid}), flush=True)
    await feed(2.0)
    await room.disconnect()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
