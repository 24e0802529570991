"""Benchmark contender: a LiveKit Agents worker (livekit-agents) registered
with the server's agent dispatch, the way agents are deployed:

  python agent_worker.py start --url URL --api-key K --api-secret S

Environment: LKBENCH_AGENT (agent name), LKBENCH_IDLE (pre-started idle job
processes: 0 = a cold process per job, as `lk-go worker` does).

Prints, flushed:
  LKBENCH prewarmed <pid>                 when an idle job process is ready
  LKBENCH connected <unix_us> <pid> <job> when the job's ctx.connect() returned
Job metadata "hold" keeps the job in its room until it is terminated; any
other metadata ends the job right after connecting.
"""

import os
import time

from livekit.agents import AgentServer, JobContext, JobProcess, cli


def prewarm(proc: JobProcess) -> None:
    print(f"LKBENCH prewarmed {os.getpid()}", flush=True)


server = AgentServer(
    # The default samples machine CPU; on a busy 2-core box the server would
    # then send this worker nothing. lk-go reports jobs / capacity.
    load_fnc=lambda: 0.0,
    num_idle_processes=int(os.environ.get("LKBENCH_IDLE", "0")),
    setup_fnc=prewarm,
    # The health server's production default (8081) would collide between
    # two contenders.
    port=0,
)


@server.rtc_session(agent_name=os.environ.get("LKBENCH_AGENT", "py-bench"))
async def entry(ctx: JobContext) -> None:
    await ctx.connect()
    print(
        f"LKBENCH connected {time.time_ns() // 1000} {os.getpid()} {ctx.job.id}",
        flush=True,
    )
    if ctx.job.metadata != "hold":
        ctx.shutdown(reason="bench job done")


if __name__ == "__main__":
    cli.run_app(server)
