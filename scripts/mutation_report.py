"""Score a mutmut run of ``transformer/`` per module, and check its survivors.

    python scripts/mutation_report.py            # after `mutmut run` (nox -s mutation does both)
    python scripts/mutation_report.py --threshold 95 --core transformer.attention

Reads mutmut's results in ``mutants/`` (``mutants/transformer/*.py.meta``: the exit status of
every mutant) and prints, per module, how many mutants were killed, timed out, survived, had no
test reaching them, or something else; then the overall score and the score of the *core
modules* (:data:`CORE`). The score is the share of mutants killed (a failing test, a timeout
or a crash), where "no tests" counts as not killed.

Every mutant that survived must be explained in ``tests/mutation-equivalents.md``, and no
mutant may be left untested (no test reaching it, suspicious, not checked), or the run fails.
An entry there is

    ### `transformer.attention` `scaled_dot_product_attention`

    ```diff
    -scores = scores.masked_fill(~mask, float("-inf"))
    +scores = scores.masked_fill(~mask, float("-INF"))
    ```

    Why: one line on why no test can tell the mutant from the original.

A section may hold several ```diff blocks that share one reason (three mutations of the same
argument, say); each block is matched on its own.

**Matching.** A mutant matches an entry when the module and the function (``Class.method`` or
``function``) are the same and the diff of the mutated function against the original has the
same removed (``-``) and added (``+``) lines, each compared with its whitespace collapsed. The
diff is computed here from the generated file (original copy versus mutant, the generated
names put back to the function's own). It does not use mutmut's mutant numbers
(``x_forward__mutmut_17``), which change whenever code is added above a mutation, so an entry
stays valid while its line is unchanged, wherever the line moves. An entry that matches no
current survivor is reported as stale (not an error): its line was changed, or a test kills it.

Exits 1 if the core score is below ``--threshold`` (default 90), a survivor is unexplained, or
a function escapes mutation because it is decorated (mutmut 3 skips those, but for
``@staticmethod`` and ``@classmethod``); the diffs of unexplained survivors are printed so that
they can be killed or listed.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.metadata
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = (
    "transformer.attention",
    "transformer.masks",
    "transformer.layers",
    "transformer.embeddings",
    "transformer.model",
    "transformer.training",
    "transformer.decoding",
    "transformer.config",
)
"""The core model modules: what the model computes, trains and decodes with. Outside them:
``transformer.checkpoint`` (file I/O; mutated and scored, its survivors must be explained too)
and ``transformer.toy`` (the toy-task CLI, not mutated: ``do_not_mutate`` in pyproject.toml)."""

# mutmut 3.8.1's exit statuses (mutmut.stats.status_by_exit_code); anything else is suspicious
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    2: "interrupted",
    None: "not checked",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "killed",  # caught by the type checker (not configured here)
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
}
KILLED = {"killed", "timeout", "segfault"}  # a crashed test run also tells the mutant apart
SEP = "ǁ"  # mutmut's separator in method names: xǁClassǁmethod__mutmut_3
NAME = re.compile(r"^(x_|x" + SEP + r")(?P<mangled>.+?)__mutmut_(?P<n>\w+)$")


@dataclass(frozen=True)
class Mutant:
    name: str  # mutmut's: transformer.attention.xǁMultiHeadAttentionǁforward__mutmut_3
    module: str  # transformer.attention
    function: str  # MultiHeadAttention.forward
    status: str
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        return (self.module, self.function, self.removed, self.added)

    def diff(self) -> str:
        lines = [f"-{line}" for line in self.removed] + [f"+{line}" for line in self.added]
        return "\n".join(lines)


@dataclass
class Entry:
    module: str
    function: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    why: str
    line: int
    matched: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        return (self.module, self.function, self.removed, self.added)


def normalise(line: str) -> str:
    return " ".join(line.split())


def function_of(generated: str) -> str:
    """``xǁMultiHeadAttentionǁforward__mutmut_3`` -> ``MultiHeadAttention.forward``."""
    match = NAME.match(generated)
    if match is None:
        raise ValueError(f"not a mutmut mutant name: {generated}")
    mangled = match["mangled"]
    return mangled.replace(SEP, ".") if match[1] == "x" + SEP else mangled


def generated_sources(path: Path) -> dict[str, list[str]]:
    """The source lines of every generated function in a mutated file, by generated name."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            assert node.end_lineno is not None
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            out[node.name] = lines[start - 1 : node.end_lineno]
    return out


