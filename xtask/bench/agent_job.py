"""Benchmark contender: a minimal LiveKit Agents job (livekit-agents), run
the way its CLI runs a one-off job in a room:

  python agent_job.py connect --room ROOM   (LIVEKIT_URL/KEY/SECRET in env)

The entrypoint runs in the job process the worker spawns. It prints, flushed:
  LKBENCH connected <unix_us> <pid>     when ctx.connect() returned
  LKBENCH track_subscribed <unix_us>    for each subscribed audio track
and then stays in the room until killed.
"""

import asyncio
import os
import time

from livekit import rtc
from livekit.agents import JobContext, WorkerOptions, cli


def now_us() -> int:
    return time.time_ns() // 1000


async def entrypoint(ctx: JobContext) -> None:
    @ctx.room.on("track_subscribed")
    def on_track_subscribed(track, publication, participant):
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            print(f"LKBENCH track_subscribed {now_us()}", flush=True)

    await ctx.connect()
    print(f"LKBENCH connected {now_us()} {os.getpid()}", flush=True)
    while True:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
