"""The example notebook (docs/examples/mailbox-tour.ipynb) runs, cell by cell, in a real
Jupyter kernel against the test servers, and the copy the docs site shows has its outputs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.notebooks import NOTEBOOK, execute
from tests.servers import Account, MailServers

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def _outputs(notebook: Any) -> list[tuple[str, list[Any]]]:
    return [(cell.source, cell.outputs) for cell in notebook.cells if cell.cell_type == "code"]


def _html(outputs: list[Any]) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs)


def _text(outputs: list[Any]) -> str:
    return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outputs)


def _cell(notebook: Any, start: str) -> list[Any]:
    return next(outputs for source, outputs in _outputs(notebook) if source.startswith(start))


@pytest.mark.timeout(600)
def test_the_example_notebook_runs_against_the_test_servers(
    mail_servers: MailServers, account: Account
) -> None:
    notebook = execute(mail_servers, account)
    for source, outputs in _outputs(notebook):
        assert not [o for o in outputs if o.output_type == "error"], source
        warnings = [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        assert not warnings, (source, warnings)

    assert "Sent" in _html(_cell(notebook, "import ssl"))  # the folder table
    table = _html(_cell(notebook, "inbox = "))
    assert "31 messages" in table
    assert "📎" in table

    card = _html(_cell(notebook, "newsletter = "))
    assert "Spring sale" in card
    assert "data:image/png;base64," in card  # the logo, from the message itself
    for gone in ("<script", "onclick", "tracker.example.test", "<form", "position:fixed"):
        assert gone not in card

    assert "news@shop.example.test" in _html(_cell(notebook, "newsletter.headers"))
    assert "datetime64" in _text(_cell(notebook, "df.dtypes"))
    plots = [o for o in _cell(notebook, "import matplotlib") if "image/png" in o.get("data", {})]
    assert len(plots) == 1

    assert "state='delivered'" in _text(_cell(notebook, "for message in box.watch"))
    report = _html(_cell(notebook, "message.delivery_report"))
    assert "DSN" in report
    assert "notebook-tour-1" in report
    assert account.email in report
    assert "3 messages" in _html(_cell(notebook, "async with"))


def test_the_committed_notebook_shows_its_outputs() -> None:
    """What the docs site renders: regenerate with ``python -m tests.notebooks``."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cells = _outputs(notebook)
    assert cells
    for source, outputs in cells:
        assert outputs or source.startswith(("import os", "box.close()")), source
        assert not [o for o in outputs if o.output_type == "error"], source
    assert any("image/png" in o.get("data", {}) for _, outputs in cells for o in outputs)
