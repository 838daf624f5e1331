"""The cluster plugin on the real Slurm: drain reasons, jobs per node, snapshots that say their age.

Slurm has no drain through Isthmus (``POST node/{name}/drain`` answers 501): a drain made with
``scontrol`` is outside Isthmus, so it shows at the next snapshot, within ``refresh_interval``,
and every answer says how old its snapshot is (``as_of``, ``age``).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from isthmus.errors import ClientError
from isthmus.testing.stack import Stack
from tests.slurm.conftest import wait_until


def test_drain_and_jobs_per_node(slurm, sbatch) -> None:
    config = {"scheduler": "slurm", "plugins": {"cluster": {"refresh_interval": 0.5}}}
    with Stack(plugins=["cluster"], env=slurm.env, config=config) as s:
        cluster = s.client().get_edge_client("test").get_plugin("cluster", register=False)
        job_id = sbatch("-p", "debug", "-J", "cl-job", "--wrap", "sleep 30")
        wait_until(lambda: any(j["job_id"] == job_id for j in cluster.node("localhost")["jobs"]), 30,
                   "job on the node")
        squeue = json.loads(subprocess.run(["squeue", "--json"], capture_output=True, text=True, check=True).stdout)
        running_here = sorted(str(j["job_id"]) for j in squeue["jobs"]
                              if j["job_state"] in ("RUNNING", ["RUNNING"]) and "localhost" in (j.get("nodes") or ""))
        listed = sorted(n["job_id"] for n in cluster.node("localhost")["jobs"] if n["state"] == "RUNNING")
        assert listed == running_here
        assert cluster.nodes()[0]["jobs"] == [j["job_id"] for j in cluster.node("localhost")["jobs"]]
        subprocess.run(["scontrol", "update", "nodename=localhost", "state=drain", "reason=fan failure (isthmus test)"],
                       check=True)
        try:
            node = wait_until(lambda: (n := cluster.node("localhost"))["state"] == "draining" and n, 20,
                              "node draining")
            assert node["severity"] == "WARN" and node["reason"] == "fan failure (isthmus test)"
            assert cluster.summary()["by_severity"]["WARN"] == 1
            assert node["as_of"] <= time.time() and 0 <= node["age"] < 5  # refresh_interval 0.5 s, plus slack
            first = cluster.summary()["as_of"]
            wait_until(lambda: cluster.summary()["as_of"] > first, 10, "a newer snapshot")
            with pytest.raises(ClientError) as err:
                cluster.drain("localhost", "through isthmus")
            assert err.value.status_code == 501 and "slurm" in str(err.value)
        finally:
            subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], check=True)
        wait_until(lambda: cluster.node("localhost")["severity"] == "OK", 20, "node back to OK")
