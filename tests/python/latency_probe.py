"""Interop peer: measures an echo agent's mouth-to-ear latency with the
official LiveKit Python SDK.

usage: latency_probe.py URL TOKEN AGENT_IDENTITY [--bursts 5] [--timeout 30]

Publishes a microphone track (AudioSource(48000, 1, queue_size_ms=20), 10 ms
frames paced by capture_frame) that carries silence, and reads the audio
track AGENT_IDENTITY publishes (AudioStream 48 kHz mono).

Once the agent's track is flowing (50 frames received) it sends warm-up
bursts (not measured) every 1.5 s until one comes back, so the agent is
known to be subscribed to us. Then it sends --bursts bursts, each 300 ms of
440 Hz at amplitude 8000 followed by 1.2 s of silence, and measures for
each latency = t1 - t0 (time.monotonic(), same process, same clock):

  t0: just before the first tone frame is handed to capture_frame. The
      source's queue holds at most queue_size_ms (20 ms) of earlier audio at
      that moment (capture_frame returns once a frame is queued, and blocks
      while the queue is full), so the tone enters the encoder 0-30 ms after
      t0: a small constant-ish bias, the same for every agent measured.
  t1: arrival (in this process's event loop) of the first received frame
      after t0 whose RMS exceeds 1000.

A burst not echoed before the next one starts (1.5 s) is an error.
Prints one JSON line {"latencies_ms": [...], "median_ms", "p95_ms",
"queue_ms"} (p95 by nearest rank) and exits 0; prints {"error": "..."} and
exits 1 on timeout (--timeout s for the track and warm-up, plus 1.5 s per
burst).
"""

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time

import numpy as np

from livekit import rtc

RATE = 48000
FRAME = RATE // 100  # 10 ms
QUEUE_MS = 20
TONE_FRAMES = 30  # 300 ms
GAP_FRAMES = 120  # 1.2 s
FLOWING_FRAMES = 50
THRESHOLD_RMS = 1000.0


class Burst:
    def __init__(self, measured: bool) -> None:
        self.measured = measured
        self.t0: "float | None" = None
        self.t1: "float | None" = None


async def main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    room = rtc.Room()
    agent_track: asyncio.Future = loop.create_future()
    flowing = asyncio.Event()
    bursts: "list[Burst]" = []
    state = {"error": None}

    def offer(track, participant) -> None:
        if (
            participant.identity == args.agent
            and track.kind == rtc.TrackKind.KIND_AUDIO
            and not agent_track.done()
        ):
            agent_track.set_result(track)

    @room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        offer(track, participant)

    tone = np.round(
        8000 * np.sin(2 * math.pi * 440 * np.arange(TONE_FRAMES * FRAME) / RATE)
    ).astype(np.int16)
    tone_frames = [tone[i * FRAME : (i + 1) * FRAME].tobytes() for i in range(TONE_FRAMES)]
    silence = np.zeros(FRAME, dtype=np.int16).tobytes()

    async def receive() -> None:
        track = await asyncio.shield(agent_track)
        stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
        frames = 0
        try:
            async for event in stream:
                now = time.monotonic()
                frames += 1
                if frames == FLOWING_FRAMES:
                    flowing.set()
                if not bursts:
                    continue
                b = bursts[-1]
                if b.t0 is None or b.t1 is not None or now < b.t0:
                    continue
                x = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64)
                if float(np.sqrt(np.mean(x * x))) > THRESHOLD_RMS:
                    b.t1 = now
        finally:
            await stream.aclose()

    async def send(source: rtc.AudioSource) -> None:
        async def capture(pcm: bytes) -> None:
            await source.capture_frame(rtc.AudioFrame(pcm, RATE, 1, FRAME))

        async def burst(b: Burst) -> None:
            bursts.append(b)
            for i, pcm in enumerate(tone_frames):
                if i == 0:
                    b.t0 = time.monotonic()
                await capture(pcm)
            for _ in range(GAP_FRAMES):
                await capture(silence)

        while not flowing.is_set():
            await capture(silence)
        warm_deadline = time.monotonic() + args.timeout
        while True:
            b = Burst(measured=False)
            await burst(b)
            if b.t1 is not None:
                break
            if time.monotonic() > warm_deadline:
                state["error"] = f"warm-up bursts not echoed within {args.timeout} s"
                return
        for k in range(args.bursts):
            b = Burst(measured=True)
            await burst(b)
            if b.t1 is None:
                state["error"] = f"burst {k + 1} not echoed within 1.5 s"
                return

    async def run() -> None:
        await room.connect(args.url, args.token, options=rtc.RoomOptions(auto_subscribe=True))
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    offer(pub.track, p)
        source = rtc.AudioSource(RATE, 1, queue_size_ms=QUEUE_MS)
        track = rtc.LocalAudioTrack.create_audio_track("latency-probe-mic", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        receiver = asyncio.ensure_future(receive())
        try:
            await send(source)
        finally:
            receiver.cancel()

    budget = args.timeout * 2 + 1.5 * args.bursts + 5
    try:
        await asyncio.wait_for(run(), budget)
    except asyncio.TimeoutError:
        if not agent_track.done():
            state["error"] = "no audio track from the agent"
        elif not flowing.is_set():
            state["error"] = "the agent's track never delivered audio"
        else:
            state["error"] = "timed out"
    if state["error"] is not None:
        print(json.dumps({"error": state["error"]}), flush=True)
        await room.disconnect()
        return 1
    lat = [round((b.t1 - b.t0) * 1000, 1) for b in bursts if b.measured]
    ranked = sorted(lat)
    result = {
        "latencies_ms": lat,
        "median_ms": round(statistics.median(lat), 1),
        "p95_ms": ranked[max(math.ceil(0.95 * len(ranked)) - 1, 0)],
        "queue_ms": QUEUE_MS,
    }
    print(json.dumps(result), flush=True)
    await room.disconnect()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("agent", metavar="AGENT_IDENTITY")
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    if args.bursts < 1:
        parser.error("--bursts must be at least 1")
    code = asyncio.run(main(args))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
