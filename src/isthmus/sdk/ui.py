"""Schema of ``Plugin.ui_config``: what the Explorer can generate a page from (seed 000, 3.5).

Validated when a plugin loads, so a typo in a plugin's UI description is an error at
start-up naming the field, not a blank page later.
"""

from __future__ import annotations

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


def validate_ui_config(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the normalised ui_config, or raise pydantic.ValidationError."""
    if value is None:
        return None
    return UIConfig.model_validate(value).model_dump(exclude_none=True)
