"""HTML forms generated from a connector's config JSON Schema, and form input turned back into config values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from connector_sdk.models import Manifest


@dataclass(frozen=True)
class FormField:
    """One input of a generated form."""

    name: str
    title: str
    description: str = ""
    kind: str = "text"  # text | password | number | checkbox | select
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: str | None = None
    options: list[str] = field(default_factory=list)
    nullable: bool = False
    example: str | None = None

    @property
    def secret(self) -> bool:
        return self.kind == "password"

    @property
    def advanced(self) -> bool:
        """Optional settings with a sensible default go behind an "Advanced settings" disclosure."""
        return not self.required and not self.secret

    @property
    def placeholder(self) -> str:
        if self.example:
            return f"e.g. {self.example}"
        if self.default is None or self.kind in ("checkbox", "select"):
            return ""
        return f"Default: {self.default}"


def _concrete(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The non-null branch of an ``anyOf: [X, null]`` (and whether null was allowed)."""
    branches = schema.get("anyOf") or schema.get("oneOf")
    if not branches:
        return schema, schema.get("type") == "null"
    concrete = [b for b in branches if b.get("type") != "null"]
    nullable = len(concrete) != len(branches)
    merged = {**schema, **(concrete[0] if concrete else {})}
    merged.pop("anyOf", None)
    merged.pop("oneOf", None)
    return merged, nullable


def manifest_fields(manifest: Manifest) -> list[FormField]:
    """The inputs of a connector's connect form: its config schema, the secret field's placeholder from its manifest."""
    auth = manifest.authentication
    return form_fields(manifest.config_schema, {auth.secret_field: auth.key_example} if auth.key_example else None)


def form_fields(schema: dict[str, Any], examples: Mapping[str, str] | None = None) -> list[FormField]:
    """The inputs for an object schema: secrets and required fields first, then the optional ones in schema order.

    ``examples`` are placeholders by field name (a manifest's ``key_example`` for its secret field).
    """
    required = set(schema.get("required", []))
    fields = []
    for name, raw in (schema.get("properties") or {}).items():
        prop, nullable = _concrete(raw)
        kind, step = "text", None
        if prop.get("writeOnly") or prop.get("format") == "password":
            kind = "password"
        elif "enum" in prop:
            kind = "select"
        elif prop.get("type") == "boolean":
            kind = "checkbox"
        elif prop.get("type") in ("integer", "number"):
            kind, step = "number", "1" if prop.get("type") == "integer" else "any"
        minimum = prop.get("minimum", prop.get("exclusiveMinimum"))
        fields.append(
            FormField(
                name=name,
                title=prop.get("title") or name.replace("_", " ").capitalize(),
                description=prop.get("description", ""),
                kind=kind,
                required=name in required,
                default=prop.get("default"),
                minimum=minimum,
                maximum=prop.get("maximum", prop.get("exclusiveMaximum")),
                step=step,
                options=[str(v) for v in prop.get("enum", [])],
                nullable=nullable,
                example=(examples or {}).get(name),
            )
        )
    return sorted(fields, key=lambda f: (not f.secret, not f.required))


def form_values(fields: list[FormField], form: Mapping[str, Any]) -> dict[str, Any]:
    """Config values from submitted form input: blank inputs are left out so the schema's defaults apply.

    Strings are passed on as typed; the connector's config model converts ``"30"`` to ``30`` and says what is
    wrong otherwise, in the same words the API uses.
    """
    values: dict[str, Any] = {}
    for f in fields:
        raw = form.get(f.name)
        if f.kind == "checkbox":
            values[f.name] = raw is not None and raw != ""
            continue
        if not isinstance(raw, str):
            continue
        text = raw if f.secret else raw.strip()
        if text.strip():
            values[f.name] = text
    return values


def field_errors(error: ValidationError, known: set[str]) -> tuple[dict[str, str], list[str]]:
    """Messages per form field, and the ones that belong to no field; never echoing the input."""
    by_field: dict[str, str] = {}
    general: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(p) for p in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "finite_number":
            message = "Not a number: NaN and Infinity are not numbers."
        if item["type"] == "extra_forbidden" and len(loc) == 1:
            # A field the connector does not have: named in ``fields`` so a script sees which one it misspelled.
            by_field.setdefault(loc[0], "There is no such setting for this connector.")
            continue
        if loc and loc[0] in known:
            by_field.setdefault(loc[0], message)
        else:
            general.append(f"{'.'.join(loc) or 'config'}: {message}")
    return by_field, general
