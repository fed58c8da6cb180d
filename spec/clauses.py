"""The clause registry: every checkable statement of the specification, in paper order.

A *clause* is one statement of "Attention Is All You Need" (Vaswani et al., 2017) that a test can
check against an implementation. Its id (``"3.2.1/scale"``) is stable: reports, docs and users'
expected-failure files refer to it. Each clause names the *variants* it recognises (allowed,
named deviations that give the verdict VARIANT instead of DEVIATES) and the clauses whose failure
would explain its own failure (``depends_on``), so that a report can point at the root cause.

Clauses of the group ``"practice"`` are not in the paper; they state what every working
implementation needs. Paper conformance and practice are reported separately.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

__all__ = ["CLAUSES", "SECTIONS", "Clause", "Group", "Variant", "by_section", "get"]

Group = Literal["paper", "practice"]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named, allowed deviation from a clause (verdict VARIANT), e.g. ``pre-norm``."""

    name: str
    description: str


@dataclasses.dataclass(frozen=True)
class Clause:
    """One checkable statement of the paper (or of practice), in our own words.

    ``equation`` is LaTeX without ``$`` delimiters (``None`` where the clause has no formula).
    ``depends_on`` lists the clause ids whose failure explains a failure of this clause.
    """

    id: str
    section: str
    title: str
    statement: str
    equation: str | None
    group: Group
    variants: tuple[Variant, ...] = ()
    depends_on: tuple[str, ...] = ()

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; ``KeyError`` naming the clause's variants otherwise."""
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants) or "none"
        raise KeyError(f"clause {self.id!r} has no variant {name!r} (its variants: {known})")


SECTIONS: dict[str, str] = {
    "3.1": "Encoder and decoder stacks",
    "3.2.1": "Scaled dot-product attention",
    "3.2.2": "Multi-head attention",
    "3.2.3": "Applications of attention",
    "3.3": "Position-wise feed-forward networks",
    "3.4": "Embeddings and softmax",
    "3.5": "Positional encoding",
    "5.3": "Optimizer",
    "5.4": "Regularization",
    "6.1": "Machine translation (beam search)",
    "table3": "Model variations (parameter counts)",
    "practice": "Practice",
}
"""Section id -> title, in paper order (``practice`` last: it is not in the paper)."""

# -- Variants shared by several clauses ------------------------------------------------------

PRE_NORM = Variant(
    "pre-norm",
    "Each sub-layer is wrapped as x + Sublayer(LayerNorm(x)) instead of "
    "LayerNorm(x + Sublayer(x)).",
)
FINAL_NORM = Variant("final-norm", "An extra LayerNorm is applied to the output of the stack.")
PROJECTION_BIASES = Variant(
    "projection-biases",
    "The attention projections W^Q, W^K, W^V, W^O have bias vectors (the paper's are plain "
    "matrices).",
)
LEARNED_POSITIONS = Variant(
    "learned-positions",
    "Learned positional embeddings instead of the sinusoids (Table 3, row E).",
)
UNTIED = Variant(
    "untied-embeddings",
    "Source embedding, target embedding and pre-softmax linear map are separate matrices.",
)
CONCATENATED = Variant(
    "concatenated-sin-cos",
    "The sines and cosines are laid out as two halves [sin..., cos...] instead of interleaved.",
)


def _c(
    id: str,
    title: str,
    statement: str,
    equation: str | None = None,
    variants: tuple[Variant, ...] = (),
    depends_on: tuple[str, ...] = (),
) -> Clause:
    section = id.split("/")[0]
    group: Group = "practice" if section == "practice" else "paper"
    return Clause(id, section, title, statement, equation, group, variants, depends_on)


