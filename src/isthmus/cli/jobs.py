"""``isthmus jobs submit|ls|show|tail|cancel|wait``: batch jobs through an edge's psij plugin.

Each command opens one psij session for its run and closes it at the end; jobs belong to
the token's principal, not to the session, so any later command (or the Explorer) sees them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Annotated, Any

import typer

from ..errors import ClientError
from ..plugins.psij.client import PsijClient, is_final
from ..sdk.client import BridgeClient
from .remote import (
    CANCELLED,
    FAILED,
    TIMED_OUT,
    BridgeOpt,
    JsonOpt,
    TokenOpt,
    bridge_errors,
    fail,
    print_json,
    print_table,
    resolve,
)

jobs_app = typer.Typer(help="Submit, list, follow, cancel and wait for batch jobs (the psij plugin).",
                       no_args_is_help=True)

EdgeArg = Annotated[str, typer.Argument(help="The edge (see `isthmus edges`).", show_default=False)]
JobArg = Annotated[str, typer.Argument(help="The job id that `jobs submit` printed.", show_default=False)]
PAGE = 1000  # the psij plugin's largest list_jobs page
LIST_WORKERS = 8  # edges asked at once by `jobs ls` without an edge
OUTPUT_KEYS = ("stdout", "stderr", "stdout_offset", "stderr_offset")
WAIT_CODES = {"DONE": 0, "FAILED": FAILED, "CANCELLED": CANCELLED}


@contextlib.contextmanager
def psij_session(client: BridgeClient, edge: str) -> Iterator[PsijClient]:
    """A psij session on ``edge`` for the length of one command."""
    psij = client.get_edge_client(edge).get_plugin("psij", PsijClient)
    try:
        yield psij
    finally:
        with contextlib.suppress(ClientError):
            psij.close()


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if isinstance(ts, (int, float)) else "-"


def _status_only(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in OUTPUT_KEYS}


def _states(state: str | None) -> str | None:
    if not state:
        return None
    return ",".join(s.strip().upper() for s in state.split(",") if s.strip()) or None


@jobs_app.command("submit")
def submit(
    edge: EdgeArg,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments; put `--` before it.",
                                                 show_default=False)],
    executor: Annotated[str, typer.Option(help="PSI/J executor: auto (the edge's scheduler), local, slurm, "
                                               "pbs, lsf, flux.")] = "auto",
    queue: Annotated[str | None, typer.Option(help="Queue or partition.")] = None,
    nodes: Annotated[int | None, typer.Option(min=1, help="Number of nodes.")] = None,
    walltime: Annotated[str | None, typer.Option("--time", help="Walltime: seconds or [D-]HH:MM:SS "
                                                                "(default 10 minutes).")] = None,
    name: Annotated[str | None, typer.Option(help="Job name.")] = None,
    directory: Annotated[str | None, typer.Option(help="Working directory on the edge.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {\"edge\", \"job_id\"} as JSON.")] = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit CMD ARGS... as a job on EDGE and print its id, e.g. `isthmus jobs submit hpc1 -- hostname`."""
    attributes: dict[str, Any] = {}
    if queue:
        attributes["queue_name"] = queue
    if nodes:
        attributes["node_count"] = nodes
    if walltime:
        attributes["duration"] = walltime
    spec: dict[str, Any] = {"executable": command[0], "arguments": command[1:], "attributes": attributes}
    if name:
        spec["name"] = name
    if directory:
        spec["directory"] = directory
    target = resolve(bridge, token)
    with bridge_errors(target), target.client() as client, psij_session(client, edge) as psij:
        job_id = psij.submit_job(spec, executor=executor)
    if as_json:
        print_json({"edge": edge, "job_id": job_id})
    else:
        typer.echo(job_id)


