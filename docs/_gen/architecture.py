"""The model architecture, drawn by the project as inline SVG: every box links to the clause
that states it, and can be coloured by an implementation's verdicts (the conformance matrix).

Laid out like the paper's Figure 1: the encoder on the left, the decoder on the right, the
output layers on top; each box names the clause it links to in its tooltip.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from sitedata import CLAUSES, heading_id

# (x, y, width, height, label, clause id): the paper's Figure 1, bottom to top
BOXES: list[tuple[int, int, int, int, str, str]] = [
    # encoder
    (20, 500, 190, 34, "Input Embedding × √d_model", "3.4/scale"),
    (20, 450, 190, 34, "+ Positional Encoding", "3.5/added"),
    (30, 380, 170, 34, "Multi-Head Attention", "3.2.3/encoder-self"),
    (30, 336, 170, 28, "Add & Norm", "3.1/residual-norm"),
    (30, 276, 170, 34, "Feed Forward", "3.3/eq2"),
    (30, 232, 170, 28, "Add & Norm", "3.1/residual-norm"),
    # decoder
    (250, 500, 190, 34, "Output Embedding (shifted right)", "3.1/shifted-right"),
    (250, 450, 190, 34, "+ Positional Encoding", "3.5/formula"),
    (260, 380, 170, 34, "Masked Multi-Head Attention", "3.2.3/decoder-self"),
    (260, 336, 170, 28, "Add & Norm", "3.1/residual-norm"),
    (260, 276, 170, 34, "Multi-Head Attention (memory)", "3.2.3/cross-attention"),
    (260, 232, 170, 28, "Add & Norm", "3.1/residual-norm"),
    (260, 172, 170, 34, "Feed Forward", "3.3/eq2"),
    (260, 128, 170, 28, "Add & Norm", "3.1/residual-norm"),
    (260, 70, 170, 30, "Linear (tied weights)", "3.4/weight-tying"),
    (260, 20, 170, 30, "Softmax", "3.4/output-softmax"),
    # the parts inside every attention box
    (480, 380, 200, 34, "Scaled Dot-Product Attention", "3.2.1/eq1"),
    (480, 330, 200, 34, "h heads of d_model / h", "3.2.2/eq"),
    (480, 276, 200, 34, "Dropout on sub-layers", "5.4/residual-dropout"),
    (480, 226, 200, 34, "Label smoothing ε = 0.1", "5.4/label-smoothing"),
    (480, 176, 200, 34, "Beam search, α = 0.6", "6.1/beam-search"),
]
FRAMES: list[tuple[int, int, int, int, str, str]] = [
    (20, 222, 190, 204, "N× encoder layers", "3.1/encoder-stack"),
    (250, 118, 190, 308, "N× decoder layers", "3.1/decoder-layer"),
]
"""The stacks: (x, y, width, height, label, clause id)."""

COLOURS = {
    "CONFORMS": "#c8e6c9",
    "VARIANT": "#bbdefb",
    "DEVIATES": "#ffcdd2",
    "NOT PROVIDED": "#e0e0e0",
    "ERROR": "#ffe0b2",
}
"""Fill of a box by the verdict of its clause (the verdict badges' colours)."""

NEUTRAL = "#fff8e1"


def clauses() -> list[str]:
    """Every clause the drawing links to."""
    return sorted({cid for *_, cid in BOXES + FRAMES})


def href(clause_id: str, root: str) -> str:
    """The clause's anchor on its section page, from a page ``root`` levels below the site."""
    section = CLAUSES[clause_id].section
    return f"{root}clauses/{section}/#{heading_id(clause_id)}"


def svg(root: str, verdicts: Mapping[str, str] | None = None, label: str = "") -> str:
    """The drawing; ``root`` leads from the page that shows it to the site's root (``../``);
    ``verdicts`` (clause id -> verdict) colours each box, with a legend."""
    title = f"The Transformer: {label}" if label else "The Transformer (Figure 1 of the paper)"
    out = [f'<svg class="architecture" viewBox="0 0 700 560" role="img" '
           f'aria-label="{html.escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f"<title>{html.escape(title)}</title>"]
    for x, y, w, h, text, cid in FRAMES:
        out.append(_link(cid, root, verdicts, (
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="10" fill="none" '
            f'stroke="#757575" stroke-dasharray="6 4"/>'
            f'<text x="{x + 6}" y="{y + h - 6}" font-size="11" fill="#424242">'
            f"{html.escape(text)}</text>")))
    for x, y, w, h, text, cid in BOXES:
        fill = COLOURS.get((verdicts or {}).get(cid, ""), NEUTRAL)
        out.append(_link(cid, root, verdicts, (
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" '
            f'stroke="#424242"/><text x="{x + w / 2:g}" y="{y + h / 2 + 4:g}" '
            f'text-anchor="middle" font-size="12" fill="#212121">{html.escape(text)}</text>')))
    if verdicts is not None:
        for i, (verdict, colour) in enumerate(COLOURS.items()):
            x = 480 + (i % 2) * 105
            y = 460 + (i // 2) * 26
            out.append(f'<rect x="{x}" y="{y}" width="14" height="14" fill="{colour}" '
                       f'stroke="#424242"/><text x="{x + 20}" y="{y + 12}" font-size="11">'
                       f"{verdict.lower()}</text>")
    out.append("</svg>")
    return "".join(out)


def _link(cid: str, root: str, verdicts: Mapping[str, str] | None, body: str) -> str:
    tip = f"{cid}: {CLAUSES[cid].title}"
    if verdicts is not None:
        tip += f" ({verdicts.get(cid, 'not run')})"
    return (f'<a href="{html.escape(href(cid, root))}"><title>{html.escape(tip)}</title>'
            f"{body}</a>")
