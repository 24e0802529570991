"""Benchmark contender: the official LiveKit Python SDK as a job would use it.

usage: py_sdk_peer.py URL TOKEN

Prints, one line each, flushed, with the wall clock in microseconds:
  connected <unix_us> <pid>      when Room.connect() returned
  track_subscribed <unix_us>     for each subscribed audio track
  disconnected <unix_us>         when the room reports it is disconnected
Runs until killed. It subscribes to every track but does not attach an
AudioStream: like the lk-go job it receives the media without decoding it.
"""

import asyncio
import os
import sys
import time

from livekit import rtc


def now_us() -> int:
    return time.time_ns() // 1000


async def main(url: str, token: str) -> None:
    room = rtc.Room()

    @room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            print(f"track_subscribed {now_us()}", flush=True)

    @room.on("disconnected")
    def on_disconnected(reason):
        print(f"disconnected {now_us()}", flush=True)

    await room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=True))
    print(f"connected {now_us()} {os.getpid()}", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
