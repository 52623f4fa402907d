"""docs/reliability.md is generated from the tests tagged ``@pytest.mark.reliability``
(tests/reliability.py): this fails when the committed page and the tagged tests disagree,
which ``python -m tests.reliability`` (run the tagged tests, then rewrite the page) fixes."""

from __future__ import annotations

from tests.reliability import PAGE, collect_rows, render


def test_the_reliability_page_matches_the_tagged_tests() -> None:
    rows = collect_rows(run=False)
    assert len(rows) > 50  # the collection really found the tagged tests
    expected = render(rows)
    committed = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    assert committed == expected, (
        "docs/reliability.md is out of date with the tests tagged @pytest.mark.reliability: "
        "run `python -m tests.reliability` and commit the page"
    )
