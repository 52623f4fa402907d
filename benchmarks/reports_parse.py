"""Delivery-report parsing benchmark: time per report over the corpus in tests/data/reports.

Each sample is parsed from bytes (a fresh ``Message`` every time, as a sync loop meets it:
header split, tree, report) many times; the table gives the median and the 99th percentile
per sample kind, and for the whole corpus, plus ordinary mail (the negatives) and the hostile
shapes of tests/test_reports.py, whose bound is per megabyte.

    python benchmarks/reports_parse.py              # 200 rounds
    python benchmarks/reports_parse.py --rounds 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailsync._message import Message  # noqa: E402
from mailsync._reports import parse_report  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "reports"


def timings(raw: bytes, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        parse_report(Message(raw))
        out.append(time.perf_counter() - started)
    return out


def row(name: str, samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    median = statistics.median(samples)
    return f"| {name} | {len(samples)} | {median * 1e3:.3f} | {p99 * 1e3:.3f} |"


def hostile() -> dict[str, bytes]:
    base = (CORPUS / "postfix-failed.eml").read_bytes()
    start = base.index(b"\nSubject:") + 1
    end = base.index(b"\n", start)

    def subject(value: bytes) -> bytes:
        return base[:start] + b"Subject: " + value + base[end:]

    return {
        "10 MB subject of words": subject(b"word " * 2_000_000),
        "10 MB subject folded": subject(b"a\r\n " * 2_500_000),
        "10 MB of encoded words": subject(b"=?utf-8?q?w=C3=B6rd?= " * 450_000),
        "20 MB body": base + b"\n" * 20_000_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    manifest = tomllib.loads((CORPUS / "corpus.toml").read_text(encoding="utf-8"))
    negatives = manifest.pop("negatives")
    by_kind: dict[str, list[float]] = {}
    everything: list[float] = []
    for name, expected in manifest.items():
        samples = timings((CORPUS / name).read_bytes(), args.rounds)
        by_kind.setdefault(expected["kind"], []).extend(samples)
        everything.extend(samples)
    ordinary: list[float] = []
    for name in negatives:
        ordinary.extend(timings((CORPUS / name).read_bytes(), args.rounds))
    print(f"{len(manifest)} reports, {len(negatives)} other messages, {args.rounds} rounds each\n")
    print("| what | parses | median ms | p99 ms |")
    print("|---|---|---|---|")
    for kind, samples in sorted(by_kind.items()):
        print(row(kind, samples))
    print(row("all reports", everything))
    print(row("ordinary mail (negatives)", ordinary))
    print("\n| hostile input | MB | seconds | seconds per MB |")
    print("|---|---|---|---|")
    for name, raw in hostile().items():
        best = min(timings(raw, 3))
        megabytes = len(raw) / 1e6
        print(f"| {name} | {megabytes:.1f} | {best:.3f} | {best / megabytes:.4f} |")


if __name__ == "__main__":
    main()
