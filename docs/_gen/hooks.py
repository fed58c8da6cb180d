"""mkdocs hook: "Referenced by" lists under the clause headings (backlinks).

mkdocstrings shows backlinks under rendered objects; clause anchors are plain anchors, so this
hook asks the autorefs plugin for the pages that reference each clause and puts the list in the
placeholder that ``pages.py`` leaves in every clause block.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

sys.path.insert(0, str(Path(__file__).parent))

import sitedata

PLACEHOLDER = re.compile(r'<div class="clause-backlinks" data-clause="([^"]+)"></div>')


def on_config(config: Any) -> Any:
    autorefs = config.plugins.get("autorefs")
    if autorefs is not None:
        autorefs.record_backlinks = True
    return config


@event_priority(-100)  # after mkdocs-gen-files has added the generated files
def on_files(files: Any, config: Any) -> Any:
    """The generated SUMMARY.md is the nav (literate-nav reads it), not a page of the site."""
    from mkdocs.structure.files import InclusionLevel

    summary = files.get_file_from_path("SUMMARY.md")
    if summary is not None:
        summary.inclusion = InclusionLevel.EXCLUDED
    return files


def _same_page(url: str) -> bool:
    return url.split("#", 1)[0] in ("", ".", "./")


def _render(autorefs: Any, clause_id: str, page_url: str) -> str:
    found = autorefs.get_backlinks(sitedata.anchor(clause_id), from_url=page_url)
    items = set()
    for backlinks in found.values():
        for backlink in backlinks:
            crumbs = [c for c in backlink.crumbs if c.url]
            if not crumbs or _same_page(crumbs[-1].url):
                continue
            # titles are the headings' HTML (mkdocstrings puts symbol badges in them)
            parts = [f'<a href="{html.escape(c.url)}">{c.title}</a>' for c in crumbs]
            items.add(" › ".join(parts))
    if not items:
        return ""
    lis = "".join(f"<li>{item}</li>" for item in sorted(items))
    return f'<div class="clause-backlinks"><p>Referenced by:</p><ul>{lis}</ul></div>'


@event_priority(-100)  # after autorefs (-50) has fixed the references and recorded backlinks
def on_env(env: Any, config: Any, files: Any) -> Any:
    autorefs = config.plugins.get("autorefs")
    for file in files:
        page = file.page
        if page is None or not page.content or "clause-backlinks" not in page.content:
            continue
        page.content = PLACEHOLDER.sub(
            lambda m, page=page: _render(autorefs, m.group(1), page.url), page.content
        )
    return env
