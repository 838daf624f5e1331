"""Workflow documents: the DAG checks, validation errors naming step and field, substitution."""

from __future__ import annotations

import pytest

from isthmus.plugins.workflows.spec import Invalid, Unresolved, parse, substitute

TOPOLOGY = {"hpc": {"plugins": {"psij": {}, "tasks": {}, "staging": {}}},
            "lab": {"plugins": {"psij": {}, "staging": {}}}}

GOOD = """
name: demo
params: {n: 3, work: /tmp/w}
steps:
  fetch: {kind: job, edge: lab, spec: {executable: /bin/true}}
  sim:
    kind: tasks
    edge: hpc
    needs: [fetch]
    task: {executable: /bin/echo, arguments: ["${params.work}/out_${index}.dat"]}
    count: ${params.n}
  move: {kind: transfer, from: hpc, to: lab, needs: sim, files: "${steps.sim.outputs.stdout}", dest: /tmp/in}
  train: {kind: job, edge: lab, needs: [move], retries: 2, timeout: 60,
          spec: {executable: /bin/echo, arguments: ["${steps.move.outputs.files}"]}}
"""


def errors_of(document: object, params: dict[str, object] | None = None,
              topology: dict[str, object] | None = TOPOLOGY) -> list[dict[str, str]]:
    with pytest.raises(Invalid) as info:
        parse(document, params, topology)
    assert info.value.status_code == 422
    return info.value.errors


def test_a_good_document_parses_in_dependency_order() -> None:
    wf = parse(GOOD, {"n": 5}, TOPOLOGY)
    assert wf.name == "demo" and wf.params == {"n": 5, "work": "/tmp/w"}
    assert wf.order == ["fetch", "sim", "move", "train"]
    assert wf.steps["move"].needs == ["sim"] and wf.steps["train"].retries == 2
    assert wf.steps["train"].timeout == 60.0 and wf.steps["move"].edges() == ["hpc", "lab"]


def test_a_cycle_names_the_step_and_field() -> None:
    doc = {"steps": {"a": {"kind": "job", "edge": "lab", "spec": {"executable": "/bin/true"}, "needs": ["c"]},
                     "b": {"kind": "job", "edge": "lab", "spec": {"executable": "/bin/true"}, "needs": ["a"]},
                     "c": {"kind": "job", "edge": "lab", "spec": {"executable": "/bin/true"}, "needs": ["b"]},
                     "d": {"kind": "job", "edge": "lab", "spec": {"executable": "/bin/true"}}}}
    errors = errors_of(doc)
    assert errors[0]["field"] == "steps.a.needs"
    assert "cycle: a → c → b → a" in errors[0]["problem"]


def test_self_need_and_unknown_need() -> None:
    doc = {"steps": {"a": {"kind": "job", "edge": "lab", "spec": {}, "needs": ["a", "zz"]}}}
    problems = {e["problem"] for e in errors_of(doc) if e["field"] == "steps.a.needs"}
    assert problems == {"a step cannot need itself", "no step named 'zz'"}


def test_unknown_edge_and_missing_plugin_name_the_field() -> None:
    doc = {"steps": {"a": {"kind": "tasks", "edge": "lab", "tasks": [{"executable": "/bin/true"}]},
                     "b": {"kind": "job", "edge": "mars", "spec": {"executable": "/bin/true"}},
                     "c": {"kind": "transfer", "from": "hpc", "to": "nowhere", "files": ["/tmp/x"], "dest": "/tmp"}}}
    errors = {e["field"]: e["problem"] for e in errors_of(doc)}
    assert errors == {"steps.a.edge": "edge 'lab' has no tasks plugin, which a tasks step needs",
                      "steps.b.edge": "no edge named 'mars' is connected",
                      "steps.c.to": "no edge named 'nowhere' is connected"}


def test_a_pool_needs_the_pilots_plugin() -> None:
    doc = {"steps": {"a": {"kind": "tasks", "edge": "hpc", "pool": "p1", "tasks": [{"executable": "/bin/true"}]}}}
    assert errors_of(doc) == [{"field": "steps.a.edge",
                               "problem": "edge 'hpc' has no pilots plugin, which a tasks step needs"}]


