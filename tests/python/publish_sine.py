"""Interop peer: the official LiveKit Python SDK publishes a 440 Hz sine.

usage: publish_sine.py URL TOKEN SECONDS

Connects, publishes a microphone track fed from an AudioSource, prints
`published <track sid>`, keeps feeding 10 ms frames for SECONDS, disconnects.
Run by tests/tests/itest.rs with the venv `cargo xtask itest` provisions.
"""

import asyncio
import os
import math
import sys

from livekit import rtc

SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms


async def main(url: str, token: str, seconds: float) -> int:
    room = rtc.Room()
    await room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=False))
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("python-sine", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await room.local_participant.publish_track(track, options)
    print(f"published {publication.sid}", flush=True)

    phase = 0
    frames = int(seconds * 100)
    for _ in range(frames):
        frame = rtc.AudioFrame.create(SAMPLE_RATE, 1, FRAME_SAMPLES)
        samples = frame.data
        for i in range(FRAME_SAMPLES):
            samples[i] = int(8000 * math.sin(2 * math.pi * 440 * (phase + i) / SAMPLE_RATE))
        phase += FRAME_SAMPLES
        await source.capture_frame(frame)
    await room.disconnect()
    return 0


if __name__ == "__main__":
    code = asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
