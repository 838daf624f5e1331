"""``isthmus tasks run``: run one command, N copies of it, or a JSON-lines file of tasks on an edge.

The tasks go to the edge's ``tasks`` plugin in one session (``--pool``: to a pool of the
``pilots`` plugin instead, in a session opened with ``pool=NAME``), in batches of 4,096.
Progress is the session's counts per state, which the edge keeps in O(1): watching a million
tasks costs the same small request every half second as watching one (a pool's counts are
the pool's, so a pool run counts from where the pool was and settles on its own uids' states
at the end). The session closes at the end, which in the tasks plugin cancels whatever is
still unfinished (after --timeout, or on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ClientError
from ..plugins.tasks.client import PIPELINE, TasksClient
from ..sdk.client import BridgeClient
from .remote import FAILED, TIMED_OUT, USAGE, BridgeOpt, TokenOpt, bridge_errors, fail, is_tty, print_json, resolve

tasks_app = typer.Typer(help="Run many small tasks on an edge (the tasks plugin, or a pilot pool).",
                        no_args_is_help=True)

FINAL = ("DONE", "FAILED", "CANCELLED")
POLL_FIRST, POLL_MAX = 0.1, 0.5  # seconds between progress reads: quick for short runs, then steady
MAX_LINE = 1 << 20  # one task spec per line; a longer line is not one
STATES_PAGE = 10_000  # uids per task_states call (a pool's run)


def _file_batches(path: Path) -> Iterator[list[dict[str, Any]]]:
    """The file's task specs in batches of ``PIPELINE`` (after :func:`_check_file`)."""
    batch: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                batch.append(json.loads(line))
                if len(batch) >= PIPELINE:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _check_file(path: Path) -> int:
    """Count the tasks of a JSON-lines file, failing on the first line that is not a JSON object.

    A first pass over the file, so a bad line 50,000 stops the run before anything is
    submitted, without holding the whole file in memory.
    """
    count = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE:
                    fail(f"{path}:{number}: the line is longer than {MAX_LINE} bytes", USAGE)
                try:
                    spec = json.loads(line)
                except ValueError as exc:
                    fail(f"{path}:{number}: not JSON ({exc}); each line is one task, e.g. "
                         '{"executable": "/bin/echo", "arguments": ["hi"]}', USAGE)
                if not isinstance(spec, dict):
                    fail(f"{path}:{number}: a task is a JSON object, e.g. {{\"executable\": \"/bin/true\"}}", USAGE)
                count += 1
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}", USAGE)
    if not count:
        fail(f"{path} holds no tasks (one JSON object per line)", USAGE)
    return count


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Any]:
    """A live bar on stderr when it is a terminal; else a no-op updater."""
    if not show:
        yield lambda counts, done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[states]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("tasks", total=total, states="")

        def update(counts: dict[str, int], done: int) -> None:
            states = "  ".join(f"{s.lower()} {n}" for s, n in counts.items() if n)
            bar.update(task, completed=done, states=states)

        yield update


def _session(client: BridgeClient, edge: str, pool: str | None, backend: str | None) -> TasksClient:
    """A tasks session on ``edge`` (``pool``: on that pilot pool, which needs the edge's pilots plugin)."""
    found = client.list_edges(name=edge, view="summary")
    if edge not in found:
        fail(f"edge {edge!r} is not connected (see `isthmus edges`)")
    plugins = found[edge].get("plugins") or {}
    if pool is not None:
        if "pilots" not in plugins:
            fail(f"edge {edge!r} has no pilot pools (its pilots plugin is not running); run without --pool, "
                 "or ask the edge's admin to enable the pilots plugin")
        from ..plugins.pilots.client import PilotsClient

        pilots = client.get_edge_client(edge).get_plugin("pilots", PilotsClient, pool=pool)
        names = [p["name"] for p in pilots.list_pools()]
        if pool not in names:
            with contextlib.suppress(ClientError):
                pilots.close()
            fail(f"no pool {pool!r} on edge {edge!r} (your pools there: {', '.join(names) or 'none'}); "
                 "create one first (PilotsClient.create_pool, docs/pilots.md)")
        return pilots
    if "tasks" not in plugins:
        fail(f"edge {edge!r} does not run the tasks plugin (it runs: {', '.join(sorted(plugins)) or 'none'})")
    return client.get_edge_client(edge).get_plugin("tasks", TasksClient, backend=backend)


def _follow(tasks: TasksClient, total: int, baseline: dict[str, int], update: Any, deadline: float | None,
            ) -> tuple[dict[str, int], int, bool]:
    """Counts per state (minus ``baseline``) until none of ours is unfinished: (counts, forgotten, timed out)."""
    pause = POLL_FIRST
    while True:
        page = tasks.list_page(limit=0)  # counts only: O(1) on the edge
        counts = {s: n - baseline.get(s, 0) for s, n in page["counts"].items()}
        forgotten = int(page.get("forgotten") or 0)
        done = sum(counts.get(s, 0) for s in FINAL) + forgotten
        update(counts, done)
        if done >= total or counts.get("PENDING", 0) + counts.get("RUNNING", 0) <= 0:
            return counts, forgotten, False
        if deadline is not None and time.monotonic() >= deadline:
            return counts, forgotten, True
        time.sleep(pause)  # a progress display's cadence; the loop ends on the counts
        pause = min(pause * 1.5, POLL_MAX)


