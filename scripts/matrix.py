"""The conformance matrix: several implementations' reports side by side, clause by clause.

    python scripts/matrix.py build/matrix/reference.json build/matrix/hf-marian.json
    python scripts/matrix.py --markdown build/matrix/matrix.md build/matrix/*.json

Reads the JSON reports that ``python -m spec --conformance-json`` writes (``nox -s matrix``
writes one per shipped adapter), prints one row per clause in paper order and one column per
implementation (in the order given) and each implementation's totals, and writes the same as
Markdown with ``--markdown``. A cell is the verdict with what qualifies it: the variant names,
the diagnosed bug of a deviation; ``-`` where a report lacks the clause.
Exits 2 if a file is not such a report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spec.clauses import CLAUSES, SECTIONS
from spec.report import FORMAT

SHORT = {"CONFORMS": "conforms", "VARIANT": "variant", "DEVIATES": "DEVIATES",
         "NOT PROVIDED": "not provided", "ERROR": "ERROR"}
"""How each verdict reads in a cell (the failing ones stand out in capitals)."""


def load(path: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """The implementation's name and its clauses by id; ``ValueError`` for another file."""
    report = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        raise ValueError(f"{path}: not a conformance report ({FORMAT})")
    return str(report["implementation"]), {c["id"]: c for c in report["clauses"]}


def cell(clause: dict[str, Any] | None) -> str:
    """One implementation's verdict on one clause, with the variant names or the name of the
    diagnosed bug; ``-`` where the report has no such clause."""
    if clause is None:
        return "-"
    text = SHORT.get(clause["verdict"], clause["verdict"])
    qualifier = clause.get("variant") or (clause.get("diagnosis") or "").split(":")[0]
    return f"{text}: {qualifier}" if qualifier else text


def rows(reports: Sequence[tuple[str, dict[str, dict[str, Any]]]]) -> list[list[str]]:
    """The header, then one row per clause in paper order."""
    out = [["clause", *(name for name, _ in reports)]]
    return out + [[cid, *(cell(clauses.get(cid)) for _, clauses in reports)] for cid in CLAUSES]


def summary(clauses: dict[str, dict[str, Any]]) -> str:
    """How many clauses got each verdict, e.g. ``38 conforms, 5 variant, 3 DEVIATES``."""
    verdicts = [c["verdict"] for c in clauses.values()]
    return ", ".join(f"{verdicts.count(v)} {SHORT[v]}" for v in SHORT if verdicts.count(v))


def terminal(table: list[list[str]], width: int = 28) -> str:
    """A fixed-width table, cells cut to ``width`` characters, a blank line between sections."""
    first = max(len(r[0]) for r in table)

    def line(r: list[str]) -> str:
        cells = [c if len(c) <= width else c[: width - 1] + "…" for c in r[1:]]
        return "  ".join([r[0].ljust(first), *(c.ljust(width) for c in cells)]).rstrip()

    out, section = [line(table[0])], None
    for r in table[1:]:
        if CLAUSES[r[0]].section != section:
            out.append("")
            section = CLAUSES[r[0]].section
        out.append(line(r))
    return "\n".join(out)


def markdown(table: list[list[str]], totals: list[str]) -> str:
    """The table as Markdown, clause ids as code, and a last row with each column's totals."""
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    header, *body = table
    out = ["# Conformance matrix", "",
           "Verdicts of the implementations on each clause of 'Attention Is All You Need' "
           f"(sections: {', '.join(f'{s} {t}' for s, t in SECTIONS.items())}).", "",
           "| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join([f"`{r[0]}`", *map(escape, r[1:])]) + " |" for r in body]
    out.append("| " + " | ".join(["**summary**", *totals]) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JSON conformance reports")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    args = parser.parse_args(argv)
    try:
        reports = [load(path) for path in args.reports]
    except (OSError, ValueError, KeyError) as exc:
        print(f"matrix: {exc}", file=sys.stderr)
        return 2
    table, totals = rows(reports), [summary(clauses) for _, clauses in reports]
    print(terminal(table))
    print()
    for (name, _), total in zip(reports, totals, strict=True):
        print(f"{name}: {total}")
    if args.markdown:
        os.makedirs(args.markdown.parent, exist_ok=True)
        args.markdown.write_text(markdown(table, totals), encoding="utf-8")
        print(f"\nmatrix written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
