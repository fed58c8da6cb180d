"""A griffe extension: clause ids in docstrings become links to the clause pages.

* Every registered clause id named in a docstring (``Implements: 3.2.1/eq1, ...`` or
  ``(3.2.2/heads-split-by-projection)``) becomes an autorefs cross-reference to the clause's
  anchor, so rendered API pages link code to the specification. Ids inside code spans, code
  blocks or quotes are left alone.
* Sphinx roles (``:func:`name```) become cross-references where the target is rendered on
  this site, and code otherwise.
* A test function of ``spec.suite`` marked ``@pytest.mark.clause("<id>")`` gets a first line
  "Checks clause <id>" linking to the clause, so that tests link to the clauses they check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import griffe

sys.path.insert(0, str(Path(__file__).parent))

from sitedata import CLAUSES, ID_PATTERN, anchor, md_text

MARKER = re.compile(r"""pytest\.mark\.clause\(\s*["']([^"']+)["']""")
CODE = re.compile(r"(`+[^`]*?`+)")


def link_clause_ids(text: str) -> str:
    """Turn clause ids outside code into ``[id][clause-anchor]`` cross-references."""
    out, literal, indent, previous = [], False, 0, ""
    for line in text.split("\n"):
        stripped = line.strip()
        width = len(line) - len(line.lstrip())
        if literal and stripped and width <= indent:
            literal = False
        if not literal and previous.endswith("::") and not stripped:
            literal, indent = True, len(previous) - len(previous.lstrip())
        if stripped:
            previous = line.rstrip()
        if literal or line.lstrip().startswith("```"):
            out.append(line)
            continue
        parts = CODE.split(line)
        out.append("".join(p if i % 2 else ID_PATTERN.sub(_link, p) for i, p in enumerate(parts)))
    return "\n".join(out)


def _link(match: re.Match[str]) -> str:
    cid = match.group(1)
    if cid not in CLAUSES:
        return cid
    return f"[{cid}][{anchor(cid)}]"


ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj):`~?\.?([\w.]+)(?:\(\))?`")
PACKAGES = ("spec", "transformer")


class ClauseLinks(griffe.Extension):
    """Link clause ids and Sphinx roles in docstrings; say which clause each suite test checks."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name not in PACKAGES:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None:
                text = ROLE.sub(lambda m, obj=obj: _role(m, obj, loader), obj.docstring.value)
                obj.docstring.value = link_clause_ids(text)
            if isinstance(obj, griffe.Function) and obj.name.startswith("test_"):
                _say_what_it_checks(obj)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found += _walk(member)  # type: ignore[arg-type]
    return found


def _role(match: re.Match[str], obj: griffe.Object, loader: griffe.GriffeLoader) -> str:
    """``:func:`name``` -> a cross-reference when ``name`` is rendered on this site, else code."""
    name = match.group(1)
    code = f"`{name}`"
    try:
        path = name if name.split(".")[0] in PACKAGES else obj.resolve(name)
        target = loader.modules_collection.get_member(path)
        if target.is_alias:
            target = target.final_target
    except Exception:  # not ours, or not found: plain code
        return code
    parts = target.path.split(".")
    if parts[0] not in PACKAGES or any(p.startswith("_") for p in parts):
        return code
    if not (target.has_docstring or target.is_module):
        return code
    return f"[`{name}`][{target.path}]"


def _say_what_it_checks(obj: griffe.Function) -> None:
    checked = [
        m.group(1)
        for d in obj.decorators
        if (m := MARKER.search(str(d.value))) and m.group(1) in CLAUSES
    ]
    if not checked:
        return
    line = "Checks " + ", ".join(
        f"clause [{cid}][{anchor(cid)}]: *{md_text(CLAUSES[cid].title)}*." for cid in checked
    )
    if obj.docstring is None:
        obj.docstring = griffe.Docstring(line, parent=obj)
    else:
        obj.docstring.value = f"{line}\n\n{obj.docstring.value}"