def _settle_pool(tasks: TasksClient, uids: list[str], show: int, deadline: float | None,
                 timed_out: bool) -> tuple[dict[str, int], bool, list[dict[str, Any]]]:
    """A pool's counts are the pool's (every run of yours in it), not this run's: read our uids' states,
    wait for any still unfinished, and pick the records to show from them."""
    states: dict[str, str] = {}
    for start in range(0, len(uids), STATES_PAGE):
        states.update(tasks.task_states(uids[start:start + STATES_PAGE]))
    left = [u for u in uids if states.get(u) not in FINAL]
    if left and not timed_out:
        try:
            states.update(tasks.wait_tasks(left, timeout=None if deadline is None
                                           else max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            timed_out = True
    counts = dict.fromkeys(("PENDING", "RUNNING", *FINAL), 0)
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    picked = [u for u in uids if states.get(u) in ("FAILED", "CANCELLED")][:show]
    if len(uids) <= show:
        picked += [u for u in uids if u not in picked]
    return counts, timed_out, [tasks.get_task(u) for u in picked]


def _details(tasks: TasksClient, total: int, show: int) -> list[dict[str, Any]]:
    """Full records of up to ``show`` tasks: the failed and cancelled first, then (few tasks) the rest."""
    picked: list[dict[str, Any]] = []
    for state in ("FAILED", "CANCELLED", None):
        if len(picked) >= show or (state is None and total > show):
            break
        picked += [t for t in tasks.list_tasks(state=state, limit=show - len(picked))
                   if t["uid"] not in {p["uid"] for p in picked}]
    return [tasks.get_task(t["uid"]) for t in picked[:show]]


@tasks_app.command("run")
def run(
    edge: Annotated[str, typer.Argument(help="The edge (see `isthmus edges`).", show_default=False)],
    command: Annotated[list[str] | None, typer.Argument(help="The command and its arguments; put `--` before it.",
                                                        show_default=False)] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="Run the tasks of this JSON-lines file: one "
                                                   "task spec per line, as the tasks plugin takes them.")] = None,
    count: Annotated[int, typer.Option(min=1, max=1_000_000, help="Run the command this many times.")] = 1,
    pool: Annotated[str | None, typer.Option(help="Run on this pilot pool (the edge's pilots plugin).")] = None,
    backend: Annotated[str | None, typer.Option(help="The tasks plugin's backend: local, dask or rhapsody "
                                                     "(default: the edge's).")] = None,
    timeout: Annotated[float | None, typer.Option(min=0, help="Give up (and cancel what is left) after this many "
                                                              "seconds; exit 4.")] = None,
    show: Annotated[int, typer.Option(min=0, help="Print the output of up to this many tasks (failed ones "
                                                  "first).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary and task records as JSON.")] = False,
    bridge: BridgeOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run tasks on EDGE, show progress, wait for all, print a summary; exit 1 if any failed.

    `isthmus tasks run hpc1 -- /bin/hostname`, `isthmus tasks run hpc1 --count 100 -- /bin/true`,
    `isthmus tasks run hpc1 --from-file tasks.jsonl`.
    """
    if bool(command) == bool(from_file):
        fail("give either a command (after --) or --from-file FILE", USAGE)
    if from_file is not None:
        total = _check_file(from_file)
        batches: Iterator[list[dict[str, Any]]] = _file_batches(from_file)
    else:
        assert command is not None
        total = count
        one = {"executable": command[0], "arguments": command[1:]}
        batches = ([dict(one) for _ in range(min(PIPELINE, count - start))] for start in range(0, count, PIPELINE))
    target = resolve(bridge, token)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    with bridge_errors(target), target.client() as client:
        tasks = _session(client, edge, pool, backend)
        try:
            baseline = tasks.list_page(limit=0)["counts"] if pool is not None else {}  # a fresh session: zeros
            uids: list[str] = []
            with _progress(total, is_tty(typer.get_text_stream("stderr")) and not as_json) as update:
                for batch in batches:
                    submitted = tasks.submit_tasks(batch)
                    if pool is not None:
                        uids += submitted
                counts, forgotten, timed_out = _follow(tasks, total, baseline, update, deadline)
            if pool is not None:
                counts, timed_out, details = _settle_pool(tasks, uids, show, deadline, timed_out)
            else:
                details = _details(tasks, total, show)
            seconds = time.monotonic() - started
        finally:
            with contextlib.suppress(ClientError):
                if pool is not None:
                    tasks.cancel_all_tasks()  # this session's unfinished pool tasks (a pool outlives sessions)
                tasks.close()  # the tasks plugin cancels what is left
    failed = counts.get("FAILED", 0) + counts.get("CANCELLED", 0)
    summary = {"edge": edge, "pool": pool, "total": total, "counts": counts, "forgotten": forgotten,
               "seconds": round(seconds, 3), "timed_out": timed_out, "tasks": details}
    if as_json:
        print_json(summary)
    else:
        _print_human(summary, total)
    if timed_out:
        raise typer.Exit(TIMED_OUT)
    if failed:
        raise typer.Exit(FAILED)


def _print_human(summary: dict[str, Any], total: int) -> None:
    for task in summary["tasks"]:
        prefix = f"[{task['uid']}] " if total > 1 else ""
        if task.get("stdout"):
            typer.echo(("\n".join(prefix + line for line in task["stdout"].splitlines())) if prefix
                       else task["stdout"].rstrip("\n"))
        if task["state"] != "DONE":
            why = task.get("exception") or (task.get("stderr") or "").strip()[-500:] or "-"
            typer.echo(f"{task['uid']} {task['state']} (exit code {task.get('exit_code')}): {why}", err=True)
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n)
    rate = total / summary["seconds"] if summary["seconds"] else 0.0
    end = " (timed out; the rest was cancelled)" if summary["timed_out"] else ""
    typer.echo(f"{total} task(s) on {summary['edge']}: {counts} in {summary['seconds']:.1f} s "
               f"({rate:.0f}/s){end}", err=True)
