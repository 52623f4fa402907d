"""MkDocs hooks for the mailsync site.

Keeps the API reference complete: every name in ``mailsync.__all__`` must be documented on
``reference.md`` (as a ``::: mailsync.Name`` block). A public name added to the package but not
to the page is appended under "Other public names" and reported in the build log, so the
reference never silently lacks part of the API. Names served lazily from a module that does not
exist yet are skipped.

This file is build tooling, not part of the site (``exclude_docs`` in ``mkdocs.yml``).
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.mailsync")

_PACKAGE = Path(__file__).resolve().parents[2] / "src" / "mailsync"
_BLOCK = re.compile(r"^:::\s+mailsync\.(\w+)\s*$", re.MULTILINE)
_SKIP = {"__version__"}


def _public_names() -> list[str]:
    """``mailsync.__all__``, minus lazy names whose module has not landed, read statically."""
    tree = ast.parse((_PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    names: list[str] = []
    lazy: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
        if "__all__" in targets:
            names = [str(n) for n in ast.literal_eval(node.value)]
        if "_LAZY" in targets:
            lazy = {str(k): str(v) for k, v in ast.literal_eval(node.value).items()}
    present = []
    for name in names:
        module = lazy.get(name)
        if module is not None:
            relative = module.removeprefix("mailsync.").replace(".", "/")
            if not (_PACKAGE / f"{relative}.py").exists():
                continue
        if name not in _SKIP:
            present.append(name)
    return present


def on_page_markdown(markdown: str, *, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != "reference.md":
        return markdown
    documented = set(_BLOCK.findall(markdown))
    missing = [name for name in _public_names() if name not in documented]
    if not missing:
        return markdown
    log.info("reference.md does not list %s; appending them", ", ".join(missing))
    blocks = "\n\n".join(f"::: mailsync.{name}" for name in missing)
    return f"{markdown}\n\n## Other public names\n\n{blocks}\n"
