"""The tasks plugin's dask backend with a dask-jobqueue cluster: Dask workers are Slurm jobs."""

from __future__ import annotations

import os
import subprocess

from isthmus.testing.stack import Stack, poll_for


def squeue(slurm_env: dict[str, str]) -> dict[str, str]:
    """job id -> job name of the queue's jobs."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True,
                         env={**os.environ, **slurm_env}, timeout=30).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def test_functions_run_on_dask_workers_started_as_slurm_jobs(slurm, tmp_path) -> None:
    jobqueue = {"kind": "slurm", "jobs": 1, "cores": 1, "processes": 1, "memory": "1GB",
                "walltime": "00:10:00", "queue": "debug", "job_name": "isthmus-dask",
                "scheduler_options": {"host": "127.0.0.1"}, "local_directory": str(tmp_path / "dask"),
                "log_directory": str(tmp_path / "dask-logs")}
    config = {"scheduler": "slurm", "plugins": {"tasks": {"dask_jobqueue": jobqueue}}}
    before = set(squeue(slurm.env))
    with Stack(plugins=["tasks"], env=slurm.env, config=config, workdir=tmp_path / "w") as s:
        tasks = s.client().get_edge_client("test").get_plugin("tasks", backend="dask")
        workers = poll_for(lambda: {j for j, n in squeue(slurm.env).items() if n == "isthmus-dask"} - before, 60,
                           0.5, what="a Dask worker job in squeue")
        uids = tasks.submit_tasks([{"function": "math:factorial", "args": [n]} for n in range(10)] +
                                  [{"function": "os:getenv", "args": ["SLURM_JOB_ID"]}])
        states = tasks.wait_tasks(uids, timeout=180)
        assert set(states.values()) == {"DONE"}, states
        values = [tasks.get_task(uid)["return_value"] for uid in uids]
        assert values[:10] == [1, 1, 2, 6, 24, 120, 720, 5040, 40320, 362880]
        assert values[10] in workers  # the function ran inside the worker's Slurm job
        tasks.close()  # the session's cluster goes, and with it the worker job
        poll_for(lambda: not (workers & set(squeue(slurm.env))), 60, 0.5, what="the worker job gone")
