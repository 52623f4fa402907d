"""The reliability record: tests tagged with ``@pytest.mark.reliability`` make docs/reliability.md.

A test that injects a fault or feeds hostile input says so in its marker::

    @pytest.mark.reliability(
        area="IMAP",
        fault="the server closes the connection in the middle of a FETCH",
        inputs="cut after each of 11 byte offsets",   # optional
        outcome="ConnectionFailed; the next sync() yields the rest, nothing twice",
    )

The hooks below (called from tests/conftest.py) collect one row per tagged test function,
with its parametrised cases counted and named. ``python -m tests.reliability`` runs every
tagged test and, only when all of them passed, renders the rows into docs/reliability.md;
``tests/test_reliability_page.py`` fails when the committed page and the tagged tests
disagree. So the page lists what the suite really injects and asserts, and a later change
only has to tag its test and regenerate.

The marker's text is what the page says: write ``fault`` and ``outcome`` as a reader of the
page needs them, and keep them static (no timings or other run-dependent values).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reliability.md"
MARKER = "reliability"
_FIELDS = ("area", "fault", "outcome", "inputs")
_OPTION = "--reliability-json"

# The order areas appear in on the page, and what each is about; areas not named here
# come after these, alphabetically.
AREAS: dict[str, str] = {
    "Message parsing": (
        "Mail read from any server is untrusted. Every attribute of a `Message` is "
        "best-effort: broken input gives a fallback value, never an exception."
    ),
    "Parsing cost": (
        "What reading a hostile message may cost, per MB of input. Memory bounds are "
        "asserted with tracemalloc peaks (the same on any machine); time bounds are generous "
        "wall-clock limits, far above what the code takes on an idle machine and far below "
        "what the quadratic or uncapped code took, so a loaded machine does not make them "
        "flaky. Work that could grow without limit is capped, and past a cap the rest is "
        "skipped (documented on each attribute): {caps}. Listing attachments decodes "
        "nothing; `Attachment.size` counts base64 without decoding it; `data` decodes on "
        "first use."
    ),
    "Sending": (
        "What `compose()` and `prepare()` refuse, so that what a server delivers is what "
        "mailsync reports (recipients, Message-ID)."
    ),
    "Secrets": "Passwords and tokens never appear in errors, logs or reprs.",
    "IMAP": "Hostile or broken IMAP servers: scripted ones, and the real Dovecot behind a "
    "breakable TCP proxy.",
    "POP3": "Hostile or broken POP3 servers: scripted ones, and the real Dovecot behind a "
    "breakable TCP proxy.",
    "SMTP": "Hostile or broken SMTP servers: scripted ones, and the real Postfix.",
    "Connections": "What every protocol does when setting up a connection goes wrong: the "
    "same error, sync or async, whichever protocol.",
    "Sync state": "Concurrent use and crashes around the sync cursors.",
    "Limits": (
        "What no server can make a call do: hang for ever or grow memory without end. Every "
        "connection has an inactivity timeout, a whole-call deadline (`Timeout.total` plus "
        "the time the bytes take at `min_rate`), a maximum message size (`max_message_size`, "
        "256 MiB by default) enforced while streaming, and caps on what one command may bring; "
        "see [Limits](errors.md#limits). The tests use small limits so that each takes a "
        "second or two."
    ),
}


@dataclass
class Row:
    """One tagged test function and what its marker says."""

    area: str
    fault: str
    outcome: str
    inputs: str
    test: str  # node id without parameters
    cases: list[str] = field(default_factory=list)  # parameter ids, "" for an unparametrised test
    # Cases marked xfail (strict): known gaps, with the reason the marker gives.
    gaps: dict[str, str] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)  # outcome -> count, after a run


def marker_row(item: pytest.Item) -> Row | None:
    """The row an item contributes to, or None when it is not tagged."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if marker.args:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} takes keyword arguments")
    unknown = set(marker.kwargs) - set(_FIELDS)
    missing = {"area", "fault", "outcome"} - set(marker.kwargs)
    if unknown or missing:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.{MARKER} needs area=, fault=, outcome= "
            f"(and optionally inputs=); unknown {sorted(unknown)}, missing {sorted(missing)}"
        )
    base, _, params = item.nodeid.partition("[")
    case = params.removesuffix("]")
    shared = _contract_test(item)
    if shared is not None:  # one row for every backend that runs it, a case each
        owner = item.cls.__name__ if item.cls is not None else base
        base, case = shared, f"{owner}-{case}" if case else owner
    xfail = item.get_closest_marker("xfail")
    if xfail is not None and not xfail.kwargs.get("strict", False):
        raise pytest.UsageError(f"{item.nodeid}: a known gap is marked xfail(strict=True)")
    return Row(
        area=str(marker.kwargs["area"]),
        fault=str(marker.kwargs["fault"]),
        outcome=str(marker.kwargs["outcome"]),
        inputs=str(marker.kwargs.get("inputs", "")),
        test=base,
        cases=[case],
        gaps={case: str(xfail.kwargs.get("reason", ""))} if xfail is not None else {},
    )


