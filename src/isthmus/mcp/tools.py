"""The tools: hand-written ones for the common jobs, and one generated per plugin operation.

Every tool works through ``Calls``: REST calls to the bridge with the caller's token and a
plugin session per (caller, edge, plugin), registered on first use and renewed when the edge
forgot it. Nothing here decides who may do what: the bridge and the edges do, as for REST.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .backend import Backend, ToolFailure, explain

READ_FILE_MAX = 1 << 20  # read_file returns at most 1 MiB
TAIL_MAX = 256 << 10  # job_output_tail keeps at most this much of each stream
TAIL_CHUNKS = 256  # and reads at most this many chunks (the psij plugin's output_chunk each)

OBJECT = "object"
FINAL = ("DONE", "FAILED", "CANCELLED")
MAX_SESSIONS = 10_000  # plugin sessions remembered, per (caller's token, edge, plugin)


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": OBJECT, "properties": properties, "required": required, "additionalProperties": False}


EDGE = {"type": "string", "description": "the edge's name (list_edges shows them)"}
JOB_ID = {"type": "string", "description": "the job id submit_job answered"}


# -- checking arguments --------------------------------------------------------------------------

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def problems(schema: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """What is wrong with ``value`` for the parts of JSON Schema these tools use (type, enum,
    properties, required, additionalProperties, items, minimum, maximum); other keywords are
    left to the edge, which validates its own input."""
    here = where or "arguments"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return [f"{here}: must be {' or '.join(kinds)}, not {type(value).__name__}"]
    out: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{here}: must be one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{here}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{here}: must be at most {schema['maximum']}")
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{where + '.' if where else ''}{key}: required")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            path = f"{where}.{key}" if where else key
            if key in props:
                out += problems(props[key], item, path)
            elif extra is False:
                out.append(f"{path}: unknown argument (known: {', '.join(sorted(props)) or 'none'})")
            elif isinstance(extra, dict):
                out += problems(extra, item, path)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += problems(schema["items"], item, f"{here}[{i}]")
    return out


# -- calls with sessions -------------------------------------------------------------------------

_SESSION_GONE = re.compile(r"session", re.IGNORECASE)


class Calls:
    """One caller's view: their token, and the plugin sessions opened for them."""

    def __init__(self, backend: Backend, token: str, sessions: dict[tuple[str, str, str], str]) -> None:
        self.backend = backend
        self.token = token
        self.sessions = sessions
        self.key = hashlib.sha256(token.encode()).hexdigest()[:24]

    async def get(self, path: str, what: str, **params: Any) -> Any:
        return await self.backend.json(self.token, "GET", path, what, params=params)

    async def session(self, edge: str, plugin: str, renew: bool = False) -> str:
        key = (self.key, edge, plugin)
        if renew:
            self.sessions.pop(key, None)
        sid = self.sessions.get(key)
        if sid is None:
            answer = await self.backend.json(self.token, "POST", f"/{edge}/{plugin}/register_session",
                                             f"opening a {plugin} session on {edge}", json={})
            sid = str(answer["sid"])
            self.sessions[key] = sid
            if len(self.sessions) > MAX_SESSIONS:  # the oldest goes; its edge reaps it when idle
                self.sessions.pop(next(iter(self.sessions)))
        return sid

    async def plugin(self, edge: str, plugin: str, method: str, route: str, what: str, *,
                     params: dict[str, Any] | None = None, json: Any = None, deadline: float | None = None) -> Any:
        """Call ``/{edge}/{plugin}/{route}``, with ``{sid}`` in the route filled in (a session
        opened on first use, and once more if the edge no longer knows it)."""
        for attempt in (0, 1):
            path = route
            if "{sid}" in route:
                path = route.replace("{sid}", await self.session(edge, plugin, renew=attempt == 1))
            answer = await self.backend.call(self.token, method, f"/{edge}/{plugin}/{path}", params=params,
                                             json=json, deadline=deadline)
            if answer.status in (404, 410) and "{sid}" in route and attempt == 0 \
                    and _SESSION_GONE.search(answer.detail):
                continue
            if answer.status >= 300:
                raise ToolFailure(explain(answer, what))
            try:
                return answer.json()
            except ValueError:
                return answer.body.decode(errors="replace")
        raise AssertionError("unreachable")


# -- the curated tools ---------------------------------------------------------------------------

Handler = Callable[[Calls, dict[str, Any]], Awaitable[Any]]


@dataclass
class Curated:
    name: str
    description: str
    schema: dict[str, Any]
    handler: Handler
    read_only: bool = True


