"""Schema of ``Plugin.ui_config``: what the Explorer can generate a page from (seed 000, 3.5).

Validated when a plugin loads, so a typo in a plugin's UI description is an error at
start-up naming the field, not a blank page later. Endpoints must stay inside the
plugin's namespace (``invalid_endpoints``): the edge checks its own plugins, the bridge
checks what edges announce, and the Explorer checks again before each request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FieldType = Literal["text", "textarea", "number", "integer", "checkbox", "select", "password",
                    "path", "json", "list", "hidden", "datetime"]
MonitorType = Literal["task_list", "metrics", "table", "raw"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FormField(_Strict):
    name: str
    type: FieldType = "text"
    label: str | None = None
    default: Any = None
    required: bool = False
    placeholder: str | None = None
    help: str | None = None
    options: list[Any] | None = None  # for select: values or {"value", "label"} dicts
    options_endpoint: str | None = None  # GET path in the plugin namespace returning options
    min: float | None = None
    max: float | None = None


class SubmitAction(_Strict):
    label: str = "Submit"
    style: Literal["primary", "success", "danger", "warning", "secondary"] = "primary"
    # Path in the plugin namespace; "{sid}" is replaced by the page's session id.
    endpoint: str | None = None
    method: Literal["POST", "PUT", "GET", "DELETE"] = "POST"


class Form(_Strict):
    id: str
    title: str | None = None
    fields: list[FormField] = Field(default_factory=list)
    submit: SubmitAction = Field(default_factory=SubmitAction)

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, fields: list[FormField]) -> list[FormField]:
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names: {', '.join(dupes)}")
        return fields


class Monitor(_Strict):
    id: str
    title: str | None = None
    type: MonitorType = "task_list"
    endpoint: str | None = None  # GET path in the plugin namespace ("{sid}" replaced)
    refresh: float | None = None  # seconds between polls of `endpoint`
    columns: list[str] | None = None
    empty_text: str | None = None


class Notifications(_Strict):
    topic: str
    id_field: str = "id"
    state_field: str = "state"


class UIConfig(_Strict):
    icon: str | None = None
    title: str | None = None
    description: str | None = None
    forms: list[Form] = Field(default_factory=list)
    monitors: list[Monitor] = Field(default_factory=list)
    notifications: Notifications | None = None


def validate_ui_config(value: dict[str, Any] | None, plugin: str = "") -> dict[str, Any] | None:
    """Return the normalised ui_config; raise pydantic.ValidationError or UIConfigError.

    An endpoint that leaves the plugin's namespace is refused here, at the edge, so the
    plugin fails to load with a message naming it instead of shipping a bad manifest.
    """
    if value is None:
        return None
    ui = UIConfig.model_validate(value).model_dump(exclude_none=True)
    problems = invalid_endpoints(plugin, {"ui_config": ui})
    if problems:
        raise UIConfigError("; ".join(problems))
    return ui


class UIConfigError(ValueError):
    """A ui_config endpoint that would leave the plugin's namespace."""


# -- where the Explorer may send requests ------------------------------------------------------
#
# Every endpoint in ui_config is joined to ``/{edge}/{plugin}/`` by the Explorer. A browser
# resolves ``..`` (also ``%2e%2e``, ``.%2E``...) and treats ``\`` like ``/`` before sending,
# and drops tabs and newlines, so an endpoint such as ``../../other-edge/_edge/...`` would
# reach another edge with the admin's cookie. The rules below keep endpoints inside the
# plugin's own namespace; app.js applies the same rules (``endpointProblem``).

MAX_ENDPOINT = 512
MAX_PROBLEMS = 20
_SID = "{sid}"
_DOT_SEGMENTS = frozenset({".", ".."})


def _dot_segment(segment: str) -> bool:
    """``.``/``..`` as a browser sees them: ``%2e`` in either case counts as a dot."""
    if len(segment) > 6:  # "%2e%2e" is the longest spelling of ".."
        return False
    return segment.lower().replace("%2e", ".") in _DOT_SEGMENTS


