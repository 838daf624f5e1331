"""Tasks through a pool of pilots, beside the same tasks on the edge's own tasks plugin. Prints JSON.

One bridge and one edge (psij, tasks, pilots) in the same run; the pool has two pilots of one
core each (local PSI/J executor by default, so it runs anywhere; ``--slurm`` uses the
edge's Slurm), the edge's tasks plugin two workers, so both sides have two task slots.

* ``first_task_s``: from ``create_pool`` to the first task RUNNING in a pilot (a pilot job
  submitted, its child edge started and enrolled, a session opened, the task handed over).
* per batch size (1, 256, 4096): tasks/s end to end (submit, then wait for all) for no-op
  Python functions (``operator:pos``), through the pool and on the local backend. Batch 1
  is measured as repeated one-task submit-and-wait rounds.

``--dask``: each pilot runs its tasks on its own Dask cluster (one worker of one thread,
mutual TLS; docs/pilots.md), so the pool's figures include Dask's hop.

Run: .venv/bin/python bench/pilots.py [--slurm] [--dask] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import isthmus
from isthmus.plugins.pilots.client import PilotsClient
from isthmus.plugins.tasks.client import TasksClient
from isthmus.testing.stack import Stack, poll_for

BATCHES = [1, 256, 4096]
TASK = {"function": "operator:pos", "args": [1]}


def rate(client: TasksClient, count: int, rounds: int, **submit: Any) -> float:
    """Tasks per second: ``count`` tasks submitted at once and waited for (batch 1: ``rounds`` rounds)."""
    if count == 1:
        start = time.perf_counter()
        for _ in range(rounds):
            client.wait_tasks(client.submit_tasks([TASK], **submit), timeout=60)
        return rounds / (time.perf_counter() - start)
    start = time.perf_counter()
    uids = client.submit_tasks([TASK] * count, **submit)
    states = client.wait_tasks(uids, timeout=600)
    elapsed = time.perf_counter() - start
    if set(states.values()) != {"DONE"}:
        raise RuntimeError(f"not every task finished: {sorted(set(states.values()))}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slurm", action="store_true", help="pilots as Slurm jobs (needs make slurm-up)")
    parser.add_argument("--rounds", type=int, default=50, help="one-task rounds for batch 1")
    parser.add_argument("--states-only", action="store_true", help="pilots: collect_output false")
    parser.add_argument("--dask", action="store_true", help="pilots run their tasks on their own Dask cluster")
    args = parser.parse_args()
    config: dict[str, Any] = {"scheduler": "slurm" if args.slurm else "none",
                              "plugins": {"tasks": {"workers": 2},
                                          # the pilots run this checkout's isthmus, not an installed one
                                          "psij": {"allowed_directories": ["~", "/tmp"],
                                                   "env_passthrough": ["PYTHONPATH"]},
                                          "pilots": {"tick": 0.1, "prefetch": 2048,
                                                     "collect_output": not args.states_only}}}
    env = {"SLURM_CONF": os.environ["SLURM_CONF"]} if args.slurm and "SLURM_CONF" in os.environ else {}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(isthmus.__file__).resolve().parents[1]),
                                                    os.environ.get("PYTHONPATH", "")) if p)
    result: dict[str, Any] = {"pilots": 2, "cores_per_pilot": 1, "local_workers": 2,
                              "executor": "slurm" if args.slurm else "local",
                              "collect_output": not args.states_only, "dask": args.dask, "batches": {}}
    with Stack(plugins=["psij", "tasks", "pilots"], config=config, env=env) as stack:
        edge = stack.client().get_edge_client("test")
        pilots = edge.get_plugin("pilots", PilotsClient)
        local = edge.get_plugin("tasks", TasksClient)

        start = time.perf_counter()
        pilots.create_pool("bench", min_size=2, max_size=2, cores=1, walltime=3600, dask=args.dask)
        try:
            run(result, pilots, local, start, args.rounds)
        finally:
            # pilot jobs outlive their edge (by design): end them here, and wait until they have
            # (the pool is forgotten once its jobs ended), or closing the stack leaves them running
            pilots.cancel_pool("bench")
            poll_for(lambda: all(p["name"] != "bench" for p in pilots.list_pools()), 120, 0.2,
                     what="the pool's pilot jobs ended")
    print(json.dumps(result, indent=2))


def run(result: dict[str, Any], pilots: PilotsClient, local: TasksClient, start: float, rounds: int) -> None:
    """The measures, with the pool just created at ``start``."""
    (first,) = pilots.submit_tasks([{"executable": "/bin/sleep", "arguments": ["1"]}], pool="bench")
    poll_for(lambda: pilots.task_states([first])[first] != "PENDING", 300, 0.01, what="the first task running")
    result["first_task_s"] = round(time.perf_counter() - start, 2)
    poll_for(lambda: sum(p["state"] == "READY" for p in pilots.get_pool("bench")["pilots"]) == 2, 300, 0.1,
             what="both pilots ready")
    pilots.wait_tasks([first], timeout=60)
    rate(pilots, 64, 1, pool="bench")  # warm both sides up
    rate(local, 64, 1)
    for count in BATCHES:
        through_pool = rate(pilots, count, rounds, pool="bench")
        on_edge = rate(local, count, rounds)
        result["batches"][str(count)] = {"pool_tasks_per_s": round(through_pool, 1),
                                         "local_tasks_per_s": round(on_edge, 1),
                                         "pool_over_local": round(through_pool / on_edge, 3)}


if __name__ == "__main__":
    main()
