"""Interop peer: checks an echo agent with the official LiveKit Python SDK.

usage: echo_check.py URL TOKEN AGENT_IDENTITY SECONDS
                     [--freq 440] [--amplitude 8000] [--rate 48000]
                     [--expect-silence] [--measure-seconds 2]

Publishes a microphone track for the whole run: an AudioSource(--rate, 1)
fed 10 ms frames of a sine at --freq Hz, peak --amplitude, paced by
capture_frame. Subscribes to the audio track AGENT_IDENTITY publishes and
reads it with AudioStream(sample_rate=48000, num_channels=1).

Once the agent's track delivers its first non-silent frame (RMS > 100) it
skips 0.5 s of warm-up, then measures 2 s (--measure-seconds) of
received audio: the frequency
by zero crossings (after removing DC) and the RMS level. Prints one JSON
line {"freq_hz", "rms", "sent_rms", "level_db", "frames"} where
level_db = 20*log10(rms/sent_rms) and frames is the number of received
frames measured; exits 0.

--expect-silence: the agent is expected NOT to echo. The 2 s window then
starts 0.5 s after the agent's first frame of any content; the JSON line
gains "silent": rms < 300, and the exit code is 0 only if silent.

Exits 1 with {"error": "..."} when nothing was measured within SECONDS
(the whole run, connecting included).
"""

import argparse
import asyncio
import json
import math
import os
import sys
import time

import numpy as np

from livekit import rtc

RECV_RATE = 48000
NON_SILENT_RMS = 100.0
SILENT_RMS = 300.0
WARMUP_S = 0.5
MEASURE_S = 2.0


def frame_samples(frame: rtc.AudioFrame) -> np.ndarray:
    return np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)


def rms_of(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def zero_crossing_freq(x: np.ndarray, rate: int) -> float:
    """Frequency from the number and span of rising zero crossings."""
    x = x - np.mean(x)
    rising = np.nonzero((x[:-1] < 0) & (x[1:] >= 0))[0]
    if rising.size < 2:
        return 0.0
    # Interpolate each crossing between its two samples for sub-sample precision.
    a = x[rising]
    b = x[rising + 1]
    exact = rising + a / (a - b)
    return float((exact.size - 1) * rate / (exact[-1] - exact[0]))


async def publish_tone(room: rtc.Room, rate: int, freq: float, amplitude: int) -> None:
    source = rtc.AudioSource(rate, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("echo-check-mic", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, options)
    n = rate // 100
    step = 2 * math.pi * freq / rate
    k = np.arange(n)
    phase = 0.0
    while True:
        samples = amplitude * np.sin(phase + step * k)
        phase = math.fmod(phase + step * n, 2 * math.pi)
        pcm = np.round(samples).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), rate, 1, n))


async def measure(track: rtc.Track, expect_silence: bool, seconds: float) -> dict:
    stream = rtc.AudioStream(track, sample_rate=RECV_RATE, num_channels=1)
    started = False
    skipped = 0
    chunks = []
    collected = 0
    frames = 0
    warmup = int(WARMUP_S * RECV_RATE)
    wanted = int(seconds * RECV_RATE)
    try:
        async for event in stream:
            x = frame_samples(event.frame)
            if not started:
                if expect_silence or rms_of(x) > NON_SILENT_RMS:
                    started = True
                else:
                    continue
            if skipped < warmup:
                skipped += x.size
                continue
            chunks.append(x)
            collected += x.size
            frames += 1
            if collected >= wanted:
                break
    finally:
        await stream.aclose()
    x = np.concatenate(chunks)[:wanted] if chunks else np.zeros(0)
    return {"freq_hz": zero_crossing_freq(x, RECV_RATE), "rms": rms_of(x), "frames": frames}


async def main(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.seconds
    room = rtc.Room()
    loop = asyncio.get_running_loop()
    agent_track: asyncio.Future = loop.create_future()

    def offer(track, participant) -> None:
        if (
            args.agent in ("*", participant.identity)
            and track.kind == rtc.TrackKind.KIND_AUDIO
            and not agent_track.done()
        ):
            agent_track.set_result(track)

    @room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        offer(track, participant)

    async def run() -> dict:
        await room.connect(args.url, args.token, options=rtc.RoomOptions(auto_subscribe=True))
        for p in room.remote_participants.values():
            for pub in p.track_publications.values():
                if pub.track is not None:
                    offer(pub.track, p)
        publisher = asyncio.ensure_future(publish_tone(room, args.rate, args.freq, args.amplitude))
        try:
            track = await asyncio.shield(agent_track)
            return await measure(track, args.expect_silence, args.measure_seconds)
        finally:
            publisher.cancel()

    try:
        result = await asyncio.wait_for(run(), max(deadline - time.monotonic(), 0.1))
    except asyncio.TimeoutError:
        what = f"audio track from {args.agent}" if not agent_track.done() else "2 s of echoed audio"
        print(json.dumps({"error": f"no {what} within {args.seconds} s"}), flush=True)
        await room.disconnect()
        return 1
    sent_rms = args.amplitude / math.sqrt(2)
    result["sent_rms"] = sent_rms
    result["level_db"] = (
        20 * math.log10(result["rms"] / sent_rms) if result["rms"] > 0 else None
    )
    code = 0
    if args.expect_silence:
        result["silent"] = result["rms"] < SILENT_RMS
        code = 0 if result["silent"] else 1
    print(json.dumps(result), flush=True)
    await room.disconnect()
    return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("agent", metavar="AGENT_IDENTITY", help='"*": any participant\'s audio track')
    parser.add_argument("seconds", type=float, metavar="SECONDS")
    parser.add_argument("--freq", type=float, default=440.0)
    parser.add_argument("--amplitude", type=int, default=8000)
    parser.add_argument("--rate", type=int, default=48000)
    parser.add_argument("--expect-silence", action="store_true")
    parser.add_argument("--measure-seconds", type=float, default=MEASURE_S)
    code = asyncio.run(main(parser.parse_args()))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