async def list_edges(c: Calls, a: dict[str, Any]) -> Any:
    page = await c.get("/edge/list", "listing edges", view="summary", plugin=a.get("plugin"), name=a.get("name"),
                       limit=a.get("limit", 500), after=a.get("after"))
    return {"edges": {name: {"plugins": sorted(e.get("plugins", {})), "host": e.get("host"),
                             "connected_at": e.get("connected_at")} for name, e in page["edges"].items()},
            "next": page.get("next")}


async def cluster_summary(c: Calls, a: dict[str, Any]) -> Any:
    edge = a["edge"]
    answer = await c.backend.call(c.token, "GET", f"/{edge}/cluster/summary")
    if answer.status < 300:
        return answer.json()
    if answer.status != 404:
        raise ToolFailure(explain(answer, f"the cluster summary of {edge}"))
    # no cluster plugin on that edge: what sysinfo says of the machine
    info = await c.get(f"/{edge}/sysinfo/info", f"the cluster summary of {edge} (neither cluster nor "
                                                  "sysinfo answered)")
    return {"edge": edge, "source": "sysinfo (the edge runs no cluster plugin)", "info": info}


async def queue_status(c: Calls, a: dict[str, Any]) -> Any:
    edge, queue = a["edge"], a.get("queue")
    if queue:
        return await c.plugin(edge, "queue_info", "GET", "list_jobs/{sid}", f"the jobs in {queue} on {edge}",
                              params={"queue": queue, "user": a.get("user")})
    return await c.plugin(edge, "queue_info", "GET", "get_info/{sid}", f"the queues of {edge}")


async def submit_job(c: Calls, a: dict[str, Any]) -> Any:
    spec = {k: a[k] for k in ("executable", "arguments", "directory", "environment", "name", "attributes")
            if a.get(k) is not None}
    answer = await c.plugin(a["edge"], "psij", "POST", "submit_job/{sid}", f"submitting a job on {a['edge']}",
                            json={"job_spec": spec, "executor": a.get("executor", "auto")})
    return {"edge": a["edge"], **answer}


def _without_output(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in ("stdout", "stderr", "stdout_offset", "stderr_offset")}


async def job_status(c: Calls, a: dict[str, Any]) -> Any:
    status = await c.plugin(a["edge"], "psij", "GET", "job_status/{sid}/" + a["job_id"],
                            f"the status of job {a['job_id']} on {a['edge']}")
    return _without_output(status)


async def job_output(c: Calls, edge: str, job_id: str, limit: int = TAIL_MAX,
                     chunks: int = TAIL_CHUNKS) -> tuple[str, str, dict[str, Any]]:
    """The output so far, read chunk by chunk (at most ``chunks`` answers), keeping the last
    ``limit`` characters of each stream."""
    route = "job_status/{sid}/" + job_id
    what = f"the output of job {job_id} on {edge}"
    out, err, so, se = "", "", 0, 0
    status: dict[str, Any] = {}
    for _ in range(chunks):
        status = await c.plugin(edge, "psij", "GET", route, what, params={"stdout_offset": so, "stderr_offset": se})
        out = (out + status["stdout"])[-limit:]
        err = (err + status["stderr"])[-limit:]
        if status["stdout_offset"] == so and status["stderr_offset"] == se:
            break
        so, se = status["stdout_offset"], status["stderr_offset"]
    return out, err, _without_output(status)


async def job_output_tail(c: Calls, a: dict[str, Any]) -> Any:
    lines = int(a.get("lines", 50))
    stdout, stderr, status = await job_output(c, a["edge"], a["job_id"])

    def tail(text: str) -> str:
        return "".join(text.splitlines(keepends=True)[-lines:])

    return {"job_id": a["job_id"], "state": status.get("state"), "stdout": tail(stdout), "stderr": tail(stderr)}


async def cancel_job(c: Calls, a: dict[str, Any]) -> Any:
    return await c.plugin(a["edge"], "psij", "POST", "cancel_job/{sid}/" + a["job_id"],
                          f"cancelling job {a['job_id']} on {a['edge']}")


async def run_tasks(c: Calls, a: dict[str, Any]) -> Any:
    edge = a["edge"]
    submitted = await c.plugin(edge, "tasks", "POST", "submit_tasks/{sid}", f"submitting tasks on {edge}",
                               json={"tasks": a["tasks"]})
    uids = submitted["uids"]
    wait = float(a.get("wait", 0))
    if wait <= 0:
        return {"uids": uids}
    done = await c.plugin(edge, "tasks", "POST", "wait_tasks/{sid}", f"waiting for tasks on {edge}",
                          json={"uids": uids, "timeout": wait}, deadline=wait + 30)
    return {"uids": uids, **done}


