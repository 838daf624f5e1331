"""Proxy and event-stream benchmark. Prints JSON.

* latency: sequential GET /test/sysinfo/version through bridge → edge → plugin, p50/p99,
  beside the same route on a bare single-worker FastAPI app measured in the same run;
* throughput: wrk at 32 and 128 keep-alive connections, both targets;
* events: delivery rate of edge notifications to 1 and 10 SSE clients;
* memory: bridge RSS before and after flooding a client that never reads;
* accountability: the same proxied GET and an audited POST with metrics, audit log and rate
  limits on (the defaults) next to all three off, alternating runs of two stacks (issue #13).

Run: .venv/bin/python bench/proxy.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from isthmus.testing.stack import Stack, free_port, poll_for  # noqa: E402

PATH = "/test/sysinfo/version"


def raw_latency(port: int, token: str | None, n: int) -> dict[str, float]:
    """Sequential requests on one keep-alive connection with a minimal client (~µs overhead)."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    buf = b""
    for i in range(n + 200):
        start = time.perf_counter()
        sock.sendall(request)
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"content-length: (\d+)", buf[:head_end].lower())
                length = int(m.group(1)) if m else 0
                if len(buf) >= head_end + 4 + length:
                    status = buf[9:12]
                    buf = buf[head_end + 4 + length:]
                    break
            buf += sock.recv(65536)
        if status != b"200":
            raise RuntimeError(f"status {status!r}")
        if i >= 200:
            times.append((time.perf_counter() - start) * 1000)
    sock.close()
    times.sort()
    return {"p50_ms": round(statistics.median(times), 3), "p99_ms": round(times[int(len(times) * 0.99)], 3),
            "mean_ms": round(statistics.fmean(times), 3)}


def wrk(url: str, token: str | None, connections: int, seconds: int, script: str | None = None) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or non2xx:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(m.group(1))


def sse_reader(port: int, token: str, want: int, results: list, ready: threading.Event) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET /events?topic=flood HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    count = gaps = 0
    first = last = None
    ready_seen = False
    marker = b"\ndata: {\"topic\":\"notification\""
    tail = b""  # an event may straddle two reads
    sock.settimeout(5)
    while count < want:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        if not ready_seen and b"connected" in data:
            ready_seen = True
            ready.set()
        window = tail + data
        n = window.count(marker)
        tail = window[-(len(marker) - 1):]
        if n and first is None:
            first = time.perf_counter()
        count += n
        gaps += data.count(b"event: gap")
        last = time.perf_counter()
    sock.close()
    results.append({"events": count, "gaps": gaps, "seconds": (last or 0) - (first or 0)})


def events(stack: Stack, clients: int, n: int) -> dict[str, float]:
    results: list = []
    readies = [threading.Event() for _ in range(clients)]
    threads = [threading.Thread(target=sse_reader, args=(stack.port, stack.admin_token, n, results, r))
               for r in readies]
    for t in threads:
        t.start()
    for r in readies:
        r.wait(10)
    time.sleep(0.2)
    start = time.perf_counter()
    httpx.post(f"{stack.url}/test/flood/go", params={"n": n}, headers=stack.headers, timeout=120)
    for t in threads:
        t.join(120)
    elapsed = time.perf_counter() - start
    delivered = sum(r["events"] for r in results)
    return {"clients": clients, "published": n, "delivered": delivered,
            "gaps": sum(r["gaps"] for r in results),
            "events_per_s_per_client": round(min(r["events"] / max(r["seconds"], 1e-9) for r in results)),
            "deliveries_per_s": round(delivered / elapsed)}


