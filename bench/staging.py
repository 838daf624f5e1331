"""Staging throughput through bridge and edge, beside a plain `cp` of the same file on the same disk.

Prints JSON: MB/s for put (client → edge) and get (edge → client) and for cp, and the ratios.
Run: .venv/bin/python bench/staging.py [--size-mib 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from isthmus.testing.stack import Stack


def write_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=2048, help="file size in MiB (default 2048)")
    args = parser.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-", dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        root = Path(tmp)
        src = root / "src.bin"
        write_file(src, size)
        start = time.perf_counter()
        subprocess.run(["cp", str(src), str(root / "cp.bin")], check=True)
        cp_s = time.perf_counter() - start
        (root / "cp.bin").unlink()
        with Stack(plugins=["staging"], config={"plugins": {"staging": {"roots": [str(root)]}}}) as stack:
            client = stack.client().get_edge_client(stack.edge).get_plugin("staging")
            start = time.perf_counter()
            client.put(src, str(root / "up.bin"))
            put_s = time.perf_counter() - start
            start = time.perf_counter()
            client.get(str(root / "up.bin"), root / "down.bin")
            get_s = time.perf_counter() - start
    mb = size / 1e6
    result = {"size_mib": args.size_mib, "cp_mb_s": round(mb / cp_s), "put_mb_s": round(mb / put_s),
              "get_mb_s": round(mb / get_s), "put_vs_cp": round(cp_s / put_s, 2), "get_vs_cp": round(cp_s / get_s, 2),
              "target_vs_cp": 0.5, "note": "put/get include SHA-256 on both sides and the atomic rename"}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
