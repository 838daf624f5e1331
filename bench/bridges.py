"""Several bridges: what a relayed call costs, and events through Redis. Prints JSON.

Two real bridges share a real Redis (isthmus.testing.bridges.Bridges); one real edge `test`
(sysinfo) is held by bridge A. Measured in the same run:

* proxied GET /test/sysinfo/version on A (the edge's own bridge: the baseline) and on B
  (relayed B → A over HTTP with the caller's token), sequential on one keep-alive
  connection with bench/proxy.py's raw client: p50/p99;
* the same on a single bridge without Redis (``Stack``), so the cost of --redis itself shows;
* notifications: the edge publishes N events (probe plugin ``broadcast``); time until a client
  of B has received them all through the Redis Stream, against a client of a bridge alone.

Run: .venv/bin/python bench/bridges.py [--requests 3000] [--events 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from proxy import raw_latency  # noqa: E402

from isthmus.sdk.events_client import parse_sse  # noqa: E402
from isthmus.testing.bridges import Bridges  # noqa: E402
from isthmus.testing.stack import Stack, poll_for  # noqa: E402

PLUGINS = ["sysinfo", "testplugins:PluginProbe"]
ENV = {"PYTHONPATH": os.pathsep.join([str(HERE.parent / "tests" / "support"), os.environ.get("PYTHONPATH", "")])}


def event_rate(url: str, token: str, n: int, trigger: Any) -> dict[str, float]:
    """Seconds from asking the edge for ``n`` notifications until a client of ``url`` has them."""
    got = 0
    done = threading.Event()
    connected = threading.Event()

    def follow() -> None:
        nonlocal got
        with httpx.stream("GET", f"{url}/events?topic=flood", headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(10, read=120)) as resp:
            connected.set()
            for _eid, kind, _data in parse_sse(resp.iter_lines()):
                if kind is None:
                    got += 1
                if got >= n:
                    done.set()
                    return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    connected.wait(10)
    time.sleep(0.3)
    start = time.perf_counter()
    trigger(n)
    done.wait(120)
    elapsed = time.perf_counter() - start
    return {"events": got, "seconds": round(elapsed, 3), "per_second": round(got / elapsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "path": "/test/sysinfo/version"}
    with Stack(plugins=PLUGINS, env=ENV) as alone:
        out["alone"] = raw_latency(alone.port, alone.admin_token, args.requests)
        with alone.http(timeout=120) as http:
            out["events_alone"] = event_rate(alone.url, alone.admin_token, args.events,
                                             lambda n: http.post("/test/probe/broadcast", params={"n": n}))
    with Bridges(2, plugins=PLUGINS, env=ENV) as b:
        poll_for(lambda: b.http(1).get("/test/sysinfo/version").status_code == 200, 15, what="relay ready")
        token = b.stacks[0].admin_token
        out["holder"] = raw_latency(b.stacks[0].port, token, args.requests)
        out["relayed"] = raw_latency(b.stacks[1].port, token, args.requests)
        with b.http(0, timeout=120) as http:
            out["events_via_redis"] = event_rate(b.urls[1], token, args.events,
                                                 lambda n: http.post("/test/probe/broadcast", params={"n": n}))
    out["relay_added_p50_ms"] = round(out["relayed"]["p50_ms"] - out["holder"]["p50_ms"], 3)
    out["redis_vs_alone_p50"] = round(out["holder"]["p50_ms"] / out["alone"]["p50_ms"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