def changed_lines(original: list[str], mutant: list[str]) -> tuple[tuple[str, ...], ...]:
    """The removed and added lines, whitespace collapsed."""
    removed, added = [], []
    for line in difflib.ndiff(original, mutant):
        if line.startswith("- "):
            removed.append(normalise(line[2:]))
        elif line.startswith("+ "):
            added.append(normalise(line[2:]))
    return tuple(removed), tuple(added)


def load_mutants(mutants_dir: Path) -> list[Mutant]:
    metas = sorted((mutants_dir / "transformer").rglob("*.py.meta"))
    if not metas:
        raise SystemExit(f"no mutmut results under {mutants_dir}/transformer: run `mutmut run`")
    out = []
    for meta in metas:
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        if not codes:
            continue
        source = meta.with_name(meta.name.removesuffix(".meta"))
        functions = generated_sources(source)
        for name, code in codes.items():
            module, _, generated = name.rpartition(".")
            status = STATUS.get(code, "suspicious")
            function = function_of(generated)
            removed: tuple[str, ...] = ()
            added: tuple[str, ...] = ()
            if status not in KILLED:
                stem = generated.partition("__mutmut_")[0]
                original = functions[stem + "__mutmut_orig"]
                plain = function.split(".")[-1]
                mutant = [line.replace(generated, plain) for line in functions[generated]]
                original = [line.replace(stem + "__mutmut_orig", plain) for line in original]
                removed, added = changed_lines(original, mutant)
            out.append(Mutant(name, module, function, status, removed, added))
    return out


HEADING = re.compile(r"^###\s+`(?P<module>[\w.]+)`\s+`(?P<function>[\w.]+)`\s*$")


def load_entries(path: Path) -> list[Entry]:
    """Parse the equivalents file (format: see the module docstring): one :class:`Entry` per
    ```diff block, each with the heading and the ``Why:`` line of its section."""
    if not path.exists():
        return []
    entries: list[Entry] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if HEADING.match(line)]
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        heading = HEADING.match(lines[start])
        assert heading is not None
        section = lines[start + 1 : end]
        whys = [line[4:].strip() for line in section if line.startswith("Why:")]
        diffs = [start + 2 + j for j, line in enumerate(section) if line.startswith("```diff")]
        if not diffs or not whys or not whys[0]:
            raise SystemExit(
                f"{path}:{start + 1}: an entry needs a ```diff block and a 'Why:' line"
            )
        for first in diffs:  # 1-based line of the ```diff fence
            removed, added = [], []
            j = first
            while j < end and not lines[j].startswith("```"):
                if lines[j].startswith("-"):
                    removed.append(normalise(lines[j][1:]))
                elif lines[j].startswith("+"):
                    added.append(normalise(lines[j][1:]))
                j += 1
            if not (removed or added):
                raise SystemExit(f"{path}:{first}: an empty ```diff block")
            module, function = heading["module"], heading["function"]
            entries.append(Entry(module, function, tuple(removed), tuple(added), whys[0], first))
    return entries


def score(mutants: list[Mutant]) -> tuple[int, int, float]:
    killed = sum(m.status in KILLED for m in mutants)
    total = sum(m.status != "skipped" for m in mutants)
    return killed, total, 100.0 * killed / total if total else 100.0