async def list_files(c: Calls, a: dict[str, Any]) -> Any:
    return await c.plugin(a["edge"], "staging", "GET", "list/{sid}", f"listing {a['path']} on {a['edge']}",
                          params={"path": a["path"]})


async def read_file(c: Calls, a: dict[str, Any]) -> Any:
    edge, path = a["edge"], a["path"]
    limit = int(a.get("max_bytes", READ_FILE_MAX))
    info = await c.plugin(edge, "staging", "GET", "stat/{sid}", f"reading {path} on {edge}", params={"path": path})
    size = int(info.get("size") or 0)
    if size > limit:
        raise ToolFailure(f"reading {path} on {edge}: the file is {size} bytes; read_file returns at most "
                          f"{limit} (max_bytes, at most {READ_FILE_MAX}): use the staging plugin's download")
    sid = await c.session(edge, "staging")
    answer = await c.backend.call(c.token, "GET", f"/{edge}/staging/download/{sid}", params={"path": path})
    if answer.status >= 300:
        raise ToolFailure(explain(answer, f"reading {path} on {edge}"))
    data = answer.body[:limit]
    try:
        return {"path": info.get("path", path), "size": size, "text": data.decode()}
    except UnicodeDecodeError:
        return {"path": info.get("path", path), "size": size, "binary": True, "hex_head": data[:256].hex()}


async def workflow_status(c: Calls, a: dict[str, Any]) -> Any:
    raise ToolFailure("workflow_status: no workflows plugin exists in Isthmus yet; for jobs use job_status, "
                      "for task sets run_tasks")


def curated_tools() -> dict[str, Curated]:
    edge_only = _schema({"edge": EDGE}, ["edge"])
    job = _schema({"edge": EDGE, "job_id": JOB_ID}, ["edge", "job_id"])
    tools = [
        Curated("list_edges", "The connected edges (clusters) with their plugins, one page in name order; "
                "pass `next` as `after` for the following page.",
                _schema({"plugin": {"type": "string", "description": "only edges running this plugin"},
                         "name": {"type": "string", "description": "a glob on edge names, e.g. hpc*"},
                         "limit": {"type": "integer", "minimum": 1, "maximum": 5000},
                         "after": {"type": "string"}}, []), list_edges),
        Curated("cluster_summary", "One edge's cluster at a glance: nodes, partitions, load (the cluster "
                "plugin's summary; the machine's sysinfo where the edge has no cluster plugin).",
                edge_only, cluster_summary),
        Curated("queue_status", "The batch queues of an edge, or the jobs in one queue (queue_info).",
                _schema({"edge": EDGE, "queue": {"type": "string", "description": "a partition/queue name"},
                         "user": {"type": "string"}}, ["edge"]), queue_status),
        Curated("submit_job", "Submit a batch job on an edge (psij); answers the job id at once. The job then "
                "goes PENDING, RUNNING, and DONE, FAILED or CANCELLED: follow it with job_status.",
                _schema({"edge": EDGE, "executable": {"type": "string"},
                         "arguments": {"type": "array", "items": {"type": "string"}},
                         "directory": {"type": "string"}, "name": {"type": "string"},
                         "environment": {"type": "object", "additionalProperties": {"type": "string"}},
                         "attributes": {"type": "object", "description": "queue_name, account, duration, "
                                        "node_count, process_count, custom_attributes, ... (docs/jobs.md)"},
                         "executor": {"type": "string", "description": "auto (default), local, slurm, pbs, ..."}},
                        ["edge", "executable"]), submit_job, read_only=False),
        Curated("job_status", "A job's state, exit code, times and output sizes.", job, job_status),
        Curated("job_output_tail", "The last lines of a job's stdout and stderr.",
                _schema({"edge": EDGE, "job_id": JOB_ID,
                         "lines": {"type": "integer", "minimum": 1, "maximum": 10000}}, ["edge", "job_id"]),
                job_output_tail),
        Curated("cancel_job", "Cancel a job.", job, cancel_job, read_only=False),
        Curated("run_tasks", "Run many small tasks on an edge (the tasks plugin); each task is "
                "{\"executable\": ..., \"arguments\": [...]} (see docs). With `wait` seconds (at most 50), "
                "answers their final states when they finish in time.",
                _schema({"edge": EDGE, "tasks": {"type": "array", "items": {"type": "object"}},
                         "wait": {"type": "number", "minimum": 0, "maximum": 50}}, ["edge", "tasks"]),
                run_tasks, read_only=False),
        Curated("list_files", "A directory's entries on an edge (staging; only what you may see).",
                _schema({"edge": EDGE, "path": {"type": "string"}}, ["edge", "path"]), list_files),
        Curated("read_file", f"A text file's content on an edge (staging), at most {READ_FILE_MAX} bytes.",
                _schema({"edge": EDGE, "path": {"type": "string"},
                         "max_bytes": {"type": "integer", "minimum": 1, "maximum": READ_FILE_MAX}},
                        ["edge", "path"]), read_file),
        Curated("workflow_status", "Workflows are not available yet (no workflows plugin): always an error.",
                _schema({"edge": EDGE, "workflow_id": {"type": "string"}}, []), workflow_status),
    ]
    return {t.name: t for t in tools}


