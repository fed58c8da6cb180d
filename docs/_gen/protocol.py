"""mkdocs-gen-files script: ``protocol.md``, the adapter protocol as one page.

Everything on the page comes from the code: the methods and declarations from the registries
:data:`spec.adapter.METHODS` and :data:`spec.adapter.ATTRIBUTES`, the conventions and the
canonical parameter names from the sections of ``spec.adapter``'s docstring, what a missing
method is reported as from :class:`spec.adapter.NotProvided` and :func:`spec.adapter.capability`,
what every call is checked for from the tables of :mod:`spec.guard`, and which clauses use a
method from the suite's source (:func:`clauses_using`).

Imported by the project's tests, it writes nothing: the page is written only when
mkdocs-gen-files runs it.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import re
import sys
import types
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sitedata as S
from griffe_clauses import link_clause_ids

import spec.adapter
from spec import guard
from spec.adapter import (
    ARCHITECTURES,
    ATTRIBUTES,
    DECLARATIONS,
    METHODS,
    Method,
    NotProvided,
    capability,
)

PAGE = "protocol.md"
"""The generated page, relative to ``docs/``."""

SUITE = S.ROOT / "spec" / "suite"
HELPERS = "spec.suite.helpers"


def anchor(method: str) -> str:
    """The HTML id of a method's section: ``attention`` -> ``method-attention``."""
    return f"method-{method}"


# -- which clauses use a method --------------------------------------------------------------------
@dataclasses.dataclass
class _Definition:
    """What one top-level definition of a suite module (a function, a class body, a method of a
    class, a constant) says about adapter methods: the names it passes to ``require`` /
    ``has`` as literals, the method names it spells anywhere, whether it passes them a
    variable; and the bare names and the attributes (with the name they are read from) it
    reads."""

    passed: set[str]
    spelled: set[str]
    variable: bool
    names: set[str]
    attributes: set[tuple[str | None, str]]


def _read(nodes: Iterable[ast.AST]) -> _Definition:
    found = _Definition(set(), set(), False, set(), set())
    for node in nodes:
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                    and sub.func.attr in ("require", "has") and sub.args):
                if isinstance(sub.args[0], ast.Constant):
                    found.passed.add(str(sub.args[0].value))
                else:
                    found.variable = True
            if isinstance(sub, ast.Constant) and sub.value in METHODS:
                found.spelled.add(str(sub.value))
            elif isinstance(sub, ast.Name):
                found.names.add(sub.id)
            elif isinstance(sub, ast.Attribute):
                base = sub.value.id if isinstance(sub.value, ast.Name) else None
                found.attributes.add((base, sub.attr))
    return found


