"""mkdocs-gen-files script: draw the figures (PNG, into the built site only) and figures.md.

Positional encoding and wavelengths (3.5), masks (3.2.3), the Eq. 3 learning rate (5.3), and
the attention maps and training loss of a toy model trained here for a few seconds.
"""

from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mkdocs_gen_files
import torch

sys.path.insert(0, str(Path(__file__).parent))

import sitedata as S

from transformer import toy
from transformer.embeddings import positional_encoding
from transformer.masks import causal_mask, padding_mask
from transformer.model import Transformer, shift_right
from transformer.training import noam_rate

plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.titlesize": 10})


def save(fig: plt.Figure, name: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    with mkdocs_gen_files.open(f"figures/{name}", "wb") as f:
        f.write(buffer.getvalue())


# -- 3.5 ----------------------------------------------------------------------------------------
def positional_encoding_figure() -> None:
    pe = positional_encoding(100, 128, dtype=torch.float64)
    # constrained layout makes room for the colour bar: without it, the bar's tick labels
    # overlap the right panel's
    fig, (heat, curves) = plt.subplots(
        1, 2, figsize=(10, 3.4), width_ratios=[1.3, 1], layout="constrained"
    )
    image = heat.imshow(pe.T.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1, origin="lower")
    heat.set(xlabel="position pos", ylabel="dimension (2i, 2i+1)", title="PE, d_model = 128")
    fig.colorbar(image, ax=heat, fraction=0.04)
    for dim in (4, 5, 20, 21):
        curves.plot(pe[:, dim].numpy(), label=f"dim {dim}")
    curves.set(xlabel="position pos", title="dimensions 4, 5 and 20, 21: sin/cos pairs")
    curves.legend(loc="lower left", fontsize=7)
    save(fig, "positional-encoding.png")


def wavelengths_figure() -> None:
    d_model = 512
    i = torch.arange(d_model // 2, dtype=torch.float64)
    wavelength = 2 * math.pi * 10000 ** (2 * i / d_model)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.semilogy(
        i.numpy(), wavelength.numpy(), label=r"$\lambda_i = 2\pi \cdot 10000^{2i/d_{model}}$"
    )
    ax.axhline(2 * math.pi, color="grey", lw=0.8, ls="--")
    ax.axhline(10000 * 2 * math.pi, color="grey", lw=0.8, ls="--")
    ax.text(2, 2 * math.pi * 1.4, r"$2\pi$")
    ax.text(2, 10000 * 2 * math.pi * 1.4, r"$10000 \cdot 2\pi$")
    ax.set(xlabel="dimension pair i", ylabel="wavelength (positions)", title="d_model = 512")
    ax.legend(loc="lower right")
    save(fig, "wavelengths.png")


# -- 3.2.3 --------------------------------------------------------------------------------------
def masks_figure() -> None:
    tokens = torch.tensor(
        [[5, 6, 7, 8, 9, 10, 11, 2], [5, 6, 7, 8, 2, 0, 0, 0], [5, 2, 0, 0, 0, 0, 0, 0]]
    )
    padding = padding_mask(tokens, pad_id=0)[:, 0]  # [batch, L]
    causal = causal_mask(8)
    combined = causal & padding[1].unsqueeze(0)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    panels = (
        (padding, "padding mask [batch, L_k]", "key position", "sequence"),
        (causal, "causal mask [L_q, L_k]", "key position j", "query position i"),
        (combined, "decoder self-attention, sequence 1", "key position j", "query position i"),
    )
    for ax, (mask, title, xlabel, ylabel) in zip(axes, panels, strict=True):
        ax.imshow(mask.numpy(), cmap="Greens", vmin=0, vmax=1.3)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.set_xticks(range(mask.size(1)))
        ax.set_yticks(range(mask.size(0)))
    fig.suptitle("True (green) = may attend", y=1.02)
    save(fig, "masks.png")


# -- 5.3 ----------------------------------------------------------------------------------------
def learning_rate_figure() -> None:
    steps = range(1, 20001, 20)
    fig, ax = plt.subplots(figsize=(6, 3))
    for d_model, warmup in ((512, 4000), (512, 8000), (256, 4000)):
        ax.plot(
            list(steps),
            [noam_rate(s, d_model, warmup) for s in steps],
            label=f"d_model {d_model}, warmup {warmup}",
        )
    peak = noam_rate(4000, 512, 4000)
    ax.plot([4000], [peak], "ko", ms=3)
    ax.annotate(f"peak {peak:.2e} at step 4000", (4000, peak), (6000, peak * 1.05))
    ax.set(xlabel="step", ylabel="learning rate", title="Eq. 3")
    ax.legend(fontsize=7)
    save(fig, "learning-rate.png")


# -- a trained toy model ------------------------------------------------------------------------
STEPS = 400


def toy_figures() -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and leaves a core to the suite
    try:
        torch.manual_seed(0)
        src, tgt = toy.make_dataset("reverse", 1000, seed=0)
        model = Transformer(toy.toy_config())
        result = toy.train(model, src, tgt, STEPS, batch_size=32, warmup=100, lr=0.5, seed=0)
        accuracy = toy.accuracy(model, src[:200], tgt[:200])
        weights = attention_maps(model, src[:1], tgt[:1])
    finally:
        torch.set_num_threads(threads)
    draw_attention(weights, src[0], tgt[0])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.semilogy(result.losses, lw=0.8)
    ax.set(xlabel="step", ylabel="training loss", title=f"reverse task, {STEPS} steps, batch 32")
    save(fig, "training-loss.png")
    final = sum(result.losses[-20:]) / 20
    return {"seconds": result.seconds, "final_loss": final, "accuracy": accuracy}


def attention_maps(
    model: Transformer, src: torch.Tensor, tgt: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-head weights [h, L_q, L_k] of encoder layer 0 and of the last decoder layer's
    cross-attention, recomputed with ``need_weights=True`` by forward hooks."""
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def run(module, args, kwargs, output):  # type: ignore[no-untyped-def]
            weights = module.forward(*args, **{**kwargs, "need_weights": True})[1]
            captured[name] = weights[0].detach()

        return run

    handles = [
        model.encoder.layers[0].self_attn.register_forward_hook(hook("encoder"), with_kwargs=True),
        model.decoder.layers[-1].cross_attn.register_forward_hook(hook("cross"), with_kwargs=True),
    ]
    with torch.no_grad():
        model.eval()(src, shift_right(tgt, model.config.bos_id))
    for handle in handles:
        handle.remove()
    return captured


def draw_attention(weights: dict[str, torch.Tensor], src: torch.Tensor, tgt: torch.Tensor) -> None:
    n_src = int((src != 0).sum())
    n_tgt = int((tgt != 0).sum())
    src_labels = [str(int(t)) for t in src[:n_src]]
    tgt_in = ["<s>"] + [str(int(t)) for t in tgt[: n_tgt - 1]]
    heads = weights["cross"].size(0)
    fig, axes = plt.subplots(2, heads, figsize=(2.3 * heads, 5))
    for h in range(heads):
        for row, (key, ylabels, title) in enumerate(
            (("encoder", src_labels, "encoder self-attn"), ("cross", tgt_in, "cross-attn"))
        ):
            ax = axes[row, h]
            w = weights[key][h, : len(ylabels), :n_src]
            ax.imshow(w.numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{title}, head {h}", fontsize=8)
            ax.set_xticks(range(n_src), src_labels, fontsize=6)
            ax.set_yticks(range(len(ylabels)), ylabels, fontsize=6)
    axes[0, 0].set_ylabel("query: source token")
    axes[1, 0].set_ylabel("query: decoder input")
    fig.suptitle("keys: source tokens; the reversal shows as an anti-diagonal in cross-attention")
    save(fig, "attention-maps.png")


def figures_page(stats: dict[str, float]) -> str:
    lines = [
        "# Figures",
        "",
        "Drawn when this site was built, from the reference implementation "
        "([`transformer`][transformer]).",
        "",
    ]
    for name, (section, caption) in S.FIGURES.items():
        lines += [f"## {caption}", ""]
        if name == "attention-maps.png":
            lines += [
                f"A toy model (d_model 64, 2 layers, 4 heads; "
                f"[`transformer.toy`][transformer.toy]) trained for {STEPS} steps "
                f"({stats['seconds']:.1f} s) to reverse sequences of 3 to 8 symbols: final "
                f"training loss {stats['final_loss']:.3f}, greedy exact-match accuracy "
                f"{stats['accuracy']:.0%} on 200 training examples. The weights come from "
                "[`MultiHeadAttention`][transformer.attention.MultiHeadAttention] with "
                "`need_weights=True`.",
                "",
            ]
        page = S.section_page(section).removeprefix("clauses/")
        label = S.section_label(section, S.SECTIONS.get(section, section))
        lines += [
            f"![{caption}](figures/{name})",
            "",
            f"Clauses: [{label}](clauses/{page}).",
            "",
        ]
    return "\n".join(lines)


started = time.perf_counter()
positional_encoding_figure()
wavelengths_figure()
masks_figure()
learning_rate_figure()
stats = toy_figures()
with mkdocs_gen_files.open("figures.md", "w") as f:
    f.write(figures_page(stats))
S.log.info(f"figures drawn in {time.perf_counter() - started:.1f} s")
