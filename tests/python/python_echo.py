"""Benchmark contender: an echo agent written with the official LiveKit Python SDK.

usage: python_echo.py URL TOKEN [--rate 48000]

Connects, publishes a microphone track "python-echo" fed from an
AudioSource(rate, 1) and prints `echo ready`. It subscribes to the first
remote microphone track, reads it with AudioStream(sample_rate=rate,
num_channels=1) and captures every frame into its own source, as the SDK
documentation shows: no extra buffering, no tricks. When that track goes
away it echoes the next remote microphone track.

Runs until SIGTERM/SIGINT, until the room is left, or until the room has had
no remote participant for 5 s (counted from the last one leaving; before
anyone joined it waits). lk-go's echo plugin is benchmarked against this.
"""

import argparse
import asyncio
import os
import signal
import sys
import time

from livekit import rtc

EMPTY_ROOM_EXIT_S = 5.0


async def main(url: str, token: str, rate: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    room = rtc.Room()
    source = rtc.AudioSource(rate, 1)
    echo_task: "asyncio.Task | None" = None
    echo_sid: "str | None" = None

    async def echo(track: rtc.Track, sid: str) -> None:
        nonlocal echo_task, echo_sid
        print(f"echoing {sid}", file=sys.stderr, flush=True)
        stream = rtc.AudioStream(track, sample_rate=rate, num_channels=1)
        try:
            async for event in stream:
                await source.capture_frame(event.frame)
        finally:
            await stream.aclose()
            if echo_sid == sid:
                echo_task = None
                echo_sid = None
            print(f"stopped echoing {sid}", file=sys.stderr, flush=True)

    def maybe_echo(track: rtc.Track, publication: rtc.RemoteTrackPublication) -> None:
        nonlocal echo_task, echo_sid
        if echo_task is not None:
            return
        if track.kind != rtc.TrackKind.KIND_AUDIO:
            return
        if publication.source != rtc.TrackSource.SOURCE_MICROPHONE:
            return
        echo_sid = publication.sid
        echo_task = asyncio.ensure_future(echo(track, publication.sid))

    @room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        maybe_echo(track, publication)

    @room.on("track_unsubscribed")
    def on_track_unsubscribed(track, publication, participant):
        nonlocal echo_task, echo_sid
        if echo_task is not None and publication.sid == echo_sid:
            echo_task.cancel()
            echo_task = None
            echo_sid = None
            # Another participant's microphone may still be there.
            for p in room.remote_participants.values():
                for pub in p.track_publications.values():
                    if pub.track is not None and pub.sid != publication.sid:
                        maybe_echo(pub.track, pub)

    @room.on("disconnected")
    def on_disconnected(*_args):
        stop.set()

    await room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=True))
    track = rtc.LocalAudioTrack.create_audio_track("python-echo", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await room.local_participant.publish_track(track, options)
    print("echo ready", flush=True)

    # Tracks subscribed before the handler saw them (joined a busy room).
    for p in room.remote_participants.values():
        for pub in p.track_publications.values():
            if pub.track is not None:
                maybe_echo(pub.track, pub)

    seen_someone = False
    empty_since: "float | None" = None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
        if room.remote_participants:
            seen_someone = True
            empty_since = None
        elif seen_someone:
            if empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since >= EMPTY_ROOM_EXIT_S:
                print("room empty for 5 s, leaving", file=sys.stderr, flush=True)
                break

    if echo_task is not None:
        echo_task.cancel()
    await room.disconnect()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--rate", type=int, default=48000)
    args = parser.parse_args()
    code = asyncio.run(main(args.url, args.token, args.rate))
    # See subscribe_count.py: skip the SDK's native teardown at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