def unmutated(mutants_dir: Path) -> tuple[list[str], list[str]]:
    """What mutmut left alone: modules with functions but no results (``do_not_mutate``), and
    decorated functions (mutmut 3 mutates none but @staticmethod and @classmethod ones)."""
    modules, functions = [], []
    for path in sorted((ROOT / "transformer").glob("*.py")):
        module = "transformer." + path.stem
        tree = ast.parse(path.read_text(encoding="utf-8"))
        has_functions = any(isinstance(n, ast.FunctionDef) for n in ast.walk(tree))
        if has_functions and not (mutants_dir / "transformer" / (path.name + ".meta")).exists():
            modules.append(module)
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                scopes = [(node.name + ".", n) for n in node.body]
            elif isinstance(node, ast.Module):
                scopes = [("", n) for n in node.body]
            else:
                continue
            for prefix, fn in scopes:
                if not isinstance(fn, ast.FunctionDef) or not fn.decorator_list:
                    continue
                names = [ast.unparse(d) for d in fn.decorator_list]
                if names in (["staticmethod"], ["classmethod"]):
                    continue
                functions.append(f"{module}.{prefix}{fn.name} (@{', @'.join(names)})")
    return modules, functions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", type=Path, default=ROOT / "mutants", help="mutmut's folder")
    p.add_argument("--equivalents", type=Path, default=ROOT / "tests" / "mutation-equivalents.md")
    p.add_argument("--threshold", type=float, default=90.0, help="minimum core score, percent")
    p.add_argument("--core", nargs="+", default=list(CORE), help="the core modules")
    args = p.parse_args(argv)

    mutants = load_mutants(args.mutants)
    entries = load_entries(args.equivalents)
    by_key: dict[tuple, Entry] = {}
    for entry in entries:
        if entry.key in by_key:
            print(f"{args.equivalents}:{entry.line}: duplicate of line {by_key[entry.key].line}")
            return 1
        by_key[entry.key] = entry

    try:
        tool = f"mutmut {importlib.metadata.version('mutmut')}"
    except importlib.metadata.PackageNotFoundError:
        tool = "mutmut"
    print(f"mutation score of transformer/ ({tool}, results in {args.mutants})\n")
    columns = ("killed", "timeout", "survived", "no tests", "other", "total", "score")
    modules = sorted({m.module for m in mutants})
    print(f"{'module':<26}" + "".join(f"{c:>10}" for c in columns))
    for module in modules:
        group = [m for m in mutants if m.module == module]
        counts = {c: sum(m.status == c for m in group) for c in ("killed", "timeout", "survived")}
        counts["no tests"] = sum(m.status == "no tests" for m in group)
        counts["other"] = len(group) - sum(counts.values())
        _, _, pct = score(group)
        marker = "*" if module in args.core else " "
        print(
            f"{module + marker:<26}"
            + "".join(f"{counts[c]:>10}" for c in columns[:5])
            + f"{len(group):>10}{pct:>9.1f}%"
        )
    killed, total, overall = score(mutants)
    core = [m for m in mutants if m.module in args.core]
    core_killed, core_total, core_score = score(core)
    print(f"\noverall: {killed}/{total} killed ({overall:.1f}%)")
    print(
        f"core modules (*): {core_killed}/{core_total} killed ({core_score:.1f}%), "
        f"threshold {args.threshold:g}%"
    )

    unexplained: list[Mutant] = []
    for m in mutants:
        if m.status in KILLED:
            continue
        match = by_key.get(m.key) if m.status == "survived" else None
        if match is None:
            unexplained.append(m)
        else:
            match.matched.append(m.name)
    explained = sum(len(e.matched) for e in entries)
    print(f"survivors explained as equivalent in {args.equivalents}: {explained}")
    stale = [e for e in entries if not e.matched]
    for e in stale:
        print(f"  stale entry (no such survivor now): line {e.line}, {e.module} {e.function}")
    modules, functions = unmutated(args.mutants)
    if modules:
        print("modules not mutated: " + ", ".join(modules))

    failed = False
    if functions:
        print("FAILED: mutmut does not mutate decorated functions; not tested:")
        print("  " + "\n  ".join(functions))
        print("  (put the decorator's effect in the body, as `with torch.no_grad():`)")
        failed = True
    if core_score < args.threshold:
        print(f"FAILED: core score {core_score:.1f}% < {args.threshold:g}%")
        failed = True
    if unexplained:
        print(f"FAILED: {len(unexplained)} survivors neither killed nor explained:")
        for m in unexplained:
            print(f"\n### `{m.module}` `{m.function}`  ({m.status}: {m.name})\n")
            print("```diff\n" + m.diff() + "\n```")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