def memory_under_stalled_client(stack: Stack, n: int) -> dict[str, float]:
    bridge = psutil.Process(stack.bridge_pid)
    sock = socket.create_connection(("127.0.0.1", stack.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {stack.admin_token}\r\n\r\n".encode())
    time.sleep(0.5)
    before = bridge.memory_info().rss
    for _ in range(4):
        httpx.post(f"{stack.url}/test/flood/go", params={"n": n // 4}, headers=stack.headers, timeout=120)
    time.sleep(0.5)
    after = bridge.memory_info().rss
    sock.close()
    return {"events": n, "rss_before_mb": round(before / 2**20, 1), "rss_after_mb": round(after / 2**20, 1),
            "growth_mb": round((after - before) / 2**20, 1)}


POST_LUA = 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'


def accountability(seconds: int, n_seq: int) -> dict[str, Any]:
    """Metrics + audit + rate limits on (defaults) vs off: proxied GET and audited POST, alternated."""
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    off = {"bridge": {"metrics": False, "audit_log": "-", "rate_limit": 0, "login_failures": 0}}
    # on: the defaults, with the per-principal limit raised past what one wrk client sends, so its
    # bookkeeping is measured without refusals
    on = {"bridge": {"rate_limit": 1_000_000}}
    runs: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text(POST_LUA)
        with Stack(plugins=["sysinfo", "benchplugins:PluginFlood"], env=env, config=on) as on_stack, \
                Stack(plugins=["sysinfo", "benchplugins:PluginFlood"], env=env, config=off) as off_stack:
            for _round in range(3):
                for name, stack in (("off", off_stack), ("on", on_stack)):
                    r = runs[name]
                    r.setdefault("get_rps_32", []).append(wrk(f"{stack.url}{PATH}", stack.admin_token, 32, seconds))
                    r.setdefault("post_rps_32", []).append(
                        wrk(f"{stack.url}/test/flood/noop", stack.admin_token, 32, seconds, str(lua)))
                    r.setdefault("get_p50_ms", []).append(raw_latency(stack.port, stack.admin_token, n_seq)["p50_ms"])
            assert on_stack.workdir is not None
            audit = on_stack.workdir / "state" / "isthmus" / "audit.log"
            audit_lines = sum(1 for _ in audit.open("rb")) if audit.exists() else 0
    best = {name: {k: (max(v) if "rps" in k else min(v)) for k, v in r.items()} for name, r in runs.items()}
    return {"runs": runs, "best": best, "audit_lines_written": audit_lines,
            "get_rps_on_vs_off": round(best["on"]["get_rps_32"] / best["off"]["get_rps_32"], 2),
            "post_rps_on_vs_off": round(best["on"]["post_rps_32"] / best["off"]["post_rps_32"], 2),
            "p50_on_minus_off_ms": round(best["on"]["get_p50_ms"] - best["off"]["get_p50_ms"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test of the benchmark)")
    parser.add_argument("--only", choices=["accountability"], help="run one part only")
    args = parser.parse_args()
    seconds = 3 if args.quick else 10
    n_seq = 500 if args.quick else 3000
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: run `make system-deps` as root (Debian package wrk)")

    result: dict = {"machine": {"cpus": os.cpu_count()}, "path": PATH}
    if args.only == "accountability":
        result["accountability"] = accountability(seconds, n_seq)
        print(json.dumps(result, indent=2))
        return
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--workers", "1",
                             "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                            cwd=HERE)
    try:
        poll_for(lambda: httpx.get(f"http://127.0.0.1:{port}{PATH}").status_code == 200, 20, what="bare app")
        result["bare_fastapi"] = {"latency": raw_latency(port, None, n_seq),
                                  "rps_32": wrk(f"http://127.0.0.1:{port}{PATH}", None, 32, seconds),
                                  "rps_128": wrk(f"http://127.0.0.1:{port}{PATH}", None, 128, seconds)}
    finally:
        bare.terminate()
        bare.wait(10)

    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    # one client at full speed: the per-principal rate limit (1,000/s by default) is lifted
    with Stack(plugins=["sysinfo", "benchplugins:PluginFlood"], env=env,
               config={"bridge": {"rate_limit": 1_000_000}}) as stack:
        url = f"{stack.url}{PATH}"
        result["isthmus"] = {"latency": raw_latency(stack.port, stack.admin_token, n_seq),
                             "rps_32": wrk(url, stack.admin_token, 32, seconds),
                             "rps_128": wrk(url, stack.admin_token, 128, seconds)}
        n_events = 50_000 if args.quick else 200_000
        result["events_1_client"] = events(stack, 1, n_events)
        result["events_10_clients"] = events(stack, 10, n_events // 4)
        result["stalled_client_memory"] = memory_under_stalled_client(stack, n_events)

    b, i = result["bare_fastapi"], result["isthmus"]
    result["ratios"] = {
        "rps_32_vs_bare": round(i["rps_32"] / b["rps_32"], 2),
        "rps_128_vs_bare": round(i["rps_128"] / b["rps_128"], 2),
        "p50_overhead_ms": round(i["latency"]["p50_ms"] - b["latency"]["p50_ms"], 3),
        # RADICAL Edge bridge→edge→plugin measured on these machines: 1,300-1,830 rps at 32 connections
        "rps_32_vs_radical_edge_best": round(i["rps_32"] / 1830, 2),
    }
    result["accountability"] = accountability(seconds, n_seq)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
