"""The conformance report: per-clause verdicts as a terminal table, JSON and Markdown."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

from .clauses import CLAUSES, SECTIONS
from .verdicts import ClauseResult, Outcome, Verdict, combine

FORMAT = "attention-spec-report/1"

SITE_URL = os.environ.get("ATTENTION_SPEC_SITE_URL", "").rstrip("/")
"""The documentation site's base URL, set once (``$ATTENTION_SPEC_SITE_URL``): each clause's
link is ``SITE_URL/clauses/<section>/#<name>``; without it the link is relative to the site's
root (``clauses/3.2.1/#eq1``), as the site built by ``nox -s docs`` lays its pages out."""


def link(clause_id: str) -> str:
    """The clause's page and anchor on the documentation site."""
    section, _, name = clause_id.partition("/")
    path = f"clauses/{section}/#{name}"
    return f"{SITE_URL}/{path}" if SITE_URL else path


@dataclasses.dataclass
class Report:
    """All clause results of one run against one implementation."""

    implementation: str
    clauses: list[ClauseResult]
    environment: dict[str, str]
    stopped: str | None = None
    """Why the run ended before every selected test ran (interrupted, ``-x``...), if it did:
    the report is then incomplete, and says so in every format."""

    def counts(self) -> dict[str, int]:
        """How many clauses got each verdict."""
        return {v.value: sum(c.verdict is v for c in self.clauses) for v in Verdict}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "implementation": self.implementation,
            "environment": self.environment,
            "summary": self.counts(),
            "complete": self.stopped is None,
            "stopped": self.stopped,
            "clauses": [c.to_json() for c in self.clauses],
        }

    def incomplete(self) -> str | None:
        """The line every format shows for a run that did not finish, else None."""
        if self.stopped is None:
            return None
        return (f"INCOMPLETE: the run was {self.stopped}; clauses after that point have no "
                "verdict, and the summary counts only those that ran")


def build(
    implementation: str,
    outcomes: Iterable[Outcome],
    environment: Mapping[str, str],
    stopped: str | None = None,
) -> Report:
    """Combine per-test outcomes into one result per clause, in paper order.

    A clause that fails while a clause it depends on also fails says so in its reason, so that
    one broken basic part does not look like many unrelated bugs.
    """
    by_clause: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_clause.setdefault(outcome.clause, []).append(outcome)
    combined = {cid: combine(items) for cid, items in by_clause.items()}
    failing = {cid for cid, o in combined.items() if o.verdict in (Verdict.DEVIATES, Verdict.ERROR)}
    results = []
    for cid, clause in CLAUSES.items():
        if cid not in combined:
            continue
        o = combined[cid]
        reason = o.reason
        broken = [d for d in clause.depends_on if d in failing]
        if cid in failing and broken:
            reason = f"depends on {', '.join(broken)}, which fails; {reason}"
        results.append(
            ClauseResult(
                id=cid,
                section=clause.section,
                title=clause.title,
                verdict=o.verdict,
                reason=reason,
                variant=o.variant,
                diagnosis=o.diagnosis,
                expected=o.expected,
                tests=len(by_clause[cid]),
                run=o.run,
                criterion=o.criterion,
                reproduce=o.reproduce,
                link=link(cid),
            )
        )
    return Report(implementation, results, dict(environment), stopped)


def table(report: Report, width: int = 100) -> str:
    """The terminal table, grouped by paper section."""
    lines = [f"Conformance of {printable(report.implementation)!r} to 'Attention Is All You Need'"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in report.environment.items()))
    if report.incomplete():
        lines.append(f"  {report.incomplete()}")
    by_section: dict[str, list[ClauseResult]] = {}
    for c in report.clauses:
        by_section.setdefault(c.section, []).append(c)
    id_width = max((len(c.id) for c in report.clauses), default=10)
    for section, title in SECTIONS.items():
        if section not in by_section:
            continue
        lines.append("")
        lines.append(f"{section} {title}")
        for c in by_section[section]:
            verdict = c.verdict.value + (" (expected)" if c.expected else "")
            indent = 2 + id_width + 2 + 13 + 2
            wrapped = textwrap.wrap(
                printable(_describe(c)), max(width - indent, 30), max_lines=4
            ) or [""]
            lines.append(f"  {c.id:<{id_width}}  {verdict:<13}  {wrapped[0]}")
            lines.extend(" " * indent + more for more in wrapped[1:])
    lines.append("")
    failing = [c for c in report.clauses if c.verdict in (Verdict.DEVIATES, Verdict.ERROR)]
    if failing:
        lines += ["", "Details of the clauses that deviate or err:"]
        for c in failing:
            lines.append(f"  {c.id} {printable(c.title)}: {c.verdict.value}")
            lines += [f"    {key}: {value}" for key, value in details(c)]
    lines.append("")
    lines.append("Summary: " + ", ".join(f"{n} {v}" for v, n in report.counts().items() if n))
    if report.incomplete():
        lines.append("INCOMPLETE: see above")
    return "\n".join(lines)


