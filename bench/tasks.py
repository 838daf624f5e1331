"""Task throughput through bridge and edge, beside the raw rate of a plain process pool. Prints JSON.

For each batch size: submit time, wait time and tasks/s end to end for no-op Python
functions (``operator:pos``) and no-op executables (``/bin/true``); the baseline runs the
same no-ops in a plain ``ProcessPoolExecutor`` of the same size in the same run.

Run: .venv/bin/python bench/tasks.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from isthmus.testing.stack import Stack

BATCHES = [1, 64, 256, 1024, 4096, 16384]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batches up to 4096 only")
    args = parser.parse_args()
    batches = [b for b in BATCHES if not args.quick or b <= 4096]
    workers = os.cpu_count() or 1
    result: dict = {"machine": {"cpus": workers}, "raw": raw_rates(workers), "functions": [], "executables": []}
    with Stack(plugins=["tasks"]) as stack:
        client = stack.client().get_edge_client(stack.edge).get_plugin("tasks")
        measure(client, [{"function": "operator:pos", "args": [1]}] * 256)  # warm up
        for n in batches:
            result["functions"].append(measure(client, [{"function": "operator:pos", "args": [i]} for i in range(n)]))
        for n in batches:
            result["executables"].append(measure(client, [{"executable": "/bin/true"}] * n))
        client.close()
    f4096 = next(r for r in result["functions"] if r["n"] == 4096)
    biggest_exe = result["executables"][-1]
    result["targets"] = {
        "functions_at_4096_per_s": f4096["tasks_per_s"], "functions_target": 20000,
        "executables_vs_raw_spawn": round(biggest_exe["tasks_per_s"] / result["raw"]["true_spawns_per_s"], 2),
        "executables_target": 0.7,
        "functions_rate_by_batch": [r["tasks_per_s"] for r in result["functions"]],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
