"""Many-edges benchmark: what N connected edges cost the bridge. Prints JSON.

For each N in --sizes (default 1000 and 10000), against a fresh real bridge with one real
edge `test` (sysinfo plugin), N simulated edges (isthmus.testing.swarm: real hellos with
the built-in plugins' manifests, one socket each, spread over loopback source addresses;
more than --per-process edges are split over several swarm processes) connect all at once:

* connect: wall time until all N are connected, the bridge's CPU per connect (utime+stime
  from /proc), hello→welcome latency p50/p99, bytes the simulated edges received;
* memory: bridge RSS before and after, per idle edge; bridge CPU while the N sit idle;
* list: wall time to page through GET /edge/list (limit=1000, following `next`);
* proxy: sequential GET /test/sysinfo/version p50/p99 with no simulated edge (measured first)
  and with the N connected (the same raw-socket client as bench/proxy.py);
* storm: the bridge is killed (SIGKILL by default) and a new one started on the same port;
  time until every simulated edge (and the real edge) is connected again, attempts, errors
  and refusals on the way, and the new bridge's CPU per reconnect.

Targets (#12, 2 cores): 10,000 edges listed in ≤ 60 s, ≤ 5 ms bridge CPU per connect,
proxied p50 with the edges connected ≤ 2× idle.

Run: .venv/bin/python bench/edges.py [--sizes 1000,10000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from proxy import PATH, raw_latency  # noqa: E402

from isthmus.testing.stack import Stack  # noqa: E402
from isthmus.testing.swarm import SwarmProcess, cpu_seconds, list_edges, rss_bytes  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float] | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    return {"p50": round(statistics.median(values), 1), "p99": round(values[int(len(values) * 0.99)], 1),
            "max": round(values[-1], 1)}


def wait_all(swarms: list[SwarmProcess], done: Any, timeout: float) -> list[dict[str, Any]]:
    """The first status of each swarm that satisfies ``done(swarm, status)``."""
    deadline = time.monotonic() + timeout
    out = []
    for swarm in swarms:
        status = swarm.wait(lambda s, sw=swarm: bool(done(sw, s)), max(0.0, deadline - time.monotonic()))
        if status is None:
            raise TimeoutError(f"swarm not done within {timeout:g} s; last status: {swarm.last}")
        out.append(status)
    return out


def edge_rows(swarms: list[SwarmProcess]) -> list[dict[str, Any]]:
    return [row for swarm in swarms for row in swarm.edges()]


def real_edge_connected(stack: Stack) -> bool:
    with stack.http(timeout=10) as client:
        response = client.get("/edge/list", params={"name": stack.edge, "limit": 10})
        return response.status_code == 200 and stack.edge in response.json()["edges"]


def totals(statuses: list[dict[str, Any]], key: str) -> int:
    return sum(int(s[key]) for s in statuses)


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"edges": n}
    processes = max(1, math.ceil(n / args.per_process))
    with Stack(plugins=["sysinfo"], workdir=workdir) as stack:
        result["proxy_idle"] = raw_latency(stack.port, stack.admin_token, args.requests)
        bridge = stack.bridge_pid
        rss0, cpu0 = rss_bytes(bridge), cpu_seconds(bridge)
        url = f"ws://127.0.0.1:{stack.port}"
        base, extra = divmod(n, processes)
        swarms: list[SwarmProcess] = []
        try:
            offset = 0
            for i in range(processes):
                count = base + (1 if i < extra else 0)
                swarms.append(SwarmProcess(url, count, stack.edge_token, prefix="sim", offset=offset, initial=0,
                                           log=workdir / f"swarm{i}.log"))
                offset += count
            for swarm in swarms:
                swarm.wait_ready(120)
            cpu0 = cpu_seconds(bridge)
            began = time.time()
            for swarm in swarms:
                swarm.start_edges(swarm.count)
            connected = wait_all(swarms, lambda sw, s: s["connected"] >= sw.count, args.timeout)
            cpu1 = cpu_seconds(bridge)
            wall = max(s["full_at"] or s["time"] for s in connected) - began
            rows = edge_rows(swarms)
            result["connect"] = {
                "swarm_processes": processes, "wall_s": round(wall, 2),
                "bridge_cpu_ms_per_edge": round((cpu1 - cpu0) / n * 1000, 3),
                "hello_to_welcome_ms": percentiles([r["latency_ms"] for r in rows]),
                "tcp_and_upgrade_ms": percentiles([r["open_ms"] for r in rows]),
                "attempts": totals(connected, "attempts"), "refusals": totals(connected, "refusals"),
                "errors": [s["errors"] for s in connected if s["errors"]],
                "bytes_received_by_sim_edges": totals(connected, "bytes_in"),
                "bytes_per_sim_edge_max": max(r["bytes"] for r in rows),
            }
            time.sleep(2)
            cpu_idle0, idle_began = cpu_seconds(bridge), time.monotonic()
            time.sleep(5)
            idle_cpu = (cpu_seconds(bridge) - cpu_idle0) / (time.monotonic() - idle_began)
            rss1 = rss_bytes(bridge)
            result["memory"] = {"bridge_rss_before_mb": round(rss0 / 2**20, 1),
                                "bridge_rss_after_mb": round(rss1 / 2**20, 1),
                                "bytes_per_idle_edge": round((rss1 - rss0) / n),
                                "bridge_cpu_idle_percent": round(idle_cpu * 100, 1)}
            with stack.http(timeout=120) as client:
                t = time.perf_counter()
                listed, pages, paged = list_edges(client, limit=1000)
                took = time.perf_counter() - t
            sims = sum(1 for name in listed if name.startswith("sim-"))
            result["list"] = {"wall_s": round(took, 3), "pages": pages, "paged": paged, "listed_sim_edges": sims}
            if not paged:
                result["list"]["note"] = "the bridge does not page /edge/list yet: one unpaged call"
            result["proxy_loaded"] = raw_latency(stack.port, stack.admin_token, args.requests)

            # -- the reconnect storm: kill the bridge, start a new one on the same port ----------
            before = [swarm.status() for swarm in swarms]
            assert stack.bridge_proc is not None
            killed = time.time()
            stack.bridge_proc.send_signal(args.signal)
            stack.bridge_proc.wait(60)
            stack.start_bridge()
            up = time.time()
            cpu_up = cpu_seconds(stack.bridge_pid)
            # back: every edge of the swarm connected, each after a new welcome
            want = {id(sw): st["welcomes"] + sw.count for sw, st in zip(swarms, before, strict=True)}
            back = wait_all(swarms, lambda sw, s: s["connected"] >= sw.count and s["welcomes"] >= want[id(sw)],
                            args.timeout)
            cpu_back = cpu_seconds(stack.bridge_pid)
            recovered = max(s["full_at"] or s["time"] for s in back)
            deadline = time.monotonic() + args.timeout
            while not real_edge_connected(stack):
                if time.monotonic() > deadline:
                    raise TimeoutError("the real edge did not reconnect")
                time.sleep(0.1)
            real_back = time.time()
            rows = edge_rows(swarms)

            def delta(key: str) -> int:
                return totals(back, key) - totals(before, key)

            errors: dict[str, int] = {}
            for b, a in zip(before, back, strict=True):
                for kind, count in a["errors"].items():
                    errors[kind] = errors.get(kind, 0) + count - b["errors"].get(kind, 0)
            result["storm"] = {
                "signal": signal.Signals(args.signal).name,
                "bridge_restart_s": round(up - killed, 2),
                "all_sim_edges_back_s": round(recovered - killed, 2),
                "all_sim_edges_back_after_bridge_up_s": round(recovered - up, 2),
                "real_edge_back_s": round(real_back - killed, 2),
                "attempts": delta("attempts"), "refusals": delta("refusals"),
                "errors": {k: v for k, v in errors.items() if v},
                "new_bridge_cpu_ms_per_reconnect": round((cpu_back - cpu_up) / n * 1000, 3),
                "hello_to_welcome_ms": percentiles([r["latency_ms"] for r in rows]),
            }
        finally:
            for swarm in swarms:
                swarm.close()
    idle, loaded = result["proxy_idle"]["p50_ms"], result["proxy_loaded"]["p50_ms"]
    result["targets"] = {
        "cpu_ms_per_connect_le_5": result["connect"]["bridge_cpu_ms_per_edge"] <= 5,
        "proxied_p50_loaded_vs_idle": round(loaded / idle, 2),
        "proxied_p50_le_2x_idle": loaded <= 2 * idle,
    }
    if n >= 10_000:
        result["targets"]["list_le_60_s"] = result["list"]["wall_s"] <= 60
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated edge counts")
    parser.add_argument("--per-process", type=int, default=8000,
                        help="most simulated edges per swarm process (one socket each; fd limit)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential proxied GETs per latency figure")
    parser.add_argument("--signal", type=lambda s: signal.Signals["SIG" + s.upper().removeprefix("SIG")],
                        default=signal.SIGKILL, help="how the bridge is stopped for the storm (KILL or TERM)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds any one phase may take")
    parser.add_argument("--quick", action="store_true", help="1,000 edges, 300 requests (a smoke test)")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        args.requests = 300
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                       "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0]},
                           "path": PATH, "runs": []}
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-edges-") as tmp:
        for n in sizes:
            workdir = Path(tmp) / str(n)
            try:
                out["runs"].append(run_size(n, args, workdir))
            except BaseException:
                for log in sorted(workdir.glob("*.log")):
                    print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
                raise
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPError as exc:
        sys.exit(f"bench/edges.py: {exc}")
