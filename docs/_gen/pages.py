"""mkdocs-gen-files script: the clause pages, the conformance matrix, the API pages, the nav.

Runs after ``reports.py`` (which started the suite in the background) and ``figures.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).parent))

import architecture
import sitedata as S


def write(path: str, text: str) -> None:
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)


def options(**values: Any) -> str:
    """An indented mkdocstrings ``options:`` block."""
    lines = ["    options:"]
    for key, value in values.items():
        rendered = str(value).lower() if isinstance(value, bool) else value
        lines.append(f"      {key}: {rendered}")
    return "\n".join(lines)


# -- the reports ---------------------------------------------------------------------------------
REPORTS = S.reports()
RESULTS: dict[str, dict[str, dict[str, Any]]] = {
    impl: {c["id"]: c for c in report["clauses"]} if report else {}
    for impl, report in REPORTS.items()
}


LIBRARIES = {impl: found for impl in S.IMPLEMENTATIONS
             if (found := S.matrix_library(impl)) is not None}
"""The libraries of the conformance matrix: (what it is, its pinned verdicts)."""


def verdict_of(impl: str, cid: str) -> dict[str, Any] | None:
    return RESULTS[impl].get(cid)


def verdict_cell(impl: str, cid: str) -> str:
    result = verdict_of(impl, cid)
    if REPORTS[impl] is None:
        return S.badge(None)
    if result is None:
        return S.badge("NOT PROVIDED") + " <small>no test ran</small>"
    cell = S.badge(result["verdict"])
    if result.get("variant"):
        cell += f" <small>{S.md_text(result['variant'])}</small>"
    return cell


def detail(result: dict[str, Any]) -> str:
    parts = []
    if result.get("variant"):
        parts.append(f"variant `{result['variant']}`")
    if result.get("reason"):
        parts.append(S.md_text(" ".join(result["reason"].split())))
    if result.get("diagnosis") and result["diagnosis"] not in (result.get("reason") or ""):
        parts.append(f"diagnosis: {S.md_text(result['diagnosis'])}")
    if result.get("expected"):
        parts.append(f"expected: {S.md_text(result['expected'])}")
    return "; ".join(parts)


def environment_line(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    return ", ".join(f"{k} `{v}`" for k, v in env.items())


# -- one page per section ------------------------------------------------------------------------
TESTS = S.tests_by_clause()
CODE = S.code_by_clause()


def clause_block(clause: S.Clause, rendered: dict[str, str]) -> Iterable[str]:
    cid = clause.id
    yield f"[](){{ #{S.anchor(cid)} }}"
    yield ""
    yield f"## {S.md_text(cid)} · {S.md_text(clause.title)} {{ #{S.heading_id(cid)} }}"
    yield ""
    yield f'<p class="clause-meta">Clause <code>{cid}</code> · ' + (
        "practice (not in the paper)</p>" if clause.group != "paper" else "paper</p>")
    yield ""
    if S.paper_link(clause.section):
        yield f"In the paper: {S.paper_link(clause.section)}."
        yield ""
    yield S.md_text(clause.statement)
    yield ""
    if clause.equation:
        yield "$$"
        yield clause.equation
        yield "$$"
        yield ""
    if clause.variants:
        yield "**Named variants** (verdict VARIANT instead of DEVIATES):"
        yield ""
        for variant in clause.variants:
            yield f"`{variant.name}`"
            yield f":   {S.md_text(variant.description)}"
            yield ""
    if clause.depends_on:
        links = ", ".join(S.clause_link(d) for d in clause.depends_on)
        yield f"**Depends on:** {links} (their failure explains a failure of this clause)."
        yield ""

    yield "**Verdicts**"
    yield ""
    yield "| implementation | verdict | details |"
    yield "|---|---|---|"
    for impl, label in S.IMPLEMENTATIONS.items():
        result = verdict_of(impl, cid)
        text = detail(result) if result else ""
        yield f"| {label} | {verdict_cell(impl, cid)} | {text} |"
    yield ""

    tests = TESTS.get(cid, [])
    yield "**Checked by**"
    yield ""
    if not tests:
        yield "No test of the suite checks this clause yet."
        yield ""
    else:
        links = ", ".join(f"[`{t.name}`][{t.path}] in `{t.module}`" for t in tests)
        yield f"{links}."
        yield ""
        for t in tests:
            yield f"::: {t.path}"
            yield options(
                skip_local_inventory=True,
                heading_level=4,
                show_root_toc_entry=False,
                show_root_full_path=False,
                backlinks=False,
            )
            yield ""

    code = CODE.get(cid, [])
    yield "**Reference implementation**"
    yield ""
    if not code:
        yield (
            "No part of the reference names this clause: it holds for the model as a whole "
            "(see [`transformer.model`][transformer.model])."
        )
        yield ""
    else:
        yield from reference_code(cid, code, rendered)
    yield f'<div class="clause-backlinks" data-clause="{cid}"></div>'
    yield ""


def reference_code(cid: str, code: list[S.CodeRef], rendered: dict[str, str]) -> Iterable[str]:
    links = ", ".join(f"[`{c.path}`][{c.path}]" for c in code)
    yield f"Implemented by {links}."
    yield ""
    for c in code:
        if c.path in rendered:
            yield f"`{c.path}` is shown above, under {S.clause_link(rendered[c.path])}."
            yield ""
            continue
        rendered[c.path] = cid
        yield f"::: {c.path}"
        yield options(
            skip_local_inventory=True,
            heading_level=4,
            show_root_toc_entry=False,
            members="false",
            backlinks=False,
        )
        yield ""


def section_page(section: str, title: str, clauses: list[S.Clause]) -> str:
    lines = [f"# {S.md_text(S.section_label(section, title))}", ""]
    modules = sorted({t.module for c in clauses for t in TESTS.get(c.id, [])})
    where = ", ".join(f"[`{m}`][{m}]" for m in modules) or "no module yet"
    paper = S.paper_link(section) or "Not in the paper"
    lines += [
        f"{paper} · {len(clauses)} clauses · tests in {where}.",
        "",
        "| clause | title | " + " | ".join(S.IMPLEMENTATIONS.values()) + " |",
        "|---|---|" + "---|" * len(S.IMPLEMENTATIONS),
    ]
    for c in clauses:
        cells = " | ".join(verdict_cell(impl, c.id) for impl in S.IMPLEMENTATIONS)
        lines.append(f"| {S.clause_link(c.id)} | {S.md_text(c.title)} | {cells} |")
    lines.append("")
    figures = [(name, caption) for name, (sec, caption) in S.FIGURES.items() if sec == section]
    for name, caption in figures:
        lines += [
            "<figure markdown>",
            f"![{caption}](../figures/{name})",
            f'<figcaption markdown="span">{caption} ([all figures](../figures.md))</figcaption>',
            "</figure>",
            "",
        ]
    rendered: dict[str, str] = {}
    for clause in clauses:
        lines += list(clause_block(clause, rendered))
    return "\n".join(lines)


SECTIONS = S.sections_in_order()
for section, title, clauses in SECTIONS:
    write(S.section_page(section), section_page(section, title, clauses))

overview = [
    "# The specification",
    "",
    "Every checkable statement of *Attention Is All You Need* (Vaswani et al., 2017), sections "
    "3.1 to 3.5, 5.3, 5.4, 6.1 and Table 3, and a few statements of practice that every working "
    "implementation needs. Each clause has a stable id, a statement in our words, the paper's "
    "equation, the named variants it accepts, the tests that check it and the reference code "
    "that implements it. The registry is [`spec.clauses`][spec.clauses].",
    "",
    "| section | clauses | tests | "
    + " | ".join(f"{label} conforms" for label in S.IMPLEMENTATIONS.values())
    + " |",
    "|---|---|---|" + "---|" * len(S.IMPLEMENTATIONS),
]
for section, title, clauses in SECTIONS:
    n_tests = sum(len(TESTS.get(c.id, [])) for c in clauses)
    counts = []
    for impl in S.IMPLEMENTATIONS:
        ok = sum(
            (verdict_of(impl, c.id) or {}).get("verdict") in ("CONFORMS", "VARIANT")
            for c in clauses
        )
        counts.append(f"{ok}/{len(clauses)}" if REPORTS[impl] else "not run")
    label = S.md_text(S.section_label(section, title))
    link = f"[{label}]({Path(S.section_page(section)).name})"
    overview.append(f"| {link} | {len(clauses)} | {n_tests} | {' | '.join(counts)} |")
overview += [
    "",
    '"Conforms" counts CONFORMS and VARIANT. The [conformance matrix](../conformance.md) has '
    "the verdict of every clause.",
    "",
    "## The model, clause by clause",
    "",
    "The architecture as the paper draws it (its Figure 1); every box links to the clause that "
    "states it. The [conformance matrix](../conformance.md#the-model-clause-by-clause) colours "
    "it by each implementation's verdicts.",
    "",
    architecture.svg("../"),
    "",
]
write("clauses/index.md", "\n".join(overview))


# -- the conformance matrix ----------------------------------------------------------------------
def matrix_page() -> str:
    labels = S.IMPLEMENTATIONS
    out = [
        "# Conformance matrix",
        "",
        "The verdict of every clause for the reference implementation, for PyTorch's "
        "`torch.nn.Transformer` (with `nn.MultiheadAttention`) and for the libraries people "
        "run (installed by the extra `matrix` at pinned versions, each model built from its "
        "configuration with random weights; each has a page saying what differs from the "
        "paper, and why, in the library's source), from the conformance suite run "
        "when this site was built. Verdicts: CONFORMS; VARIANT (a named deviation the clause "
        "allows); DEVIATES (with a diagnosis when a known bug matches); NOT PROVIDED (the "
        "adapter lacks a capability); ERROR.",
        "",
        "OpenNMT-py is absent: its wheel pins torch < 2.3, and importing any of its Transformer "
        "modules pulls in spaCy, fastText and five other compiled text-processing packages, "
        "which the suite's environment does not install.",
        "",
        "## Summary",
        "",
        "| implementation | CONFORMS | VARIANT | DEVIATES | NOT PROVIDED | ERROR |",
        "|---|---|---|---|---|---|",
    ]
    runs = []
    for impl, label in labels.items():
        report = REPORTS[impl]
        if report is None:
            out.append(f"| {label} | | | | | |")
            runs.append(f"- {label}: not run in this build.")
            continue
        summary = report.get("summary", {})
        counts = " | ".join(
            str(summary.get(v, 0))
            for v in ("CONFORMS", "VARIANT", "DEVIATES", "NOT PROVIDED", "ERROR")
        )
        out.append(f"| {label} | {counts} |")
        runs.append(f"- {label}: {environment_line(report)}.")
    out += ["", "The runs:", "", *runs]
    out += ["", "## The model, clause by clause", "",
            "The paper's Figure 1, each box coloured by the verdict of the clause it links to.",
            ""]
    for impl, label in labels.items():
        if REPORTS[impl] is None:
            continue
        verdicts = {cid: r["verdict"] for cid, r in RESULTS[impl].items()}
        out += [f'=== "{label}"', "", "    " + architecture.svg("../", verdicts, label), ""]
    out += [
        "",
        "## Matrix",
        "",
        "| clause | title | " + " | ".join(labels.values()) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for _section, _title, clauses in SECTIONS:
        for c in clauses:
            cells = " | ".join(verdict_cell(impl, c.id) for impl in labels)
            out.append(f"| {S.clause_link(c.id)} | {S.md_text(c.title)} | {cells} |")
    out += ["", "## Details", ""]
    for impl, label in labels.items():
        out += [f"### {label}", ""]
        if impl in LIBRARIES:
            out += [f"What differs from the paper, with the library's source: "
                    f"[{label}](matrix/{impl}.md).", ""]
        if REPORTS[impl] is None:
            out += ["This build did not run the suite.", ""]
            continue
        rows = [r for r in REPORTS[impl]["clauses"] if r["verdict"] != "CONFORMS"]
        if not rows:
            out += ["Every clause CONFORMS.", ""]
            continue
        out += ["| clause | verdict | details |", "|---|---|---|"]
        for r in rows:
            link = S.clause_link(r["id"]) if r["id"] in S.CLAUSES else S.md_text(r["id"])
            out.append(f"| {link} | {S.badge(r['verdict'])} | {detail(r)} |")
        out.append("")
    out += mutants_section()
    out += [
        "## How this page is made",
        "",
        "The docs build (`nox -s docs`) runs the suite against each implementation, "
        "`python -m spec --impl NAME --conformance-json=PATH`, and keeps the reports under "
        "`build/docs-data/` (or `$ATTENTION_SPEC_DOCS_DATA`), keyed by a hash of `spec/` and "
        "`transformer/`: an unchanged tree reuses them. `ATTENTION_SPEC_DOCS_REPORTS=run` "
        "forces a new run, `=skip` builds without running it (with earlier reports, if any).",
        "",
    ]
    return "\n".join(out)


def _clauses(ids: list[str]) -> str:
    return ", ".join(S.clause_link(c) if c in S.CLAUSES else S.md_text(c) for c in ids)


def mutants_section() -> list[str]:
    """The detection table of the mutant corpus (``tests/mutants``), if the build has it."""
    out = ["## Mutant corpus", ""]
    data = S.detection()
    if data is None:
        return [
            *out,
            '!!! note "Not generated in this build"',
            "",
            "    The mutant corpus was not run (`ATTENTION_SPEC_DOCS_REPORTS=skip`, or its "
            "run failed: see the build's log).",
            "",
        ]
    broken, variants = data.get("mutants", []), data.get("variants", [])
    caught = sum(bool(r["detected"]) for r in broken)
    recognised = sum(bool(r["recognised"]) for r in variants)
    quality = {q: sum(r.get("diagnosis_quality") == q for r in broken)
               for q in ("right", "unknown", "wrong")}
    out += [
        f"The suite against the implementations of `tests/mutants/`: each is the reference with "
        f"one change. **{caught} of {len(broken)}** broken ones are caught: every clause they "
        "must break reports DEVIATES, with the diagnosis named where the suite knows the bug. "
        f"**{recognised} of {len(variants)}** legitimate variants are recognised: reported as "
        "their named VARIANT, with no clause deviating. `tests/test_mutants.py` fails otherwise; "
        "`python -m tests.mutants` writes this table to `build/docs-data/detection.json`.",
        "",
        f"Diagnoses: **{quality['right']}** right (the bug is named), {quality['unknown']} "
        f"unknown (\"cause unknown\": no model of the bug matched), **{quality['wrong']}** "
        "wrong (another bug named).",
        "",
        "### Broken implementations",
        "",
        "| bug | what is wrong | must deviate | diagnosis | caught |",
        "|---|---|---|---|---|",
    ]
    for r in broken:
        expected = r["expected_clauses"]
        diagnosis = f"`{r['diagnosis']}`" if r["diagnosis"] else "(none known)"
        if r["expected_diagnosis"] and r["diagnosis"] != r["expected_diagnosis"]:
            diagnosis += f" (expected `{r['expected_diagnosis']}`)"
        diagnosis += f" ({r.get('diagnosis_quality', '?')})"
        mark = "yes" if r["detected"] else "**no**"  # every clause it must break deviates
        out.append(f"| `{r['mutant']}` | {S.md_text(r['bug'])} | {_clauses(expected)} | "
                   f"{diagnosis} | {mark} |")
    out += [
        "",
        "### Legitimate variants",
        "",
        "| variant | what is different | must be named | recognised |",
        "|---|---|---|---|",
    ]
    for r in variants:
        named = "<br>".join(f"{_clauses([c])}: `{v}`" for c, v in r["expected_variants"])
        named = named or "none: conforms to every clause"
        mark = "yes" if r["recognised"] else "**no**"
        out.append(f"| `{r['variant']}` | {S.md_text(r['description'])} | {named} | {mark} |")
    outside = data.get("outside", [])
    if outside:
        agree = sum(bool(r["agrees"]) for r in outside)
        out += [
            "",
            "### The outside corpus",
            "",
            f"Transformers written from scratch, cut differently from the reference "
            f"(`tests/outside/`), correct ones and broken ones. For **{agree} of "
            f"{len(outside)}** the suite gives every clause the verdict a careful reader of the "
            "paper gives it (`tests/test_outside.py` pins each, with the reason).",
            "",
            "| implementation | deviates (as it must) | diagnosed | agrees |",
            "|---|---|---|---|",
        ]
        for r in outside:
            deviating = _clauses(r["deviating"]) if r["deviating"] else "none: correct code"
            quality = r["diagnosis_quality"] or ""
            mark = "yes" if r["agrees"] else "**no**"
            out.append(f"| `{r['outside']}` | {deviating} | {quality} | {mark} |")
    return [*out, ""]


write("conformance.md", matrix_page())


# -- a page per library of the matrix ------------------------------------------------------------


def library_page(impl: str, label: str) -> str:
    """What differs from the paper in one library: every clause that does not CONFORM, the
    suite's reading of it and the library source that explains it (the pin of
    ``tests/matrix/<impl>.py``)."""
    about, pins = LIBRARIES[impl]
    out = [f"# {S.md_text(label)}: what differs from the paper", "", f"{S.md_text(about)}.", ""]
    report = REPORTS[impl]
    if report is None:
        return "\n".join([*out, "This build did not run the suite against it.", ""])
    rows = [r for r in report["clauses"] if r["verdict"] != "CONFORMS"]
    counts = ", ".join(f"{n} {v}" for v, n in report.get("summary", {}).items() if n)
    verdicts = {r["id"]: r["verdict"] for r in report["clauses"]}
    out += [architecture.svg("../../", verdicts, label), ""]
    out += [
        f"Verdicts: {counts}. Every clause not listed below CONFORMS. `python -m spec --impl "
        f"{impl}` reproduces them (`pip install -e '.[matrix]'`); `tests/test_matrix.py` pins "
        "each, with the place in the library's source that explains it (quoted below).",
        "",
    ]
    for r in rows:
        cid = r["id"]
        title = S.CLAUSES[cid].title if cid in S.CLAUSES else ""
        out += [f"## {S.md_text(cid)} · {S.md_text(title)}", "",
                f"{S.badge(r['verdict'])} {detail(r)} ({S.clause_link(cid, 'the clause')})", ""]
        pin = pins.get(cid)
        if pin is not None and pin[0] == r["verdict"]:
            out += [f"**In the library's source:** {S.md_text(pin[2])}", ""]
        else:
            out += ["**Not pinned:** this verdict differs from the one `tests/test_matrix.py` "
                    "expects; the test run says why.", ""]
    return "\n".join(out)


for _impl, _label in S.IMPLEMENTATIONS.items():
    if _impl in LIBRARIES:
        write(f"matrix/{_impl}.md", library_page(_impl, _label))


# -- API reference -------------------------------------------------------------------------------
def api_pages(package: str) -> list[tuple[str, str]]:
    """(module, page path) for ``package`` and its public modules, in a stable order."""
    root = S.ROOT / package
    pages = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(S.ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        module = ".".join(parts)
        doc = (
            "reference/" + "/".join(parts) + ("/index.md" if path.name == "__init__.py" else ".md")
        )
        pages.append((module, doc))
    return pages


api_nav: dict[str, list[tuple[str, str]]] = {}
for package in ("spec", "transformer"):
    pages = api_pages(package)
    api_nav[package] = pages
    for module, doc in pages:
        is_package = doc.endswith("index.md")
        opts = {"heading_level": 1, "members": False} if is_package else {"heading_level": 1}
        body = [f"::: {module}", options(**opts)]
        if is_package:
            children = [(m, d) for m, d in pages if m.startswith(module + ".") and m != module]
            direct = [(m, d) for m, d in children if m.count(".") == module.count(".") + 1]
            body += ["", "## Modules", ""]
            for m, _d in direct:
                body.append(f"- [`{m}`][{m}]")
            if module == "spec.suite":
                body += [
                    "",
                    "Each test module checks one paper section; every test is marked with the "
                    "clause it checks, and its documentation links to the clause.",
                ]
        write(doc, "\n".join(body) + "\n")


# -- navigation ----------------------------------------------------------------------------------
def nav() -> str:
    lines = [
        "* [Home](index.md)",
        "* [Point the suite at your own implementation](guide/own-implementation.md)",
        "* [The adapter protocol](protocol.md)",
        "* [Conformance matrix](conformance.md)",
        "* What the libraries change",
        *(f"    * [{S.IMPLEMENTATIONS[impl]}](matrix/{impl}.md)" for impl in LIBRARIES),
        "* [Figures](figures.md)",
        "* [Security](security.md)",
        "* [Performance](performance.md)",
        "* Specification",
        "    * [Overview](clauses/index.md)",
    ]
    for section, title, _ in SECTIONS:
        lines.append(f"    * [{S.section_label(section, title)}]({S.section_page(section)})")
    lines.append("* API reference")
    for package, pages in api_nav.items():
        lines.append(f"    * {package}")
        for module, doc in pages:
            lines.append(f"        * [{module}]({doc})")
    return "\n".join(lines) + "\n"


write("SUMMARY.md", nav())