# -- generated tools ------------------------------------------------------------------------------

def operation_names(ops: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(operation name, operation) for one edge's operations.

    The name is the route's fixed segments joined by ``_`` (``job_status/{sid}/{job_id}`` →
    ``job_status``); where two routes of a plugin would share a name, the method is appended
    (``overrides_post``), and then the path parameters (``overrides_delete_override_id``). A
    name the plugin gave in ``mcp_tools`` wins."""
    def base(op: dict[str, Any]) -> str:
        return "_".join(s for s in op["path"].split("/") if s and not s.startswith("{")) or "root"

    out: list[tuple[str, dict[str, Any]]] = []
    counts: dict[tuple[str, str], int] = {}
    for op in ops:
        counts[(op["plugin"], base(op))] = counts.get((op["plugin"], base(op)), 0) + 1
    for op in ops:
        name = base(op)
        if op.get("tool"):  # the plugin named this tool itself (Plugin.mcp_tools)
            name = str(op["tool"])
        elif counts[(op["plugin"], name)] > 1:
            name = f"{name}_{op['method'].lower()}"
            others = [o for o in ops if o["plugin"] == op["plugin"] and base(o) == base(op)
                      and o["method"] == op["method"]]
            if len(others) > 1:
                params = [p for p in op["params"] if p != "sid"]
                name += "_" + "_".join(params or ["all"])
        out.append((re.sub(r"[^A-Za-z0-9_-]", "_", name), op))
    return out


def operation_schema(op: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {p: {"type": "string", "description": f"the {{{p}}} in the route"}
                             for p in op["params"] if p != "sid"}
    query = op.get("query")
    if query:
        props["query"] = {"type": "object", "properties": query, "description": "query parameters"}
    else:
        props["query"] = {"type": "object", "description": "query parameters, if the operation takes any",
                          "additionalProperties": {"type": ["string", "number", "integer", "boolean"]}}
    if op["method"] != "GET":
        body = dict(op.get("body") or {"description": "the JSON body, if the operation takes one"})
        if op.get("defs"):
            body = _local_refs(body)
        props["body"] = body
    schema = _schema(props, [p for p in op["params"] if p != "sid"])
    if op.get("defs"):
        schema["$defs"] = _local_refs(op["defs"])
    return schema


def _local_refs(value: Any) -> Any:
    """OpenAPI's ``#/components/schemas/X`` references as JSON Schema's ``#/$defs/X``."""
    if isinstance(value, dict):
        return {k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" and isinstance(v, str)
                    else _local_refs(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_local_refs(v) for v in value]
    return value


def operation_description(edge: str, op: dict[str, Any]) -> str:
    text = (op.get("description") or "").strip()
    route = f"{op['method']} /{edge}/{op['plugin']}/{op['path']}"
    note = " (the plugin session {sid} is filled in for you)" if "sid" in op["params"] else ""
    return (f"{text}\n\n" if text else "") + f"{route}{note}"[:2000]


async def call_operation(c: Calls, edge: str, op: dict[str, Any], args: dict[str, Any]) -> Any:
    route = op["path"]
    for p in op["params"]:
        if p != "sid":
            value = str(args[p])
            if "/" in value or value in ("", ".", ".."):
                raise ToolFailure(f"{p}: must be one path segment, not {value!r}")
            route = route.replace(f"{{{p}}}", value)
    query = {k: (v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
             for k, v in (args.get("query") or {}).items()}
    return await c.plugin(edge, op["plugin"], op["method"], route, f"{edge}.{op['plugin']}",
                          params=query, json=args.get("body"))
