"""What the generated pages are made of: clauses, their tests, their reference code, reports.

Shared by the mkdocs-gen-files scripts (``reports.py``, ``figures.py``, ``pages.py``), the
griffe extension (``griffe_clauses.py``) and the mkdocs hook (``hooks.py``).

* Tests: the ``spec.suite`` modules are imported and every ``test_*`` function's
  ``@pytest.mark.clause("<id>")`` marker is read.
* Reference code: the docstrings of ``transformer/`` are scanned (statically, with ``ast``):
  a module's ``Implements:`` paragraph names the clauses it implements, and an object whose own
  docstring names a clause id (or the clause's section or equation) is the specific code.
* Reports: JSON conformance reports of each implementation of :data:`IMPLEMENTATIONS`, and
  the mutant corpus's detection table, made by running the suite (``python -m spec --impl NAME
  --conformance-json=PATH``) and the corpora (``python -m tests.mutants``) at build time and
  cached under ``build/docs-data/`` keyed by a hash of what they depend on
  (:func:`reports_key`, :func:`detection_key`). The project's test session makes the same
  results (the same suite runs, in-process) and keeps them there with :func:`keep`, so that a
  build after it runs nothing again.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import html
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from spec.clauses import CLAUSES, SECTIONS, Clause

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.plugins.attention_spec_docs")

DATA_DIR = Path(os.environ.get("ATTENTION_SPEC_DOCS_DATA") or ROOT / "build" / "docs-data")
"""Where the build keeps the suite's reports (and finds the optional mutant-corpus table)."""

DETECTION_JSON = Path(
    os.environ.get("ATTENTION_SPEC_DETECTION_JSON") or DATA_DIR / "detection.json"
)
"""The mutant corpus's detection table, written by ``python -m tests.mutants``."""

IMPLEMENTATIONS: dict[str, str] = {
    "reference": "reference (transformer)",
    "torch.nn": "torch.nn.Transformer",
    "hf-marian": "Hugging Face MarianMTModel",
    "hf-fsmt": "Hugging Face FSMTForConditionalGeneration",
    "hf-bart": "Hugging Face BartForConditionalGeneration",
    "x-transformers": "x-transformers XTransformer",
}
"""``--impl`` name -> how the pages call it. The build runs the suite against each."""

ID_PATTERN = re.compile(
    r"(?<![\w./'\"-])((?:\d+(?:\.\d+)*|practice|table\d+)/[a-z0-9]+(?:-[a-z0-9]+)*)"
)
"""A clause id in free text (not inside quotes: ``"3.2.1/scale"`` in code stays as it is)."""


PAPER = "https://arxiv.org/abs/1706.03762"
"""The paper on arXiv (Vaswani et al., 2017)."""

PAPER_SECTIONS: dict[str, tuple[str, str, int]] = {
    "3.1": ("3.1", "S3.SS1", 3),
    "3.2.1": ("3.2.1", "S3.SS2.SSS1", 4),
    "3.2.2": ("3.2.2", "S3.SS2.SSS2", 4),
    "3.2.3": ("3.2.3", "S3.SS2.SSS3", 5),
    "3.3": ("3.3", "S3.SS3", 5),
    "3.4": ("3.4", "S3.SS4", 5),
    "3.5": ("3.5", "S3.SS5", 6),
    "5.3": ("5.3", "S5.SS3", 7),
    "5.4": ("5.4", "S5.SS4", 7),
    "6.1": ("6.1", "S6.SS1", 8),
    "table3": ("Table 3", "S6.T3", 9),
}
"""Section id -> (how the paper names it, its anchor in arXiv's HTML rendering (ar5iv), its
page in the arXiv PDF (v7))."""


def paper_link(section: str) -> str | None:
    """Markdown linking the paper's part that a section of the suite checks: its place in the
    HTML rendering and its page in the PDF; None for the practice clauses."""
    if section not in PAPER_SECTIONS:
        return None
    name, html_anchor, page = PAPER_SECTIONS[section]
    where = f"§{name}" if name[0].isdigit() else name
    return (f"[{where} of the paper](https://ar5iv.labs.arxiv.org/html/1706.03762#{html_anchor})"
            f" ([arXiv:1706.03762]({PAPER}), page {page})")


def anchor(clause_id: str) -> str:
    """The autorefs identifier and HTML id of a clause: ``3.2.1/eq1`` -> ``clause-3.2.1-eq1``."""
    return "clause-" + clause_id.replace("/", "-")


def heading_id(clause_id: str) -> str:
    """The id of a clause's heading on its section page: ``3.2.1/eq1`` -> ``eq1``.

    Links to the clause anchor land here (autorefs resolves an anchor placed just above a
    heading to the heading), so URLs read ``clauses/3.2.1/#eq1``.
    """
    return clause_id.split("/", 1)[1]


