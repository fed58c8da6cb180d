"""Pinned verdicts of lucidrains' x-transformers ``XTransformer`` (``--impl x-transformers``,
x-transformers 2.31.10); sources are paths inside the ``x_transformers`` package at that
version.
"""

from __future__ import annotations

from tests.matrix import Pin

ABOUT = ("lucidrains' x-transformers 2.31.10, XTransformer set to the paper's choices where it "
         "offers them (post-norm, ReLU, sinusoidal positions, shared source/target embeddings, "
         "fused attention in the model's dtype)")

REQUIRES = "x_transformers"
"""The package the adapter imports (the test of the missing-extra message hides it)."""

XT = "x_transformers/x_transformers.py"
WRAPPER = "x_transformers/autoregressive_wrapper.py"

NORM = (f"{XT}, LayerNorm.__init__: self.ln = nn.LayerNorm(dim, elementwise_affine = False) "
        "times a gain self.gamma, no bias ('bias-less layernorm'); AttentionLayers.__init__ "
        "builds every post_main_norm from it (its other norms, RMSNorm, ScaleNorm, ..., have no "
        "bias either)")
NO_OPTIMIZER = (f"{WRAPPER}, AutoregressiveWrapper.forward returns the loss and training is the "
                "caller's: the package ships no optimizer (no torch.optim.Optimizer in it)")

PINS: dict[str, Pin] = {
    "3.1/residual-norm": ("DEVIATES", "norm-without-bias", f"post-norm (pre_norm=False) but {NORM}"),
    "3.1/shifted-right": (
        "NOT PROVIDED", None,
        f"{WRAPPER}, AutoregressiveWrapper.forward: inp, target = x, x[:, 1:] and logits[:, :-1]: "
        "the caller puts the start symbol in x; no function makes the shifted-right input"),
    "3.4/scale": (
        "DEVIATES", "no-embedding-scale",
        f"{XT}, TokenEmbedding.forward: token_emb = self.emb(x.long()), no sqrt(d_model); "
        "TransformerWrapper.forward: x = token_embeds + pos_emb (no option scales it)"),
    "3.4/weight-tying": (
        "VARIANT", "shared-embeddings",
        f"{XT}, XTransformer.__init__: tie_token_emb sets self.decoder.token_emb = "
        "self.encoder.token_emb; the decoder's TransformerWrapper gets no tie_embedding, so its "
        "to_logits is LinearNoBias(dim, logits_dim), a matrix of its own"),
    "3.5/formula": (
        "VARIANT", "concatenated-sin-cos",
        f"{XT}, ScaledSinusoidalEmbedding.forward: emb = cat((emb.sin(), emb.cos()), dim = -1) "
        "with inv_freq = theta ** -(arange(half_dim) / half_dim), theta = 10000"),
    "3.5/added": (
        "DEVIATES", None,
        f"{XT}, TransformerWrapper.forward: x = token_embeds + pos_emb, and "
        "ScaledSinusoidalEmbedding.forward returns emb * self.scale, a learned scalar "
        "initialised to dim ** -0.5: E[t] + d^-0.5 PE(pos) instead of sqrt(d) E[t] + PE(pos)"),
    "5.3/adam": ("NOT PROVIDED", None, NO_OPTIMIZER),
    "5.3/eq3": (
        "NOT PROVIDED", None,
        f"{WRAPPER}, AutoregressiveWrapper.forward returns the loss; the package ships no "
        "learning-rate schedule"),
    "5.4/label-smoothing": (
        "DEVIATES", "no-label-smoothing",
        f"{WRAPPER}, AutoregressiveWrapper.forward: loss = loss_fn(rearrange(logits, "
        "'b n c -> b c n'), target, ignore_index = ignore_index) with loss_fn = cross_entropy "
        "(torch_einops_utils), plain cross-entropy"),
    "6.1/beam-search": (
        "DEVIATES", None,
        f"{WRAPPER}, AutoregressiveWrapper.beam_search: assert not exists(eos_token), 'eos token "
        "not supported yet': every beam runs seq_len steps, ranked by scores = scores + "
        "next_scores (summed log-probabilities over the whole length): no ended hypotheses, no "
        "length penalty (no named bug models both)"),
    "table3/param-formula": (
        "DEVIATES", None,
        f"{NORM}: d parameters per LayerNorm, not 2 d; and ScaledSinusoidalEmbedding.__init__: "
        "self.scale = nn.Parameter(torch.ones(1) * dim ** -0.5), one more trainable parameter "
        "per stack"),
    "practice/trainable": (
        "NOT PROVIDED", None, f"the toy task trains with the optimizer: {NO_OPTIMIZER}"),
}
"""Every clause that does not simply CONFORM for ``XTransformer`` (the others do)."""