def _list_edge(client: BridgeClient, edge: str, state: str | None, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` of the caller's jobs on ``edge``, newest first, page by page."""
    jobs: list[dict[str, Any]] = []
    with psij_session(client, edge) as psij:
        before = None
        while True:
            want = min(PAGE, limit - len(jobs))
            page = psij.list_jobs(limit=want, before=before, state=state)
            jobs += [{**j, "edge": edge} for j in page]
            if len(page) < want or len(jobs) >= limit:
                break
            before = page[-1]["job_id"]
    return jobs


@jobs_app.command("ls")
def ls(
    edge: Annotated[str | None, typer.Argument(help="The edge (default: every edge running psij).",
                                               show_default=False)] = None,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state (NEW, PENDING, HELD, RUNNING, DONE, "
                                                   "FAILED, CANCELLED; several: RUNNING,PENDING).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs per edge, newest first.")] = 100,
    as_json: JsonOpt = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """List your jobs (an admin's: everyone's), newest first, on EDGE or on every edge running psij."""
    target = resolve(bridge, token)
    states = _states(state)
    problems: list[str] = []
    with bridge_errors(target), target.client() as client:
        if edge is not None:
            jobs = _list_edge(client, edge, states, limit)
        else:
            names = list(client.list_edges(plugin="psij", view="summary"))

            def one(name: str) -> list[dict[str, Any]]:
                try:
                    return _list_edge(client, name, states, limit)
                except ClientError as exc:  # one edge that fails does not hide the others
                    problems.append(f"{name}: {exc}")
                    return []

            with ThreadPoolExecutor(LIST_WORKERS) as pool:
                jobs = [j for found in pool.map(one, names) for j in found]
            jobs.sort(key=lambda j: j.get("submitted") or 0, reverse=True)
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    if as_json:
        print_json({"jobs": jobs, "errors": problems})
    elif not jobs:
        typer.echo("no jobs" + (f" in state {states}" if states else ""))
    else:
        print_table(["EDGE", "JOB", "STATE", "EXIT", "SUBMITTED", "COMMAND"],
                    [[j["edge"], j["job_id"], j["state"], j.get("exit_code"), _when(j.get("submitted")),
                      j.get("name") or " ".join([j.get("executable", ""), *j.get("arguments", [])])] for j in jobs])
    if problems:
        raise typer.Exit(FAILED)


@jobs_app.command("show")
def show(edge: EdgeArg, job_id: JobArg, as_json: JsonOpt = False, bridge: BridgeOpt = None,
         token: TokenOpt = None) -> None:
    """Show one job: state, exit code, native (scheduler) id, times and state history."""
    target = resolve(bridge, token)
    with bridge_errors(target), target.client() as client, psij_session(client, edge) as psij:
        status = _status_only(psij.get_job_status(job_id))
    if as_json:
        print_json(status)
        return
    for key in ("job_id", "state", "exit_code", "executor", "native_id", "name", "owner", "message"):
        typer.echo(f"{key + ':':<11} {'-' if status.get(key) in (None, '') else status[key]}")
    typer.echo(f"{'command:':<11} {' '.join([status.get('executable', ''), *status.get('arguments', [])])}")
    for step in status.get("history") or []:
        typer.echo(f"  {_when(step.get('time'))}  {step.get('state')}")


@jobs_app.command("tail")
def tail(
    edge: EdgeArg,
    job_id: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing output as it grows until the job "
                                                                 "is final.")] = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a job's output: its stdout on stdout and its stderr on stderr."""
    target = resolve(bridge, token)
    with bridge_errors(target), target.client() as client, psij_session(client, edge) as psij:
        so = se = 0
        pause = 0.2
        while True:
            status = psij.get_job_status(job_id, so, se)
            for stream, text in ((sys.stdout, status["stdout"]), (sys.stderr, status["stderr"])):
                if text:
                    stream.write(text)
                    stream.flush()
            grew = (status["stdout_offset"], status["stderr_offset"]) != (so, se)
            so, se = status["stdout_offset"], status["stderr_offset"]
            if grew:
                pause = 0.2  # read on at once: a chunk may not have been all there is
                continue
            if not follow or is_final(status["state"]):
                return
            time.sleep(pause)  # the output has no event: poll, backing off to 2 s while it is quiet
            pause = min(pause * 1.5, 2.0)


@jobs_app.command("cancel")
def cancel(edge: EdgeArg, job_id: JobArg, bridge: BridgeOpt = None, token: TokenOpt = None) -> None:
    """Cancel a job (`jobs wait` then exits 3 once it is CANCELLED)."""
    target = resolve(bridge, token)
    with bridge_errors(target), target.client() as client, psij_session(client, edge) as psij:
        answer = psij.cancel_job(job_id)
    if answer.get("state"):
        typer.echo(f"job {job_id} had already ended: {answer['state']}")
    else:
        typer.echo(f"job {job_id}: {answer.get('status', 'cancel requested')}")


@jobs_app.command("wait")
def wait(
    edge: EdgeArg,
    job_id: JobArg,
    timeout: Annotated[float | None, typer.Option(min=0, help="Give up after this many seconds (exit 4).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final status as JSON.")] = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """Wait until a job is final; exit 0 if DONE, 1 if FAILED, 3 if CANCELLED, 4 on --timeout."""
    target = resolve(bridge, token)
    with bridge_errors(target), target.client() as client, psij_session(client, edge) as psij:
        try:
            status = _status_only(psij.wait(job_id, timeout=timeout))
        except TimeoutError as exc:
            fail(str(exc), TIMED_OUT)
    if as_json:
        print_json(status)
    else:
        code = "" if status.get("exit_code") is None else f" (exit code {status['exit_code']})"
        typer.echo(f"job {job_id} {status['state']}{code}")
    raise typer.Exit(WAIT_CODES.get(status["state"], FAILED))