def section_page(section: str) -> str:
    """The generated page of a paper section, relative to ``docs/``."""
    return f"clauses/{section}.md"


def clause_ids_in(text: str) -> list[str]:
    """The registered clause ids named in ``text``, in order, without repeats."""
    found = [m.group(1) for m in ID_PATTERN.finditer(text)]
    return list(dict.fromkeys(cid for cid in found if cid in CLAUSES))


# -- tests ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TestRef:
    """One test function of the suite and the clause its marker names."""

    module: str
    name: str
    clause: str
    line: int

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"


def suite_modules() -> list[str]:
    """The test modules of ``spec.suite``, in file-name order (= paper order)."""
    import spec.suite

    names = [
        m.name for m in pkgutil.iter_modules(spec.suite.__path__) if m.name.startswith("test_")
    ]
    return [f"spec.suite.{name}" for name in sorted(names)]


def tests_by_clause() -> dict[str, list[TestRef]]:
    """Clause id -> the suite's tests marked with it (tests naming unknown ids are reported)."""
    out: dict[str, list[TestRef]] = {cid: [] for cid in CLAUSES}
    for module_name in suite_modules():
        module = importlib.import_module(module_name)
        for name, func in vars(module).items():
            if not name.startswith("test_") or not callable(func):
                continue
            if getattr(func, "__module__", None) != module_name:
                continue
            marks = [m for m in getattr(func, "pytestmark", []) if m.name == "clause"]
            line = inspect.unwrap(func).__code__.co_firstlineno
            for mark in marks:
                cid = mark.args[0] if mark.args else None
                if cid not in CLAUSES:
                    log.warning(f"{module_name}.{name} is marked with unknown clause {cid!r}")
                    continue
                out[cid].append(TestRef(module_name, name, cid, line))
    for refs in out.values():
        refs.sort(key=lambda t: (t.module, t.line))
    return out


# -- reference code -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CodeRef:
    """A public object of ``transformer`` (module, class, function or method)."""

    path: str
    kind: str  # module, class, function, method
    docstring: str
    line: int

    @property
    def module(self) -> str:
        parts = self.path.split(".")
        return ".".join(parts[:2])

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1] if self.kind != "module" else self.path


def _implements(docstring: str) -> list[str]:
    """The clause ids of an ``Implements:`` paragraph (it ends at the first blank line)."""
    ids: list[str] = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        _, sep, rest = paragraph.partition("Implements:")
        if sep:
            ids += clause_ids_in(rest)
    return list(dict.fromkeys(ids))


def reference_objects() -> list[CodeRef]:
    """Every module of ``transformer`` and its public classes, functions and methods."""
    out: list[CodeRef] = []
    for path in sorted((ROOT / "transformer").glob("*.py")):
        if path.name.startswith("_") and path.name != "__init__.py":
            continue
        module = "transformer" if path.name == "__init__.py" else f"transformer.{path.stem}"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        out.append(CodeRef(module, "module", ast.get_docstring(tree) or "", 1))
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef) and not node.name.startswith("_"):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                doc = ast.get_docstring(node) or ""
                out.append(CodeRef(f"{module}.{node.name}", kind, doc, node.lineno))
                if isinstance(node, ast.ClassDef):
                    for sub in node.body:
                        if isinstance(sub, ast.FunctionDef) and not sub.name.startswith("_"):
                            doc = ast.get_docstring(sub) or ""
                            path_ = f"{module}.{node.name}.{sub.name}"
                            out.append(CodeRef(path_, "method", doc, sub.lineno))
    return out


def _equations(text: str) -> set[str]:
    return set(re.findall(r"Eq\. ?(\d+)", text))


def _own_text(docstring: str) -> str:
    """A docstring without its ``Attributes:``/``Args:`` sections (which only configure)."""
    return re.split(r"\n\s*(?:Attributes|Args|Arguments|Parameters):\s*\n", docstring)[0]