class _Suite:
    """The definitions of the suite's modules (``spec/suite``, helpers included), and how a
    name read in one of them resolves to others."""

    def __init__(self) -> None:
        self.definitions: dict[tuple[str, str], _Definition] = {}
        self.constants: set[tuple[str, str]] = set()
        self.helpers: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        self.class_methods: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        self.from_helpers: dict[str, set[str]] = {}  # module -> names imported from the helpers
        self.helper_aliases: dict[str, set[str]] = {}  # module -> names of the helpers package
        for path in sorted(SUITE.rglob("*.py")):
            self._add(".".join(path.relative_to(S.ROOT).with_suffix("").parts),
                      ast.parse(path.read_text(encoding="utf-8")))

    def _add(self, module: str, tree: ast.Module) -> None:
        self.from_helpers[module], self.helper_aliases[module] = set(), set()
        for stmt in tree.body:
            if isinstance(stmt, ast.ImportFrom):
                bound = {alias.asname or alias.name: alias.name for alias in stmt.names}
                if stmt.level or (stmt.module or "").startswith(HELPERS):
                    self.from_helpers[module] |= set(bound)
                elif stmt.module == "spec.suite":
                    self.helper_aliases[module] |= {k for k, v in bound.items() if v == "helpers"}
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._define(module, stmt.name, _read([stmt]))
            elif isinstance(stmt, ast.ClassDef):
                functions = [f for f in stmt.body if isinstance(f, ast.FunctionDef)]
                rest = [s for s in stmt.body if s not in functions]
                self._define(module, stmt.name, _read([*stmt.decorator_list, *stmt.bases, *rest]))
                for f in functions:
                    key = (module, f"{stmt.name}.{f.name}")
                    self.definitions[key] = _read([f])
                    self.class_methods[f.name].append(key)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self._define(module, target.id, _read([stmt]))
                        self.constants.add((module, target.id))

    def _define(self, module: str, name: str, definition: _Definition) -> None:
        self.definitions[(module, name)] = definition
        if module.startswith(HELPERS):
            self.helpers[name].append((module, name))

    def _reads(self, key: tuple[str, str]) -> Iterator[tuple[str, str]]:
        """The definitions that ``key`` reads: its module's own by name, the helpers by the
        names it imports or reads from the helpers package, methods of the suite's classes by
        attribute name."""
        module, definition = key[0], self.definitions[key]
        for name in definition.names:
            if (module, name) in self.definitions:
                yield (module, name)
            elif name in self.from_helpers[module]:
                yield from self.helpers.get(name, [])
        for base, attribute in definition.attributes:
            if base in self.helper_aliases[module]:
                yield from self.helpers.get(attribute, [])
            else:
                yield from self.class_methods.get(attribute, [])

    def _named(self, key: tuple[str, str]) -> set[str]:
        """The adapter methods that ``key`` itself names for ``require`` / ``has``."""
        definition, reads = self.definitions[key], set(self._reads(key))
        if not (definition.variable or any(self.definitions[r].variable for r in reads
                                           if r not in self.constants)):
            return set(definition.passed)
        # a name passed through a variable (here, or to a function that passes it on): every
        # method name spelled here or in a constant read here may be the one
        constants = (self.definitions[r].spelled for r in reads if r in self.constants)
        return definition.passed | definition.spelled | set().union(*constants)

    def methods_reached(self, key: tuple[str, str]) -> set[str]:
        """The adapter methods named by ``key`` and by everything it reads, transitively."""
        seen, todo, methods = {key}, [key], set()
        while todo:
            current = todo.pop()
            methods |= self._named(current)
            for used in self._reads(current):
                if used not in seen:
                    seen.add(used)
                    todo.append(used)
        return methods


def clauses_using() -> dict[str, list[str]]:
    """Adapter method -> the clauses whose tests may call it, in registry order.

    Read from the suite's source with ``ast``: a clause uses a method when one of its test
    functions passes the method's name to ``clause.require`` / ``clause.has``, or reads a
    function of its module, a helper of ``spec.suite.helpers`` or a method of one of the
    suite's classes that does, followed transitively. A name passed as a literal counts; where
    the name is a variable (a loop over names, a parameter), every method name spelled in that
    function and in the module constants it reads counts, and so in a function that calls one
    with such a variable. Every branch counts, so a clause may be listed for a method that only
    one of its paths calls (a helper shared by the encoder's and the decoder's clauses names
    both stacks).
    """
    suite = _Suite()
    found: dict[str, set[str]] = {name: set() for name in METHODS}
    for cid, tests in S.tests_by_clause().items():
        for test in tests:
            for name in suite.methods_reached((test.module, test.name)):
                found[name].add(cid)
    order = list(S.CLAUSES)
    return {name: sorted(cids, key=order.index) for name, cids in found.items()}


# -- what the code says about each method ------------------------------------------------------
def docstring_section(title: str) -> str:
    """The body of the section ``title`` (a heading underlined with ``-``) of the docstring of
    :mod:`spec.adapter`."""
    doc = spec.adapter.__doc__ or ""
    match = re.search(rf"^{re.escape(title)}\n-+\n(.*?)(?=^[^\n]+\n-+\n|\Z)", doc, re.M | re.S)
    if match is None:
        raise LookupError(f"spec.adapter's docstring has no section {title!r}")
    return match.group(1).strip()


def when_missing(name: str) -> list[str]:
    """What the report says when the adapter lacks ``name``, and which declared architectures
    leave it out (as :func:`spec.adapter.capability` decides)."""
    without = types.SimpleNamespace(name="adapter")
    explained = types.SimpleNamespace(name="adapter", not_provided={name: "why"})
    lines = [f"the clauses that need it report {_message(without, name)}; with "
             f"`not_provided = {{\"{name}\": \"why\"}}`: {_message(explained, name)}"]
    for architecture in ARCHITECTURES[1:]:
        if name in left_out(architecture):
            declared = _adapter(architecture)
            lines.append(f"an adapter that declares `architecture = \"{architecture}\"` has "
                         f"none: {_message(declared, name)}")
    return lines


