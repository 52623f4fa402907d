"""Gmail's discovery document (tests/data/gmail/gmail.v1.json) as a router and a validator.

The fake Gmail API (:mod:`tests.fakes.gmail`) finds which method a request calls from the
document's own paths and HTTP methods (upload paths included), checks the query parameters
the method declares (unknown names, repeated single values, enums, integers, booleans) and
checks every JSON body it receives or sends against the document's schemas, strictly: a
property the schema does not declare, a wrong type, a uint64 that is not digits or a ``byte``
field that is not base64 is an error. So the fake cannot answer in a shape Gmail never would,
and mailsync cannot send what Gmail would refuse.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOCUMENT: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data" / "gmail" / "gmail.v1.json").read_text("utf-8")
)
SCHEMAS: dict[str, Any] = DOCUMENT["schemas"]
GLOBAL_PARAMETERS: dict[str, Any] = DOCUMENT["parameters"]

_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_UINT = re.compile(r"\d+")
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class Method:
    """One API method, as the document describes it.

    Attributes:
        id: ``gmail.users.messages.list``.
        http_method: ``GET``, ``POST``...
        pattern: Matches the URL path; groups are the path parameters.
        parameters: The method's parameters by name (path and query).
        request: The request body's schema name, if any.
        response: The response body's schema name, if any.
        upload: Reached through an upload path (``/upload/...``).
        max_upload: The largest media the method accepts, in bytes.
    """

    id: str
    http_method: str
    pattern: re.Pattern[str]
    parameters: dict[str, Any]
    request: str | None
    response: str | None
    upload: bool
    max_upload: int | None

    @property
    def specificity(self) -> int:
        """Fewer path parameters first: ``messages/send`` before ``messages/{id}``."""
        return self.pattern.pattern.count("(?P<")


def _pattern(path: str) -> re.Pattern[str]:
    pieces = re.split(r"(\{[^}]+\})", path.lstrip("/"))
    regex = "".join(
        f"(?P<{piece[1:-1].lstrip('+')}>[^/]+)" if piece.startswith("{") else re.escape(piece)
        for piece in pieces
    )
    return re.compile("/" + regex)


def _walk(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(resource.get("methods", {}).values())
    for child in resource.get("resources", {}).values():
        found += _walk(child)
    return found


def _methods() -> list[Method]:
    methods: list[Method] = []
    for spec in _walk(DOCUMENT):
        common = {
            "id": spec["id"],
            "http_method": spec["httpMethod"],
            "parameters": spec.get("parameters", {}),
            "request": (spec.get("request") or {}).get("$ref"),
            "response": (spec.get("response") or {}).get("$ref"),
        }
        methods.append(
            Method(pattern=_pattern(spec["flatPath"]), upload=False, max_upload=None, **common)
        )
        upload = spec.get("mediaUpload")
        if upload:
            methods.append(
                Method(
                    pattern=_pattern(upload["protocols"]["simple"]["path"]),
                    upload=True,
                    max_upload=int(upload["maxSize"]),
                    **common,
                )
            )
    return sorted(methods, key=lambda m: m.specificity)


METHODS = _methods()


def route(http_method: str, path: str) -> tuple[Method, dict[str, str]] | None:
    """The method a request calls and its path parameters, or None."""
    for method in METHODS:
        if method.http_method != http_method:
            continue
        match = method.pattern.fullmatch(path)
        if match:
            return method, match.groupdict()
    return None


def check_query(method: Method, query: list[tuple[str, str]]) -> str | None:
    """What is wrong with a request's query parameters (Google answers 400), or None."""
    counts: dict[str, int] = {}
    for name, value in query:
        spec = method.parameters.get(name) or GLOBAL_PARAMETERS.get(name)
        if spec is None or spec.get("location") == "path":
            return (
                f'Invalid JSON payload received. Unknown name "{name}": '
                "Cannot bind query parameter."
            )
        counts[name] = counts.get(name, 0) + 1
        if counts[name] > 1 and not spec.get("repeated"):
            return f"Invalid value for parameter {name}: given more than once"
        problem = _check_scalar(spec, value)
        if problem:
            return f"Invalid value at '{name}' ({problem}), \"{value}\""
    for name, spec in method.parameters.items():
        if spec.get("location") == "query" and spec.get("required") and name not in counts:
            return f"Required parameter {name} is missing"
    return None


def _check_scalar(spec: dict[str, Any], value: str) -> str | None:
    kind = spec.get("type")
    if "enum" in spec and value not in spec["enum"]:
        return f"not one of {spec['enum']}"
    if kind == "integer" and not _INT.fullmatch(value):
        return "TYPE_INT32"
    if kind == "boolean" and value not in ("true", "false"):
        return "TYPE_BOOL"
    if kind == "string" and spec.get("format") in ("uint64", "int64") and not _INT.fullmatch(value):
        return "TYPE_UINT64"
    return None


def validate(schema: str | dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Every way ``value`` departs from ``schema`` (a schema name or an inline schema)."""
    spec = SCHEMAS[schema] if isinstance(schema, str) else schema
    if "$ref" in spec:
        return validate(spec["$ref"], value, where)
    kind = spec.get("type")
    if kind == "object":
        return _validate_object(spec, value, where)
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        problems: list[str] = []
        for index, item in enumerate(value):
            problems += validate(spec["items"], item, f"{where}[{index}]")
        return problems
    if kind == "string":
        return _validate_string(spec, value, where)
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: expected an integer, got {value!r}"]
        if spec.get("format") in ("uint32", "uint64") and value < 0:
            return [f"{where}: expected a non-negative integer, got {value}"]
        if spec.get("format") in ("int32", "uint32") and abs(value) >= 2**32:
            return [f"{where}: {value} does not fit {spec['format']}"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if kind == "any":
        return []
    return [f"{where}: the validator does not know the type {kind!r}"]


def _validate_object(spec: dict[str, Any], value: Any, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {type(value).__name__}"]
    problems: list[str] = []
    properties = spec.get("properties")
    extra = spec.get("additionalProperties")
    for key, item in value.items():
        if properties is not None and key in properties:
            problems += validate(properties[key], item, f"{where}.{key}")
        elif extra is not None:
            problems += validate(extra, item, f"{where}.{key}")
        else:
            problems.append(f"{where}: {key!r} is not a property of this schema")
    return problems


def _validate_string(spec: dict[str, Any], value: Any, where: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: expected a string, got {type(value).__name__}"]
    fmt = spec.get("format")
    if "enum" in spec and value not in spec["enum"]:
        return [f"{where}: {value!r} is not one of {spec['enum']}"]
    if fmt == "uint64" and not _UINT.fullmatch(value):
        return [f"{where}: {value!r} is not a uint64"]
    if fmt == "int64" and not _INT.fullmatch(value):
        return [f"{where}: {value!r} is not an int64"]
    if fmt == "byte" and not _BASE64.fullmatch(value):
        return [f"{where}: {value[:40]!r}... is not base64"]
    return []