def code_by_clause() -> dict[str, list[CodeRef]]:
    """Clause id -> the reference objects that implement it, most specific first.

    An object implements a clause when its docstring (outside its ``Attributes:`` and
    ``Args:`` sections) names the clause id, or, in a module whose ``Implements:`` paragraph
    names the clause, the equation in the clause's title (``Eq. 2``). A module that implements
    the clause and has no such object stands for the clause itself.
    """
    objects = reference_objects()
    modules = {o.path: o for o in objects if o.kind == "module"}
    implements = {path: _implements(o.docstring) for path, o in modules.items()}
    own = {o.path: _own_text(o.docstring) for o in objects if o.kind != "module"}
    out: dict[str, list[CodeRef]] = {}
    for cid, clause in CLAUSES.items():
        chosen = [o for o in objects if cid in clause_ids_in(own.get(o.path, ""))]
        eqs = _equations(clause.title)
        for module_path, ids in implements.items():
            if cid not in ids:
                continue
            members = [o for o in objects if o.kind != "module" and o.module == module_path]
            picked = [o for o in members if o in chosen]
            picked += [o for o in members if eqs and eqs & _equations(own[o.path])]
            chosen += picked or [modules[module_path]]
        out[cid] = _outermost(chosen)
    return out


def _outermost(refs: list[CodeRef]) -> list[CodeRef]:
    """Drop methods whose class is listed too; keep the order, without repeats."""
    paths = {r.path for r in refs}
    kept = [r for r in refs if not (r.kind == "method" and r.path.rsplit(".", 1)[0] in paths)]
    return list(dict.fromkeys(kept))


# -- reports ---------------------------------------------------------------------------------------
_RUNS: dict[str, tuple[subprocess.Popen[bytes], Path | None, Path, str]] = {}


def report_path(impl: str) -> Path:
    return DATA_DIR / f"conformance-{impl}.json"