def left_out(architecture: str) -> list[str]:
    """The methods that an adapter declaring ``architecture`` cannot provide (as
    :func:`spec.adapter.capability` decides for an adapter that has them all)."""
    declared = _adapter(architecture)
    out = []
    for name in METHODS:
        try:
            capability(declared, name)
        except NotProvided:
            out.append(name)
    return out


def _adapter(architecture: str) -> types.SimpleNamespace:
    """An adapter with every method, declaring ``architecture``."""
    return types.SimpleNamespace(name="adapter", architecture=architecture,
                                 **{name: _nothing for name in METHODS})


def _nothing(*args: object) -> None:
    return None


def _message(adapter: object, name: str) -> str:
    """NOT PROVIDED and the message of :func:`spec.adapter.capability` for ``adapter``."""
    try:
        capability(adapter, name)
    except NotProvided as exc:
        return f'NOT PROVIDED, "{S.md_text(str(exc))}"'
    raise RuntimeError(f"capability({name!r}) found a method the adapter does not have")


def checked_on_every_call(name: str) -> list[str]:
    """What :mod:`spec.guard` checks on every call of ``name``."""
    lines = ["its tensor arguments are unchanged after the call (else DEVIATES)"]
    if name in guard.TENSOR_OUTPUTS:
        same_dtype, same_device = guard.TENSOR_OUTPUTS[name]
        placement = " and ".join(
            what for what, check in (("dtype", same_dtype), ("device", same_device)) if check)
        lines.append(f"it returns a tensor with the {placement} of its inputs (else DEVIATES), "
                     "never the memory of an earlier result overwritten (else ERROR)")
    if name in guard.RETURNS:
        lines.append(f"it returns {guard.RETURNS[name][1]} (else ERROR)")
    return lines


# -- the page ---------------------------------------------------------------------------------
def _cell(text: str) -> str:
    """Text for a Markdown table cell: ``|`` escaped outside code spans (inside them it does
    not end the cell, and a backslash would show)."""
    parts = re.split(r"(`[^`]*`)", text.replace("\n", " "))
    return "".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _method_link(name: str) -> str:
    return f"[`{name}`](#{anchor(name)})"


def _clauses(cids: list[str]) -> str:
    if not cids:
        return "none"
    return ", ".join(S.clause_link(cid) for cid in cids)


def _groups() -> dict[str, list[Method]]:
    groups: dict[str, list[Method]] = {}
    for method in METHODS.values():
        groups.setdefault(method.group, []).append(method)
    return groups


def method_section(method: Method, clauses: list[str]) -> str:
    """The section of one method: signature, what it computes, its arguments and their
    shapes, what it returns, its rules, what every call is checked for, the clauses that use
    it and what the report says without it."""
    version = f" (protocol version {method.version})" if method.version > 1 else ""
    lines = [
        f"### `{method.name}` {{ #{anchor(method.name)} }}",
        "",
        "```python",
        f"adapter.{method.signature}",
        "```",
        "",
        f"{method.does}{version}",
        "",
        "| argument | type and shape | meaning |",
        "|---|---|---|",
        *(f"| `{name}` | {_cell(kind)} | {_cell(meaning)} |"
          for name, kind, meaning in method.arguments),
        f"| **returns** | {_cell(method.returns)} | |",
        "",
    ]
    if method.rules:
        lines += ["**Rules**", "", *(f"- {rule}" for rule in method.rules), ""]
    lines += ["**Checked on every call**", "",
              *(f"- {line}" for line in checked_on_every_call(method.name)), ""]
    count = f"{len(clauses)} clause{'' if len(clauses) == 1 else 's'}"
    lines += [f"**Used by** ({count}): {_clauses(clauses)}", ""]
    lines += ["**When it is missing**", "", *(f"- {line}" for line in when_missing(method.name)),
              ""]
    return "\n".join(lines)


def _declarations() -> str:
    lines = ["| attribute | type | default | what it says | values |", "|---|---|---|---|---|"]
    for attribute in ATTRIBUTES.values():
        default = "required" if attribute.default is None else f"`{attribute.default}`"
        values = ", ".join(f'`"{v}"`' for v in DECLARATIONS.get(attribute.name, ()))
        says = attribute.says + (f" (protocol version {attribute.version})"
                                 if attribute.version > 1 else "")
        lines.append(f"| `{attribute.name}` | {_cell(attribute.type)} | {default} | "
                     f"{_cell(says)} | {values} |")
    return "\n".join(lines)