def test_bad_fields_are_all_reported() -> None:
    doc = {"oops": 1, "params": {"n": 1},
           "steps": {"a": {"kind": "job", "edge": "lab", "spec": "x", "retries": -1, "timeout": 0, "extra": 1},
                     "b": {"kind": "rocket"}, "9x": {"kind": "job"}}}
    fields = {e["field"] for e in errors_of(doc, {"m": 2})}
    assert fields == {"oops", "params.m", "steps.a.spec", "steps.a.retries", "steps.a.timeout", "steps.a.extra",
                      "steps.b.kind", "steps.9x"}


def test_references_must_be_declared_and_upstream() -> None:
    doc = {"params": {"n": 1},
           "steps": {"a": {"kind": "job", "edge": "lab", "spec": {"executable": "${params.missing}"}},
                     "b": {"kind": "job", "edge": "lab", "spec": {"executable": "${steps.c.outputs.x}"}},
                     "c": {"kind": "job", "edge": "lab", "spec": {"executable": "${steps.a.outputs}"}, "needs": "a"},
                     "d": {"kind": "job", "edge": "lab", "spec": {"executable": "${index}"}}}}
    errors = {e["field"]: e["problem"] for e in errors_of(doc)}
    assert set(errors) == {"steps.a.spec.executable", "steps.b.spec.executable", "steps.c.spec.executable",
                           "steps.d.spec.executable"}
    assert "not among this step's needs" in errors["steps.b.spec.executable"]


def test_invalid_text_and_shapes() -> None:
    assert errors_of("steps: [unclosed")[0]["field"] == "document"
    assert errors_of("[1, 2]")[0]["problem"] == "must be a mapping with `steps`"
    assert errors_of({"steps": {}})[0]["problem"] == "a workflow needs at least one step"


def test_json_documents_and_list_form() -> None:
    wf = parse('{"steps": [{"id": "x", "kind": "job", "edge": "lab", "spec": {"executable": "/bin/true"}}]}',
               None, TOPOLOGY)
    assert wf.order == ["x"]


def test_without_topology_edges_are_not_checked() -> None:
    doc = {"steps": {"a": {"kind": "job", "edge": "anywhere", "spec": {"executable": "/bin/true"}}}}
    assert parse(doc).order == ["a"]


def test_substitution_keeps_types_for_whole_references() -> None:
    context = {"params": {"n": 3, "flag": True}, "steps": {"sim": {"outputs": {"files": ["/a", "/b"]}}},
               "workflow": {"id": "wf-1"}}
    assert substitute("${params.n}", context) == 3
    assert substitute("${ steps.sim.outputs.files }", context) == ["/a", "/b"]
    assert substitute("run ${params.n} on ${steps.sim.outputs.files} ${params.flag}", context) == \
        "run 3 on /a /b true"
    assert substitute({"x": ["${workflow.id}", 1]}, context) == {"x": ["wf-1", 1]}
    assert substitute("${steps.sim.outputs.files.1}", context) == "/b"
    with pytest.raises(Unresolved, match=r"steps\.sim\.outputs\.nope"):
        substitute("${steps.sim.outputs.nope}", context)


def test_a_gone_edge_is_awaited_within_the_bound() -> None:
    import asyncio

    from isthmus.plugins.workflows.edges import EdgeGone, WorkflowEdges
    from isthmus.types import Principal, Role

    topology: dict[str, object] = {}
    edges = WorkflowEdges(None, Principal("a", Role.user), lambda: topology, edge_wait=1.5)  # type: ignore[arg-type]

    async def go() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, topology.update, {"hpc": {}})
        await edges.wait_for("hpc")  # comes back in time
        topology.clear()
        started = loop.time()
        with pytest.raises(EdgeGone, match=r"gone for more than 1\.5 s"):
            await edges.wait_for("hpc")
        assert 1.5 <= loop.time() - started < 4

    asyncio.run(go())