def _source_key(*extra: str) -> str:
    """A hash of everything a report depends on: the suite, the implementations (and
    ``extra``, folders or files under the root), the versions."""
    h = hashlib.sha256()
    for name in ("spec", "transformer", *extra):
        top = ROOT / name
        for path in [top] if top.is_file() else sorted(top.rglob("*.py")):
            h.update(path.relative_to(ROOT).as_posix().encode())
            h.update(path.read_bytes())
    h.update(importlib.metadata.version("torch").encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def reports_key() -> str:
    """The key of the conformance reports: the suite and the implementations (the libraries'
    adapters are in ``spec/``; their pinned versions come with the extra ``matrix``)."""
    return _source_key()


def detection_key() -> str:
    """The key of the detection table: the suite, the corpora and their meta-tests."""
    return _source_key("tests/mutants", "tests/test_mutants.py", "tests/outside",
                       "tests/test_outside.py", "tests/suite_run.py")


def keep(target: Path, text: str, key: str) -> None:
    """Keep ``text`` as ``target``, stamped with ``key`` (that of the sources it was made
    from), for a later build to reuse: how the test session hands over its results."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_text(text)
    target.with_suffix(".key").unlink(missing_ok=True)
    partial.replace(target)
    target.with_suffix(".key").write_text(key)


def _stale(target: Path, key: str, mode: str) -> bool:
    """Whether ``target`` must be made again (``mode`` ``run``, or no stamp of ``key``)."""
    stamp = target.with_suffix(".key")
    fresh = target.exists() and stamp.exists() and stamp.read_text() == key
    if fresh and mode == "auto":
        log.info(f"up to date: {target}")
        return False
    target.unlink(missing_ok=True)
    return True


def _start(
    name: str,
    command: list[str],
    target: Path,
    key: str,
    cwd: Path | None,
    threads: int,
    **env: str,
) -> None:
    """Run ``command`` in the background; :func:`_finish` waits for it and stamps ``target``.

    ``cwd=None``: in a new temporary directory (away from the checkout's ``conftest.py`` and
    ``pyproject.toml``), which :func:`_finish` removes."""
    log_path = target.with_suffix(".log")
    environ = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        **env,
    }
    environ.pop("PYTEST_ADDOPTS", None)
    log.info(f"running {name} (log: {log_path})")
    scratch = Path(tempfile.mkdtemp(prefix="attention-spec-docs-")) if cwd is None else None
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd or scratch, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    _RUNS[name] = (process, scratch, log_path, key)


def _finish(name: str, target: Path) -> dict[str, Any] | None:
    """Wait for the run ``name`` (if one was started) and read ``target`` (None: missing).

    Exit codes 0 and 1 (some tests failed: the report says which) keep the result."""
    if name in _RUNS:
        process, scratch, log_path, key = _RUNS.pop(name)  # started for this target
        code = process.wait()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if code not in (0, 1) or not target.exists():
            tail = log_path.read_text(errors="replace")[-3000:]
            log.error(f"{name} exited {code}:\n{tail}")
        else:
            target.with_suffix(".key").write_text(key)
    return json.loads(target.read_text()) if target.exists() else None


def start_reports() -> None:
    """Start, in the background, the suite against each implementation and the mutant corpus's
    meta-test (for its detection table), unless their results are cached.

    ``$ATTENTION_SPEC_DOCS_REPORTS``: ``auto`` (default: reuse results made from the same
    sources), ``run`` (always run them), ``skip`` (never run them; pages say so).
    """
    mode = os.environ.get("ATTENTION_SPEC_DOCS_REPORTS", "auto")
    if mode == "skip":
        return
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = reports_key()
    threads = max(1, (os.cpu_count() or 2) // len(IMPLEMENTATIONS))
    for impl in IMPLEMENTATIONS:
        target = report_path(impl)
        if _stale(target, key, mode):
            command = [
                sys.executable,
                "-m",
                "spec",
                "--impl",
                impl,
                f"--conformance-json={target}",
                "-q",
                "-p",
                "no:cacheprovider",
            ]
            _start(f"the conformance suite against {impl}", command, target, key, None, threads)
    corpus = ROOT / "tests" / "mutants"
    key = detection_key()
    if corpus.is_dir() and _stale(DETECTION_JSON, key, mode):
        # the longest job by far: on two workers it ends about when the reports do
        workers = ["-n", "2"] if importlib.util.find_spec("xdist") else ["-p", "no:xdist"]
        command = [sys.executable, "-m", "tests.mutants", *workers]
        _start(
            "the mutant corpus",
            command,
            DETECTION_JSON,
            key,
            ROOT,
            1,
            ATTENTION_SPEC_DETECTION_JSON=str(DETECTION_JSON),
        )


def reports() -> dict[str, dict[str, Any] | None]:
    """``--impl`` name -> its JSON report (waiting for runs in progress), or None."""
    return {
        impl: _finish(f"the conformance suite against {impl}", report_path(impl))
        for impl in IMPLEMENTATIONS
    }


def matrix_library(impl: str) -> tuple[str, dict[str, tuple[str, str | None, str]]] | None:
    """(what the library is, its pinned verdicts) for a library of the conformance matrix
    (``tests/matrix/<impl>.py``, checked by ``tests/test_matrix.py``); None for the others."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests import matrix

    if impl not in matrix.LIBRARIES:
        return None
    module = matrix.module(impl)
    return module.ABOUT, module.PINS


def detection() -> dict[str, Any] | None:
    """The mutant corpus's detection table (waiting for a run in progress), or None."""
    return _finish("the mutant corpus", DETECTION_JSON)


# -- rendering helpers -------------------------------------------------------------------------
def badge(verdict: str | None) -> str:
    """An HTML badge for a verdict (``None``: not run)."""
    if not verdict:
        return '<span class="verdict verdict--none">not run</span>'
    css = verdict.lower().replace(" ", "-")
    return f'<span class="verdict verdict--{css}">{html.escape(verdict)}</span>'


def md_text(text: str) -> str:
    """Plain text made safe for Markdown (emphasis, links, HTML, math); `code` stays code."""

    def plain(part: str) -> str:
        return re.sub(r"([\\`*_\[\]$|])", r"\\\1", html.escape(part, quote=False))

    if text.count("`") % 2:
        return plain(text)
    parts = re.split(r"(`[^`]+`)", text)
    return "".join(part if i % 2 else plain(part) for i, part in enumerate(parts))


def clause_link(cid: str, text: str | None = None) -> str:
    """A Markdown cross-reference to a clause, resolved by autorefs from any page."""
    return f"[{md_text(text or cid)}][{anchor(cid)}]"


FIGURES: dict[str, tuple[str, str]] = {
    "positional-encoding.png": ("3.5", "The sinusoidal positional encoding (3.5)"),
    "wavelengths.png": ("3.5", "The wavelengths form a geometric progression (3.5)"),
    "masks.png": ("3.2.3", "Padding and causal masks (True = may attend)"),
    "learning-rate.png": ("5.3", "The learning-rate schedule of Eq. 3"),
    "attention-maps.png": ("3.2.2", "Attention maps of a toy model trained to reverse sequences"),
    "training-loss.png": ("practice", "Training loss of the toy model"),
}
"""Figure file (under ``figures/``) -> (the section whose page shows it too, caption)."""


def section_label(section: str, title: str) -> str:
    """How pages and the nav name a section: "3.2.1 Scaled dot-product attention"."""
    if section == "practice":
        return title
    if section.startswith("table"):
        return f"Table {section.removeprefix('table')}: {title}"
    return f"{section} {title}"


def sections_in_order() -> list[tuple[str, str, list[Clause]]]:
    """(section id, title, clauses) for every section that has clauses, in paper order."""
    grouped: dict[str, list[Clause]] = {s: [] for s in SECTIONS}
    for clause in CLAUSES.values():
        grouped.setdefault(clause.section, []).append(clause)
    return [(s, SECTIONS.get(s, s), cs) for s, cs in grouped.items() if cs]