def details(c: ClauseResult) -> list[tuple[str, str]]:
    """What a reader needs to act on a clause that deviates or errs, in every format: the run
    that failed, what was measured against which criterion, the diagnosis ("cause unknown"
    when no known bug matches), how to rerun it, and the clause's page."""
    out = [("run", c.run or "not parametrised (see the test)"),
           ("measured", printable(c.reason))]
    if c.criterion:
        out.append(("criterion", printable(c.criterion)))
    if c.verdict is Verdict.DEVIATES:
        out.append(("diagnosis", printable(c.diagnosis or "cause unknown")))
    if c.reproduce:
        out.append(("reproduce", printable(c.reproduce)))
    out.append(("clause", c.link or link(c.id)))
    return out


def printable(text: str) -> str:
    """Text from the implementation made safe for a terminal: whitespace runs (newlines,
    carriage returns, tabs) become one space, other control characters (escape sequences)
    are shown as ``\\xNN``."""
    text = " ".join(text.split())
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def md_escape(text: str) -> str:
    """Text from the implementation made inert in Markdown and HTML: one line (so it can start
    no heading, list or quote), HTML escaped, and the characters that mean something mid-line
    (emphasis, code, links, table cells, strike-through) backslash-escaped."""
    text = html.escape(printable(text), quote=False)
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)


def _describe(c: ClauseResult) -> str:
    parts = []
    if c.variant:
        parts.append(f"[{c.variant}]")
    if c.reason:
        parts.append(c.reason)
    if c.diagnosis and c.diagnosis not in c.reason:
        parts.append(f"diagnosis: {c.diagnosis}")
    if c.expected:
        parts.append(f"(expected: {c.expected})")
    return " ".join(parts)


def markdown(report: Report) -> str:
    """The report as a Markdown document."""
    out = [f"# Conformance of {md_escape(report.implementation)}", ""]
    out.append(", ".join(f"{k} {md_escape(v)}" for k, v in report.environment.items()))
    out.append("")
    if report.incomplete():
        out += [f"**{md_escape(report.incomplete() or '')}**", ""]
    out.append("| " + " | ".join(f"{v} {n}" for v, n in report.counts().items()) + " |")
    out.append("|" + "---|" * len(Verdict))
    out.append("")
    for section, title in SECTIONS.items():
        rows = [c for c in report.clauses if c.section == section]
        if not rows:
            continue
        out += [f"## {section} {title}", "", "| clause | title | verdict | reason |",
                "|---|---|---|---|"]
        for c in rows:
            out.append(f"| [`{c.id}`]({c.link or link(c.id)}) | {md_escape(c.title)} | "
                       f"{c.verdict.value} | {md_escape(_describe(c))} |")
        out.append("")
    failing = [c for c in report.clauses if c.verdict in (Verdict.DEVIATES, Verdict.ERROR)]
    if failing:
        out += ["## Details of the clauses that deviate or err", ""]
        for c in failing:
            out += [f"### {c.id} {md_escape(c.title)}: {c.verdict.value}", ""]
            for key, value in details(c):
                shown = f"[{md_escape(value)}]({value})" if key == "clause" else md_escape(value)
                out.append(f"- {key}: {shown}")
            out.append("")
    return "\n".join(out)


def write(report: Report, json_path: str | None, md_path: str | None) -> None:
    """Write the JSON and/or Markdown files (parent folders are created)."""
    for path, text in (
        (json_path, lambda: json.dumps(report.to_json(), indent=2) + "\n"),
        (md_path, lambda: markdown(report)),
    ):
        if path:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text())