_ALL: tuple[Clause, ...] = (
    # -- 3.1 Encoder and decoder stacks ------------------------------------------------------
    _c(
        "3.1/encoder-stack",
        "Encoder is a stack of N identical layers",
        "The encoder is N layers of the same structure, each with its own parameters (no "
        "sharing across layers); N is configurable.",
        r"\mathrm{Encoder}(x) = \mathrm{Layer}_N(\cdots \mathrm{Layer}_1(x))",
        depends_on=("3.1/encoder-layer",),
    ),
    _c(
        "3.1/encoder-layer",
        "Encoder layer: self-attention, then feed-forward",
        "An encoder layer applies multi-head self-attention and then the position-wise "
        "feed-forward network, each wrapped as in 3.1/residual-norm.",
        depends_on=("3.1/residual-norm", "3.2.3/encoder-self"),
    ),
    _c(
        "3.1/residual-norm",
        "Residual connection followed by layer normalization (post-norm)",
        "Every sub-layer's output is LayerNorm(x + Sublayer(x)).",
        r"\mathrm{LayerNorm}(x + \mathrm{Sublayer}(x))",
        variants=(
            PRE_NORM,
            Variant("layer-norm-eps", "A LayerNorm epsilon other than 1e-5 (e.g. 1e-6)."),
            Variant("unbiased-variance", "LayerNorm divides the squared deviations by n - 1."),
            Variant("eps-outside-sqrt", "LayerNorm divides by sqrt(var) + eps."),
        ),
        depends_on=("3.2.2/eq", "3.3/eq2"),
    ),
    _c(
        "3.1/no-final-norm",
        "No extra normalization after the stack",
        "The output of a stack is the output of its last layer.",
        variants=(FINAL_NORM,),
        depends_on=("3.1/encoder-stack",),
    ),
    _c(
        "3.1/width",
        "Every sub-layer outputs d_model features",
        "All sub-layers and both embedding layers produce outputs of dimension d_model.",
        r"\mathrm{Sublayer}(x),\ \mathrm{Embed}(t) \in \mathbb{R}^{d_{\text{model}}}",
    ),
    _c(
        "3.1/decoder-layer",
        "Decoder layer: masked self-attention, cross-attention, feed-forward",
        "A decoder layer applies masked multi-head self-attention, multi-head attention over "
        "the encoder output, and the feed-forward network, each wrapped as in 3.1/residual-norm.",
        depends_on=("3.1/residual-norm", "3.2.3/decoder-self", "3.2.3/cross-attention"),
    ),
    _c(
        "3.1/decoder-causal",
        "Predictions depend only on earlier positions",
        "The decoder output at position i does not depend on decoder inputs at positions > i: "
        "changing them leaves outputs <= i unchanged, and their gradients are exactly zero.",
        r"\frac{\partial y_i}{\partial x_j} = 0 \quad \text{for } j > i",
        depends_on=("3.2.3/decoder-self",),
    ),
    _c(
        "3.1/shifted-right",
        "Decoder input is the target shifted right",
        "In training the decoder input is the target shifted one position right with a start "
        "symbol first, so that position i predicts target token i.",
        r"y^{\text{in}}_0 = \langle s \rangle,\quad y^{\text{in}}_i = y_{i-1}",
        variants=(
            Variant("zero-start", "The first decoder input is a zero vector, not a start token."),
        ),
    ),
    _c(
        "3.1/shared-memory",
        "Every decoder layer attends to the final encoder output",
        "Each decoder layer's encoder-decoder attention reads the same memory: the output of "
        "the last encoder layer.",
        depends_on=("3.1/decoder-layer",),
    ),
    # -- 3.2.1 Scaled dot-product attention --------------------------------------------------
    _c(
        "3.2.1/eq1",
        "Scaled dot-product attention (Eq. 1)",
        "Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V for any query length, key length, "
        "d_k and d_v (d_v may differ from d_k).",
        r"\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left(\frac{QK^T}{\sqrt{d_k}}\right) V",
        depends_on=("3.2.1/scale", "3.2.1/softmax-over-keys"),
    ),
    _c(
        "3.2.1/scale",
        "Scores are scaled by 1/sqrt(d_k)",
        "The dot products are multiplied by exactly 1/sqrt(d_k): not 1, not 1/d_k, not "
        "1/sqrt(d_model).",
        r"\frac{1}{\sqrt{d_k}}",
    ),
    _c(
        "3.2.1/softmax-over-keys",
        "Softmax over the keys",
        "For each query the attention weights are non-negative and sum to 1 over the keys.",
        r"\alpha_{ij} \ge 0,\quad \sum_j \alpha_{ij} = 1",
    ),
    _c(
        "3.2.1/mask",
        "Masked connections get weight exactly zero",
        "A masked (illegal) connection gets weight exactly 0, as if its score were -infinity "
        "before the softmax; the output does not depend on keys or values at masked positions. "
        "What a fully masked row yields is not specified.",
        r"\alpha_{ij} = 0 \quad \text{if } (i, j) \text{ is masked}",
        variants=(
            Variant(
                "large-negative-mask",
                "Masked scores are set to a large negative number instead of -infinity (weights "
                "are then tiny but not exactly zero).",
            ),
        ),
    ),
    _c(
        "3.2.1/permutation",
        "Equivariance under permutations",
        "Permuting keys and values together leaves the output unchanged; permuting the "
        "queries permutes the output rows the same way.",
        r"\mathrm{Attention}(PQ, \Pi K, \Pi V) = P\,\mathrm{Attention}(Q, K, V)",
    ),
    # -- 3.2.2 Multi-head attention ----------------------------------------------------------
    _c(
        "3.2.2/eq",
        "Multi-head attention",
        "MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with head_i = Attention(Q W_i^Q, "
        "K W_i^K, V W_i^V); checked against a literal per-head oracle with the same weights.",
        r"\begin{gathered}\mathrm{MultiHead}(Q, K, V) = \mathrm{Concat}(\mathrm{head}_1, \dots,"
        r" \mathrm{head}_h) W^O,\\ \mathrm{head}_i = \mathrm{Attention}(QW_i^Q, KW_i^K, VW_i^V)"
        r"\end{gathered}",
        variants=(
            PROJECTION_BIASES,
            Variant(
                "fused-qkv",
                "The Q, K, V projections of all heads are stored as one fused matrix.",
            ),
        ),
        depends_on=("3.2.1/eq1", "3.2.2/heads-split-by-projection"),
    ),
    _c(
        "3.2.2/head-dims",
        "Head dimensions d_k = d_v = d_model / h",
        "Each head has d_k = d_v = d_model / h, so the four projections hold 4 d_model^2 "
        "parameters.",
        r"d_k = d_v = d_{\text{model}} / h",
        variants=(PROJECTION_BIASES,),
    ),
    _c(
        "3.2.2/heads-split-by-projection",
        "Each head sees the whole input through its own projection",
        "Head i projects the full d_model-wide input with W_i^Q, W_i^K, W_i^V; slicing the "
        "input into h chunks, one per head, is a misreading.",
        r"\mathrm{head}_i = \mathrm{Attention}(QW_i^Q, KW_i^K, VW_i^V),\ "
        r"W_i^Q \in \mathbb{R}^{d_{\text{model}} \times d_k}",
        depends_on=("3.2.1/eq1",),
    ),
    # -- 3.2.3 Applications of attention -----------------------------------------------------
    _c(
        "3.2.3/cross-attention",
        "Encoder-decoder attention",
        "Queries come from the previous decoder layer, keys and values from the encoder "
        "output; every target position may attend to every (non-padding) source position.",
        depends_on=("3.2.2/eq", "3.2.1/mask"),
    ),
    _c(
        "3.2.3/encoder-self",
        "Encoder self-attention is unmasked",
        "In encoder self-attention every position attends to every (non-padding) position.",
        depends_on=("3.2.2/eq",),
    ),
    _c(
        "3.2.3/decoder-self",
        "Decoder self-attention is causally masked",
        "Decoder self-attention lets position i attend to positions <= i only, by setting the "
        "illegal scores to -infinity before the softmax.",
        r"\alpha_{ij} = 0 \quad \text{for } j > i",
        depends_on=("3.2.2/eq", "3.2.1/mask"),
    ),
    # -- 3.3 Position-wise feed-forward networks ---------------------------------------------
    _c(
        "3.3/eq2",
        "Feed-forward network (Eq. 2)",
        "FFN(x) = max(0, x W_1 + b_1) W_2 + b_2: two linear maps with a ReLU between.",
        r"\mathrm{FFN}(x) = \max(0, xW_1 + b_1) W_2 + b_2",
        variants=(
            Variant("gelu", "GELU instead of ReLU between the two linear maps."),
            Variant("gated", "A gated linear unit (e.g. GLU, SwiGLU) instead of ReLU."),
        ),
    ),
    _c(
        "3.3/position-wise",
        "Applied to each position separately and identically",
        "The FFN output at position i depends on x_i only; permuting positions permutes the "
        "output.",
        r"\mathrm{FFN}(X)_i = \mathrm{FFN}(x_i)",
    ),
    _c(
        "3.3/dims",
        "FFN widths d_model -> d_ff -> d_model",
        "The inner layer has d_ff units, input and output have d_model; each layer has its own "
        "FFN parameters.",
        r"W_1 \in \mathbb{R}^{d_{\text{model}} \times d_{ff}},\ "
        r"W_2 \in \mathbb{R}^{d_{ff} \times d_{\text{model}}}",
    ),
    # -- 3.4 Embeddings and softmax ----------------------------------------------------------
    _c(
        "3.4/learned-embeddings",
        "Learned token embeddings",
        "Learned embeddings map token ids to d_model-dimensional vectors.",
        r"E \in \mathbb{R}^{V \times d_{\text{model}}}",
    ),
    _c(
        "3.4/scale",
        "Embeddings are multiplied by sqrt(d_model)",
        "In the embedding layers (only there, not in the pre-softmax map) the embedding "
        "weights are multiplied by sqrt(d_model).",
        r"\mathrm{Embed}(t) = \sqrt{d_{\text{model}}}\, E_t",
        depends_on=("3.5/formula", "3.4/learned-embeddings"),
    ),
    _c(
        "3.4/weight-tying",
        "One matrix for both embeddings and the pre-softmax map",
        "The source embedding, the target embedding and the pre-softmax linear map share one "
        "weight matrix (three-way tying needs a shared vocabulary).",
        r"W_{\text{pre-softmax}} = E^T",
        variants=(
            UNTIED,
            Variant(
                "two-way-tying",
                "Only the target embedding and the pre-softmax map share their weights.",
            ),
            Variant(
                "shared-embeddings",
                "Source and target embeddings share one matrix; the pre-softmax map is separate.",
            ),
        ),
    ),
    _c(
        "3.4/output-softmax",
        "Linear map and softmax give next-token probabilities",
        "A learned linear map followed by a softmax turns the decoder output into next-token "
        "probabilities (logits or log-probabilities are fine if the adapter says which).",
        r"p(y_i \mid y_{<i}, x) = \mathrm{softmax}(z_i W)",
        variants=(Variant("generator-bias", "The pre-softmax linear map has a bias vector."),),
    ),
    # -- 3.5 Positional encoding -------------------------------------------------------------
    _c(
        "3.5/formula",
        "Sinusoidal positional encoding",
        "PE(pos, 2i) = sin(pos / 10000^(2i/d_model)) and PE(pos, 2i+1) = cos(pos / "
        "10000^(2i/d_model)), exactly (checked in float64).",
        r"PE_{(pos, 2i)} = \sin\left(pos / 10000^{2i/d_{\text{model}}}\right),\quad "
        r"PE_{(pos, 2i+1)} = \cos\left(pos / 10000^{2i/d_{\text{model}}}\right)",
        variants=(
            CONCATENATED,
            LEARNED_POSITIONS,
            Variant(
                "timescale-denominator",
                "Another frequency denominator, e.g. tensor2tensor's 10000^(i/(d_model/2 - 1)).",
            ),
            Variant("one-based-positions", "Positions are counted from 1 instead of 0."),
        ),
    ),
    _c(
        "3.5/added",
        "Positional encodings are added to the embeddings",
        "The encoding is summed with the (scaled) embeddings at the bottom of both stacks, "
        "with the same dimension d_model.",
        r"x_{pos} = \sqrt{d_{\text{model}}}\, E_{t_{pos}} + PE_{pos}",
        variants=(
            LEARNED_POSITIONS,
            Variant(
                "embedding-norm",
                "A LayerNorm on the sum, LN(sqrt(d_model) E + PE), its gain and bias exposed as "
                "src_embedding_norm / tgt_embedding_norm.",
            ),
        ),
        depends_on=("3.5/formula",),
    ),
    _c(
        "3.5/wavelengths",
        "Wavelengths form a geometric progression",
        "The wavelengths of the dimension pairs form a geometric progression from 2 pi to "
        "10000 * 2 pi.",
        r"\lambda_i = 2\pi \cdot 10000^{2i/d_{\text{model}}}",
        variants=(LEARNED_POSITIONS,),
        depends_on=("3.5/formula",),
    ),
    _c(
        "3.5/relative-linear",
        "PE(pos + k) is a linear function of PE(pos)",
        "For every fixed offset k there is one matrix R_k (a block-diagonal rotation) with "
        "PE(pos + k) = R_k PE(pos) for all pos.",
        r"PE_{pos+k} = R_k\, PE_{pos}",
        variants=(LEARNED_POSITIONS,),
    ),
    _c(
        "3.5/extrapolation",
        "Defined for any position",
        "The encoding is defined for positions beyond any seen in training; nothing learned "
        "depends on the position.",
        variants=(LEARNED_POSITIONS,),
    ),
    # -- 5.3 Optimizer -----------------------------------------------------------------------
    _c(
        "5.3/adam",
        "Adam with beta1 = 0.9, beta2 = 0.98, eps = 1e-9",
        "The optimizer is Adam with beta1 = 0.9, beta2 = 0.98 and epsilon = 1e-9.",
        r"\beta_1 = 0.9,\quad \beta_2 = 0.98,\quad \epsilon = 10^{-9}",
    ),
    _c(
        "5.3/eq3",
        "Learning-rate schedule (Eq. 3)",
        "lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) with warmup = 4000: a "
        "linear rise, then inverse square-root decay; the peak is at step = warmup.",
        r"lrate = d_{\text{model}}^{-0.5} \cdot \min(step\_num^{-0.5},\ "
        r"step\_num \cdot warmup\_steps^{-1.5})",
        variants=(
            Variant(
                "step-zero",
                "A value at step 0, where Eq. 3 is undefined (0, or the value at step 1).",
            ),
        ),
    ),
    # -- 5.4 Regularization ------------------------------------------------------------------
    _c(
        "5.4/residual-dropout",
        "Dropout on each sub-layer output, before the residual add",
        "Dropout is applied to each sub-layer's output before it is added to the input and "
        "normalized; with P_drop = 1 in training mode a wrapped sub-layer reduces to "
        "LayerNorm(x).",
        r"\mathrm{LayerNorm}(x + \mathrm{Dropout}(\mathrm{Sublayer}(x)))",
        variants=(PRE_NORM,),
        depends_on=("3.1/residual-norm",),
    ),
    _c(
        "5.4/embedding-dropout",
        "Dropout on the sum of embeddings and positional encodings",
        "Dropout is applied to the sums of the embeddings and the positional encodings in both "
        "stacks.",
        r"\mathrm{Dropout}(\sqrt{d_{\text{model}}}\, E_t + PE)",
    ),
    _c(
        "5.4/dropout-elsewhere",
        "No dropout elsewhere",
        "The paper puts dropout only on sub-layer outputs and embedding sums; dropout on the "
        "attention weights or inside the FFN is a variant.",
        variants=(
            Variant("attention-dropout", "Dropout on the attention weights."),
            Variant("ffn-dropout", "Dropout inside the FFN, after the activation."),
        ),
    ),
    _c(
        "5.4/eval-deterministic",
        "No dropout in evaluation mode",
        "In evaluation mode no dropout is active and outputs are deterministic.",
    ),
    _c(
        "5.4/label-smoothing",
        "Label smoothing with eps_ls = 0.1",
        "The training target puts 1 - eps_ls on the true token and spreads eps_ls uniformly "
        "over all K tokens (Szegedy et al.) or the K - 1 others (eps_ls = 0.1).",
        r"q'(k) = (1 - \epsilon_{ls})\, \delta_{k, y} + \epsilon_{ls}\, u(k)",
        variants=(
            Variant(
                "spread-excluding-true-and-pad",
                "eps_ls is spread over the V - 2 tokens that are neither true nor padding.",
            ),
            Variant("kl-loss", "The loss is reported as KL divergence, not cross-entropy."),
            Variant("summed-loss", "The loss is summed over the target tokens, not averaged."),
            Variant(
                "mean-over-all-positions",
                "The loss is divided by all B x T target positions, padding included (e.g. KL "
                "with reduction='batchmean' over B x T rows).",
            ),
            Variant(
                "mean-over-sentences",
                "The loss is divided by the batch size B (e.g. KL with reduction='batchmean' "
                "over [B, T, V]).",
            ),
            Variant("other-normaliser", "The loss is divided by another positive constant."),
        ),
    ),
    # -- 6.1 and Table 3 ---------------------------------------------------------------------
    _c(
        "6.1/beam-search",
        "Beam search with beam 4 and length penalty alpha = 0.6",
        "Decoding uses beam search with beam size 4 and the length penalty of Wu et al. (2016) "
        "with alpha = 0.6, at most input length + 50 tokens, stopping early when all beams "
        "have ended.",
        r"lp(Y) = \frac{(5 + |Y|)^\alpha}{(5 + 1)^\alpha},\quad "
        r"s(Y) = \frac{\log P(Y \mid X)}{lp(Y)}",
        variants=(
            Variant("finished-pool", "The beam keeps beam_size live hypotheses while ended ones "
                    "wait in a pool of their own, as tensor2tensor (the paper's code), fairseq "
                    "and Hugging Face do; it stops when beam_size have ended, or when no live "
                    "one can beat them."),
        ),
        depends_on=("3.4/output-softmax",),
    ),
    _c(
        "table3/param-formula",
        "Parameter counts follow from the configuration",
        "Attention block 4d^2 (plain projection matrices, as 3.2.2 has them; 4d^2 + 4d with "
        "projection biases), FFN 2 d d_ff + d_ff + d, LayerNorm 2d; encoder layer = attention "
        "+ FFN + 2 LayerNorms; decoder layer = 2 attentions + FFN + 3 LayerNorms; one tied "
        "V x d embedding. Base with biases: 63,082,496 (V = 37,000; paper: 65M).",
        r"N\,(4d^2 + 2d\,d_{ff} + d_{ff} + 5d) + N\,(8d^2 + 2d\,d_{ff} + d_{ff} + 7d) + V d",
        variants=(
            UNTIED,
            FINAL_NORM,
            PROJECTION_BIASES,
            Variant("generator-bias", "The pre-softmax linear map has a bias (V parameters)."),
            LEARNED_POSITIONS,
            Variant("embedding-norm", "A LayerNorm on the embeddings (2d parameters per stack)."),
        ),
        depends_on=("3.2.2/head-dims", "3.3/dims", "3.4/weight-tying"),
    ),
    # -- Practice ----------------------------------------------------------------------------
    _c(
        "practice/padding",
        "Padding does not leak",
        "Outputs at non-padding positions do not depend on the content at padding positions, "
        "in the encoder, in cross-attention and in the loss.",
        depends_on=("3.2.1/mask",),
    ),
    _c(
        "practice/batch-independence",
        "Sequences in a batch are independent",
        "Each sequence's output is independent of the other sequences in its batch.",
    ),
    _c(
        "practice/incremental-decoding",
        "Incremental decoding equals the full forward pass",
        "Decoding token by token (with or without a key/value cache) gives the outputs of one "
        "full forward pass over the same prefix.",
        depends_on=("3.1/decoder-causal",),
    ),
    _c(
        "practice/save-load",
        "Save and load round-trip",
        "A saved and re-loaded model gives identical outputs; every layer's parameters are "
        "registered and saved.",
    ),
    _c(
        "practice/gradients",
        "Every parameter gets a finite gradient",
        "Every parameter receives a finite gradient from the loss.",
    ),
    _c(
        "practice/trainable",
        "The model learns a toy task",
        "The model overfits a tiny copy or reverse task in a bounded number of steps: its "
        "predictions then beat an untrained baseline by far, and its loss has fallen.",
        depends_on=("practice/gradients",),
    ),
    _c(
        "practice/devices-dtypes",
        "Devices and dtypes",
        "Results on CUDA match CPU within the stated tolerances; float64 and float32 (and "
        "bfloat16 / float16 on CUDA) are supported or reported.",
    ),
)

CLAUSES: dict[str, Clause] = {c.id: c for c in _ALL}
"""Clause id -> clause, in paper order."""


def get(clause_id: str) -> Clause:
    """The clause ``clause_id``; ``KeyError`` naming the closest registered ids otherwise."""
    try:
        return CLAUSES[clause_id]
    except KeyError:
        close = difflib.get_close_matches(clause_id, list(CLAUSES), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown clause id {clause_id!r}{hint}") from None


def by_section() -> dict[str, list[Clause]]:
    """Section id -> its clauses, both in paper order (every section of ``SECTIONS``)."""
    grouped: dict[str, list[Clause]] = {section: [] for section in SECTIONS}
    for clause in CLAUSES.values():
        grouped[clause.section].append(clause)
    return grouped
