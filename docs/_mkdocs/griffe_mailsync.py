"""A griffe extension for the mailsync API reference.

It does two things griffe cannot do by itself for this package:

- The lazily imported public names (``mailsync.DeliveryReport``, ``mailsync.parse_report``...,
  served by ``mailsync.__getattr__`` from the ``_LAZY`` table) are invisible to static analysis.
  They are added to the ``mailsync`` package as aliases, so ``::: mailsync.DeliveryReport``
  works and links to them resolve. A name whose module does not exist yet is skipped.
- The docstrings use Sphinx roles (``:class:`Message```, ``:meth:`commit```,
  ``:func:`~mailsync.connect```), which Markdown would show literally. Each role becomes a code
  span, linked to the object when it is documented on the site: the link is emitted as an
  *optional* autorefs reference, so a role naming something undocumented (a private helper, a
  stdlib module) renders as plain code instead of failing ``mkdocs build --strict``.

This file is build tooling, not part of the site (``exclude_docs`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|attr|mod|exc|data|obj|const):`([^`]+)`")
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


class MailsyncDocs(griffe.Extension):
    """Add the lazy public names and turn Sphinx roles into (optional) cross-references."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "mailsync":
            return
        _add_lazy_names(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _ROLE.sub(
                    lambda match, obj=obj: _reference(match, obj, pkg), obj.docstring.value
                )


def _lazy_table(pkg: griffe.Module) -> dict[str, str]:
    """The ``_LAZY = {"Name": "mailsync._module", ...}`` table of ``mailsync/__init__.py``."""
    source = Path(str(pkg.filepath)).read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            table = ast.literal_eval(node.value)
            return {str(k): str(v) for k, v in table.items()}
    return {}


def _add_lazy_names(pkg: griffe.Module) -> None:
    for name, module_path in _lazy_table(pkg).items():
        if name in pkg.members:
            continue
        try:
            module = pkg.get_member(module_path.removeprefix("mailsync."))
        except (KeyError, ValueError):
            continue  # the module has not landed yet
        if name not in module.members:
            continue
        pkg.set_member(name, griffe.Alias(name, f"{module_path}.{name}", parent=pkg))


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member)  # type: ignore[arg-type]


def _reference(match: re.Match[str], obj: griffe.Object, pkg: griffe.Module) -> str:
    role, content = match.group(1), match.group(2).strip()
    explicit = _EXPLICIT.match(content)
    if explicit:
        title, target = explicit.group("title"), explicit.group("target")
    else:
        target = content.lstrip("~")
        title = target.rsplit(".", 1)[-1] if content.startswith("~") else target
    if role in ("func", "meth") and not title.endswith(")"):
        title += "()"
    code = f"<code>{html.escape(title)}</code>"
    found = _resolve(target, obj, pkg)
    if found is None:
        return code
    return f'<autoref identifier="{html.escape(found)}" optional>{code}</autoref>'


def _resolve(target: str, obj: griffe.Object, pkg: griffe.Module) -> str | None:
    """The canonical path of what ``target`` names, seen from ``obj``, or None."""
    if target.startswith("mailsync."):
        scopes: list[griffe.Object] = [pkg]
        target = target.removeprefix("mailsync.")
    else:
        scope: griffe.Object | None = obj if (obj.is_class or obj.is_module) else obj.parent
        scopes = []
        while scope is not None:
            scopes.append(scope)
            scope = scope.parent
        scopes.append(pkg)
    for scope in scopes:
        found = _lookup(scope, target)
        if found is not None:
            return found
    return None


def _lookup(scope: griffe.Object, dotted: str) -> str | None:
    current: Any = scope
    try:
        for part in dotted.split("."):
            current = current.members[part]
        path = current.canonical_path
    except Exception:  # unresolvable aliases (stdlib, third-party) are simply not linked
        return None
    return str(path) if str(path).startswith("mailsync") else None