def _architectures() -> str:
    """Which methods each declared architecture leaves out."""
    return "\n".join(
        f"- `architecture = \"{architecture}\"` leaves out "
        f"{', '.join(map(_method_link, left_out(architecture)))}."
        for architecture in ARCHITECTURES[1:])


def _linked(markdown: str) -> str:
    """Docstring text for the page: its clause ids linked, as in the API pages."""
    return link_clause_ids(markdown)


def page(clauses: dict[str, list[str]] | None = None) -> str:
    """The Markdown of ``protocol.md``; ``clauses``: :func:`clauses_using` (read when None)."""
    clauses = clauses_using() if clauses is None else clauses
    groups = _groups()
    lines = [
        "[](){ #adapter-protocol }",
        "",
        "# The adapter protocol",
        "",
        "The suite never calls an implementation directly: it calls an **adapter**, an object "
        "with a `name` and some of the methods below, written in the paper's notation "
        "([how to write one](guide/own-implementation.md)). Every method is optional: the "
        "clauses that need a missing one report NOT PROVIDED, naming it.",
        "",
        "This page is generated from the code: the methods from "
        "[`spec.adapter.METHODS`][spec.adapter.METHODS], the declarations from "
        "[`spec.adapter.ATTRIBUTES`][spec.adapter.ATTRIBUTES], the conventions and the "
        "parameter names from [`spec.adapter`][spec.adapter]'s docstring, the checks made on "
        "every call from [`spec.guard`][spec.guard], and the clauses that use each method "
        "from the suite's source (the clauses whose tests, or the suite helpers they call, "
        "name the method; every branch counts, so a clause may be listed for a method that "
        "only one of its paths calls).",
        "",
        "## Conventions",
        "",
        _linked(docstring_section("Conventions at the boundary")),
        "",
        "Shapes below use `B` (batch), `S` and `T` (source and target length), `L_q` and "
        "`L_k` (query and key length), `V` (target vocabulary).",
        "",
        "## Methods",
        "",
        "| method | computes | returns | clauses |",
        "|---|---|---|---|",
    ]
    for method in METHODS.values():
        lines.append(f"| {_method_link(method.name)} | {_cell(method.does)} | "
                     f"{_cell(method.returns)} | {len(clauses[method.name])} |")
    lines += [
        "",
        "## Declarations",
        "",
        "Attributes an adapter may set besides its methods. Each defaults to what describes "
        "the paper's model, so an adapter written for protocol version 1 keeps working "
        "unchanged.",
        "",
        _declarations(),
        "",
        _architectures(),
        "",
        "## Canonical parameter names",
        "",
        _linked(docstring_section("Canonical parameter names")),
        "",
        "### Parameters beyond the table",
        "",
        _linked(docstring_section("Parameters beyond the table")),
        "",
        "## When a method is missing or misbehaves",
        "",
        "- A missing method (absent, or `None`) makes every clause that needs it NOT PROVIDED, "
        "with the reason from `not_provided` where the adapter gives one. A clause that can "
        "judge part of its statement without it (a sub-check per stack, say) is judged on the "
        "rest, and its report says what was not checked.",
        "- A method may raise [`NotProvided`][spec.adapter.NotProvided] itself, for inputs it "
        "does not support: only the sub-checks that need them are not checked.",
        "- An exception is an ERROR naming the method; so is a result of the wrong kind. A "
        "method that modifies its inputs in place, or returns a result in another dtype or on "
        "another device, DEVIATES, naming the method. What the suite guarantees when an "
        "implementation misbehaves, and what it cannot, is on the "
        "[security page](security.md#an-adapter-is-code-you-choose-to-run).",
        "",
    ]
    for group, methods in groups.items():
        lines += [f"## {group}", ""]
        lines += [method_section(method, clauses[method.name]) for method in methods]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    import mkdocs_gen_files

    with mkdocs_gen_files.open(PAGE, "w") as f:
        f.write(page())


if __name__ == "<run_path>":  # run by mkdocs-gen-files (runpy.run_path), not imported
    main()