def _contract_test(item: pytest.Item) -> str | None:
    """Where a test defined in another module than the one that runs it (a contract test,
    tests/contract.py) is written, as a node id; None for any other test."""
    function = getattr(item, "function", None)
    module = getattr(item, "module", None)
    if function is None or module is None or function.__module__ == module.__name__:
        return None
    path = function.__module__.replace(".", "/") + ".py"
    return f"{path}::{function.__qualname__.replace('.', '::')}"


class Recorder:
    """A plugin (registered when the JSON option is given) that collects the rows of the
    collected items and the results of the ones that ran, and writes them at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, Row] = {}
        self.row_of: dict[str, str] = {}  # item node id -> row key

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            row = marker_row(item)
            if row is None:
                continue
            key = f"{row.test}\0{row.fault}"
            known = self.rows.setdefault(key, row)
            if known is not row:
                known.cases.extend(row.cases)
                known.gaps.update(row.gaps)
            self.row_of[item.nodeid] = key

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        key = self.row_of.get(report.nodeid)
        if key is None:
            return
        # The call's outcome counts, and a setup or teardown that did not pass; an expected
        # failure (a known gap) counts as such.
        if report.when == "call" or report.outcome != "passed":
            outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
            results = self.rows[key].results
            results[outcome] = results.get(outcome, 0) + 1

    def pytest_sessionfinish(self) -> None:
        rows = [asdict(row) for row in self.rows.values()]
        self.path.write_text(json.dumps(rows, indent=1, sort_keys=True), encoding="utf-8")


# Called by tests/conftest.py's hooks of the same names.


def addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        _OPTION,
        default=None,
        help="write the rows of the tests tagged @pytest.mark.reliability (and their "
        "results, if they ran) to this JSON file; see tests/reliability.py",
    )


def configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(area, fault, outcome, inputs=''): a fault or hostile input this test "
        "injects and the outcome it asserts; listed in docs/reliability.md",
    )
    path = config.getoption(_OPTION)
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "reliability-recorder")


# -- the page ----------------------------------------------------------------------------------


def render(rows: Iterable[dict[str, object]]) -> str:
    """The markdown page for ``rows`` (as written by :class:`Recorder`); results are not
    shown, so collecting the tests is enough to check the committed page."""
    by_area: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_area.setdefault(str(row["area"]), []).append(row)
    order = [a for a in AREAS if a in by_area] + sorted(set(by_area) - set(AREAS))
    notes = {area: text.format(caps=_caps()) for area, text in AREAS.items()}
    total = sum(len(_cases(row)) for area in order for row in by_area[area])
    lines = [
        "# Reliability: faults injected, inputs tried, outcomes",
        "",
        "<!-- Generated by `python -m tests.reliability` from the tests tagged",
        "     @pytest.mark.reliability; do not edit by hand (tests/test_reliability_page.py",
        "     fails when this page and the tagged tests disagree). -->",
        "",
        "Every row below is a test in the suite: it injects the fault (or feeds the input) "
        "and fails unless the outcome holds. The page is written only from a run in which "
        f"all {total} cases passed, but for the known gaps marked **Not yet**, which are "
        "expected to fail (a strict xfail: the suite fails once one is fixed, so that its "
        "marker is removed). To add a row, tag a test with "
        "`@pytest.mark.reliability(area=..., fault=..., outcome=..., inputs=...)` and run "
        "`python -m tests.reliability`.",
        "",
    ]
    for area in order:
        lines += [f"## {area}", ""]
        if area in notes:
            lines += [notes[area], ""]
        lines += ["| Fault or input | Inputs tried | Outcome | Test |", "|---|---|---|---|"]
        for row in sorted(by_area[area], key=lambda r: (str(r["test"]), str(r["fault"]))):
            lines.append(
                "| "
                + " | ".join(
                    _cell(text)
                    for text in (
                        str(row["fault"]),
                        _inputs(row),
                        str(row["outcome"]) + _gaps(row),
                        f"`{row['test']}`",
                    )
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def _caps() -> str:
    """The library's caps on parsing work, as the page states them (read from the code, so
    the page follows when one changes)."""
    from mailsync import _addresses, _mime, _parts

    caps = [
        f"{_mime.MAX_HEADER_FIELDS:,} header fields per header block",
        f"{_addresses.MAX_ADDRESSES:,} addresses per address field (and twice as many list "
        f"items looked at, {_addresses._PARSE_BUDGET // 1024:,} KiB of them given to the "
        "stdlib's address parser)",
        f"{_mime.MAX_REFERENCES:,} message ids in References (the last ones)",
        f"{_parts.MAX_PARTS:,} MIME parts, nested at most {_parts._MAX_DEPTH} deep",
    ]
    return "; ".join(caps)


def _cases(row: dict[str, object]) -> list[str]:
    cases = row["cases"]
    assert isinstance(cases, list)
    return [str(case) for case in cases]


def _inputs(row: dict[str, object]) -> str:
    cases = [case for case in _cases(row) if case]
    text = str(row["inputs"])
    if not cases or (len(cases) == 1 and text):  # one case the inputs describe already
        return text
    shown = ", ".join(f"`{case}`" for case in cases[:12])
    more = f" and {len(cases) - 12} more" if len(cases) > 12 else ""
    counted = f"{len(cases)} cases: {shown}{more}"
    return f"{text} ({counted})" if text else counted


def _gaps(row: dict[str, object]) -> str:
    gaps = row.get("gaps") or {}
    assert isinstance(gaps, dict)
    if not gaps:
        return ""
    reasons: dict[str, list[str]] = {}
    for case, reason in gaps.items():
        reasons.setdefault(str(reason), []).append(f"`{case}`")
    said = "; ".join(f"{', '.join(cases)}: {reason}" for reason, cases in reasons.items())
    return f" **Not yet** (expected to fail, xfail strict) for {said}."


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def collect_rows(*, run: bool) -> list[dict[str, object]]:
    """The rows of every tagged test, by running pytest in a subprocess: collecting only,
    or running the tagged tests too (then with their results)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rows.json"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        command += ["-m", MARKER, f"{_OPTION}={out}"]
        command += [] if run else ["--collect-only"]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=not run, text=True, check=False, env=os.environ
        )
        if not out.exists():
            raise RuntimeError(f"pytest wrote no rows (exit {done.returncode}):\n{done.stdout}")
        rows: list[dict[str, object]] = json.loads(out.read_text(encoding="utf-8"))
        return rows


def _expected(row: dict[str, object]) -> dict[str, int]:
    gaps = len(row.get("gaps") or {})  # type: ignore[arg-type]
    passed = len(_cases(row)) - gaps
    return {name: count for name, count in (("passed", passed), ("xfailed", gaps)) if count}


def main(argv: list[str] | None = None) -> int:
    """Run the tagged tests and rewrite docs/reliability.md, if every case passed."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability", description=main.__doc__)
    parser.parse_args(argv)
    rows = collect_rows(run=True)
    short = [
        f"{row['test']}: {row['results']} of {len(_cases(row))}"
        for row in rows
        if row["results"] != _expected(row)
    ]
    if short:
        print("Not every tagged case passed; the page is left as it was:", file=sys.stderr)
        print("\n".join(short), file=sys.stderr)
        return 1
    PAGE.write_text(render(rows), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