def endpoint_problem(endpoint: Any) -> str | None:
    """Why ``endpoint`` may not be joined to ``/{edge}/{plugin}/``, or None when it may.

    Relative to the plugin's namespace: no scheme, no leading ``/`` (so no ``//host``),
    no ``.``/``..`` segment in any spelling, no backslash, no encoded ``/`` or ``\\``,
    no control characters or spaces. ``{sid}`` is allowed; a query after ``?`` is allowed
    (it cannot change the path).
    """
    if not isinstance(endpoint, str):
        return f"is not a string ({type(endpoint).__name__})"
    if not endpoint:
        return "is empty"
    if len(endpoint) > MAX_ENDPOINT:
        return f"is longer than {MAX_ENDPOINT} characters"
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in endpoint):
        return "contains a space or control character"
    if "\\" in endpoint:
        return "contains a backslash"
    path = endpoint.replace(_SID, "sid")
    path = path.split("?", 1)[0].split("#", 1)[0]
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        return "contains an encoded '/' or '\\'"
    if path.startswith("/"):
        return "must be relative to the plugin (no leading '/')"
    segments = path.split("/")
    if ":" in segments[0]:
        return "looks like a URL with a scheme (':' in the first segment)"
    if any(_dot_segment(s) for s in segments):
        return "contains a '.' or '..' segment"
    return None


def _objects(ui: dict[str, Any], key: str, found: list[tuple[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, item) of the list ``ui[key]``; a non-list or a non-object item is noted in ``found``."""
    items = ui.get(key)
    if items is None:
        return
    if not isinstance(items, list):
        found.append((key, ValueError("is not a list")))
        return
    for i, item in enumerate(items):
        if isinstance(item, dict):
            yield i, item
        else:
            found.append((f"{key}[{i}]", ValueError("is not an object")))


def _walk_endpoints(ui: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, endpoint) for every endpoint the Explorer would request; where is readable."""
    found: list[tuple[str, Any]] = []
    for i, form in _objects(ui, "forms", found):
        label = f"form {form.get('id')!r}" if isinstance(form.get("id"), str) else f"forms[{i}]"
        submit = form.get("submit")
        if submit is not None and not isinstance(submit, dict):
            found.append((f"{label} submit", ValueError("is not an object")))
            submit = None
        endpoint = (submit or {}).get("endpoint")
        if endpoint is None:  # the Explorer's default: "{form id}/{sid}"
            form_id = form.get("id")
            found.append((f"{label} (default endpoint from its id)",
                          f"{form_id}/{_SID}" if isinstance(form_id, str) else form_id))
        else:
            found.append((f"{label} submit.endpoint", endpoint))
        fields = form.get("fields")
        if fields is not None and not isinstance(fields, list):
            found.append((f"{label} fields", ValueError("is not a list")))
            fields = []
        for j, field in enumerate(fields or []):
            if isinstance(field, dict) and field.get("options_endpoint") is not None:
                name = field.get("name") if isinstance(field.get("name"), str) else f"fields[{j}]"
                found.append((f"{label} field {name!r} options_endpoint", field["options_endpoint"]))
    for i, monitor in _objects(ui, "monitors", found):
        if monitor.get("endpoint") is not None:
            label = f"monitor {monitor.get('id')!r}" if isinstance(monitor.get("id"), str) else f"monitors[{i}]"
            found.append((f"{label} endpoint", monitor["endpoint"]))
    return found


def invalid_endpoints(plugin: str, manifest: dict[str, Any]) -> list[str]:
    """Problems with the endpoints of one plugin's manifest (its ``ui_config``); empty when fine.

    For the bridge to check what an edge announces (an edge may be hostile) and for the
    edge to refuse its own plugin's mistakes. Total: odd types are problems, never
    exceptions; at most MAX_PROBLEMS are listed.
    """
    name = plugin if isinstance(plugin, str) else repr(plugin)
    try:
        if not isinstance(manifest, dict):
            return [f"plugin {name!r}: the manifest is not an object"]
        ui = manifest.get("ui_config")
        if ui is None:
            return []
        if not isinstance(ui, dict):
            return [f"plugin {name!r}: ui_config is not an object"]
        problems: list[str] = []
        for where, endpoint in _walk_endpoints(ui):
            why = str(endpoint) if isinstance(endpoint, ValueError) else endpoint_problem(endpoint)
            if why is not None:
                shown = "" if isinstance(endpoint, ValueError) else f" {str(endpoint)[:80]!r}"
                problems.append(f"plugin {name!r}: ui_config {where}{shown} {why}")
                if len(problems) >= MAX_PROBLEMS:
                    problems.append(f"plugin {name!r}: (further problems not listed)")
                    break
        return problems
    except Exception as exc:  # noqa: BLE001 - total by contract: a weird manifest is a problem
        return [f"plugin {name!r}: ui_config could not be checked ({type(exc).__name__})"]
