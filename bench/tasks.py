"""Task throughput through bridge and edge, beside the raw rate of a plain process pool. Prints JSON.

For each batch size: submit time, wait time and tasks/s end to end for no-op Python
functions (``operator:pos``) and no-op executables (``/bin/true``); the baseline runs the
same no-ops in a plain ``ProcessPoolExecutor`` of the same size in the same run.

Per-call cost against session history (#12): the rate of one-task submit-and-wait rounds
(submit one no-op function, wait for it, repeat) in a fresh session, then in a session that
already ran 16,384 tasks alternating slice by slice with a second fresh session (so load
from other processes hits both alike). ``history.ratio`` is the history session's rate over
the fresh one's beside it: 1.0 when no per-call cost grows with what the session holds.

Run: .venv/bin/python bench/tasks.py [--quick] [--history-only] [--one-task-seconds S]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from isthmus.testing.stack import Stack

BATCHES = [1, 64, 256, 1024, 4096, 16384]
HISTORY = 16_384  # tasks the busy session runs before its one-task rate is measured
ONE_TASK = {"function": "operator:pos", "args": [1]}


def spawn_true(n: int) -> int:
    for _ in range(n):
        subprocess.run(["/bin/true"], check=False)
    return n


def raw_rates(workers: int) -> dict[str, float]:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(operator.pos, range(1000), chunksize=100))  # warm up
        n = 200_000
        start = time.perf_counter()
        list(pool.map(operator.pos, range(n), chunksize=n // (workers * 8)))
        functions = n / (time.perf_counter() - start)
        m = 2000
        start = time.perf_counter()
        list(pool.map(spawn_true, [m // (workers * 4)] * (workers * 4)))
        spawns = m / (time.perf_counter() - start)
    return {"functions_per_s": round(functions), "true_spawns_per_s": round(spawns)}


def measure(client, tasks: list[dict]) -> dict[str, float]:
    start = time.perf_counter()
    uids = client.submit_tasks(tasks)
    submitted = time.perf_counter()
    states = client.wait_tasks(uids, timeout=600)
    done = time.perf_counter()
    bad = sum(1 for s in states.values() if s != "DONE")
    if bad:
        raise RuntimeError(f"{bad} tasks did not finish DONE")
    return {"n": len(tasks), "submit_s": round(submitted - start, 4), "wait_s": round(done - submitted, 4),
            "tasks_per_s": round(len(tasks) / (done - start))}


def one_task_rounds(client, seconds: float) -> tuple[int, float]:
    """Rounds of submit one task + wait for it, for ``seconds``: (rounds, elapsed seconds)."""
    rounds = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        uid = client.submit_tasks([ONE_TASK])[0]
        if client.wait_tasks([uid], timeout=60)[uid] != "DONE":
            raise RuntimeError(f"one-task round: {uid} did not finish DONE")
        rounds += 1
    return rounds, time.perf_counter() - start


def one_task_rates(clients: dict[str, object], seconds: float, slices: int = 10) -> dict[str, dict[str, float]]:
    """One-task rate of each client, in ``slices`` alternating slices (load that drifts hits all alike).

    Per client: the median and the spread of the slices' rates, and the overall rate.
    """
    for client in clients.values():  # warm up each session's path
        one_task_rounds(client, 0.2)
    slices_of: dict[str, list[float]] = {name: [] for name in clients}
    totals = {name: [0, 0.0] for name in clients}
    for _ in range(slices):
        for name, client in clients.items():
            rounds, elapsed = one_task_rounds(client, seconds / slices)
            slices_of[name].append(rounds / elapsed)
            totals[name][0] += rounds
            totals[name][1] += elapsed
    return {name: {"per_s": round(statistics.median(rates), 1), "min": round(min(rates), 1),
                   "max": round(max(rates), 1), "rounds": totals[name][0],
                   "overall_per_s": round(totals[name][0] / totals[name][1], 1)}
            for name, rates in slices_of.items()}


def history_rates(stack: Stack, seconds: float) -> dict:
    """One-task submit-and-wait rate: a fresh session, then a session after 16,384 tasks beside a fresh one.

    ``fresh`` is measured before any history exists; ``after_history`` and ``fresh_beside``
    alternate slice by slice in the same seconds, so ``ratio`` (after_history / fresh_beside)
    compares them under the same load; ``ratio_to_first_fresh`` uses the first measurement.
    """
    edge = stack.client().get_edge_client(stack.edge)
    first = edge.get_plugin("tasks")
    result: dict = {"tasks_before": HISTORY, "seconds_each": seconds,
                    "fresh": one_task_rates({"fresh": first}, seconds)["fresh"]}
    busy = edge.get_plugin("tasks")
    start = time.perf_counter()
    uids = busy.submit_tasks([{"function": "operator:pos", "args": [i]} for i in range(HISTORY)])
    states = busy.wait_tasks(uids, timeout=600)
    if any(s != "DONE" for s in states.values()):
        raise RuntimeError("history tasks did not all finish DONE")
    result["history_build_s"] = round(time.perf_counter() - start, 2)
    beside = edge.get_plugin("tasks")
    result.update(one_task_rates({"after_history": busy, "fresh_beside": beside}, seconds))
    result["ratio"] = round(result["after_history"]["per_s"] / result["fresh_beside"]["per_s"], 2)
    result["ratio_to_first_fresh"] = round(result["after_history"]["per_s"] / result["fresh"]["per_s"], 2)
    for client in (first, busy, beside):
        client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches up to 4096 only")
    parser.add_argument("--history-only", action="store_true",
                        help="only the one-task rate against session history (#12)")
    parser.add_argument("--one-task-seconds", type=float, default=5.0,
                        help="how long each one-task rate is measured (default 5)")
    args = parser.parse_args()
    batches = [b for b in BATCHES if not args.quick or b <= 4096]
    workers = os.cpu_count() or 1
    if args.history_only:
        with Stack(plugins=["tasks"]) as stack:
            print(json.dumps({"machine": {"cpus": workers}, "history": history_rates(stack, args.one_task_seconds)},
                             indent=2))
        return
    result: dict = {"machine": {"cpus": workers}, "raw": raw_rates(workers), "functions": [], "executables": []}
    with Stack(plugins=["tasks"]) as stack:
        client = stack.client().get_edge_client(stack.edge).get_plugin("tasks")
        measure(client, [{"function": "operator:pos", "args": [1]}] * 256)  # warm up
        for n in batches:
            result["functions"].append(measure(client, [{"function": "operator:pos", "args": [i]} for i in range(n)]))
        for n in batches:
            result["executables"].append(measure(client, [{"executable": "/bin/true"}] * n))
        client.close()
        result["history"] = history_rates(stack, args.one_task_seconds)
    f4096 = next(r for r in result["functions"] if r["n"] == 4096)
    biggest_exe = result["executables"][-1]
    result["targets"] = {
        "functions_at_4096_per_s": f4096["tasks_per_s"], "functions_target": 20000,
        "executables_vs_raw_spawn": round(biggest_exe["tasks_per_s"] / result["raw"]["true_spawns_per_s"], 2),
        "executables_target": 0.7,
        "functions_rate_by_batch": [r["tasks_per_s"] for r in result["functions"]],
        "one_task_after_history_vs_fresh": result["history"]["ratio"], "one_task_target": "1.0 within noise",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
