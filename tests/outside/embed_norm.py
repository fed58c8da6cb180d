"""A BART-like cut that otherwise stays close to the paper: norms on the embeddings, pre-norm.

How it is cut:

* the embedding layers compute Dropout(LayerNorm(sqrt(d_model) E[ids] + PE)) in both stacks,
  as BART's ``layernorm_embedding`` does (variant ``embedding-norm`` of 3.5/added);
* the source embedding, the target embedding and the pre-softmax map are three separate
  matrices (variant ``untied-embeddings``), and the pre-softmax ``nn.Linear`` has a bias
  (variant ``generator-bias``);
* every sub-layer is pre-norm, x + Dropout(Sublayer(LayerNorm(x))), and each stack ends with
  its own LayerNorm (variants ``pre-norm`` and ``final-norm``);
* the feed-forward network uses GELU (variant ``gelu``);
* attention keeps the paper's per-head matrices as ``[h, d_model, d_k]`` parameters (no
  biases), applied with ``einsum``, and runs ``F.scaled_dot_product_attention`` with boolean
  masks (True = attend); it never materialises the weights;
* the sinusoids are computed on the fly, in float64 and then in the activations' dtype, for
  any length;
* the loss is written by hand: label smoothing with eps 0.1 spread over the V - 1 wrong tokens,
  averaged over the non-padding targets; Adam and Eq. 3 as in the paper, the schedule giving
  step 0 the value of step 1 (so that ``LambdaLR`` can start at 0);
* decoding has no key/value cache: greedy and a batched beam search (beam 4, alpha 0.6, at
  most input + 50 tokens, ended hypotheses leave the beam) recompute the prefix at each step.

Nothing is deliberately wrong.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoids(length: int, d_model: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(...); float64 inside."""
    pos = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    angle = pos / 10000.0 ** (
        torch.arange(0, d_model, 2, dtype=torch.float64, device=device) / d_model
    )
    return torch.stack([angle.sin(), angle.cos()], -1).flatten(1).to(dtype)


class Attention(nn.Module):
    """Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V); no biases."""

    def __init__(self, d_model: int, h: int) -> None:
        super().__init__()
        d_k = d_model // h
        self.w_q, self.w_k, self.w_v = (
            nn.Parameter(torch.randn(h, d_model, d_k) / math.sqrt(d_model)) for _ in range(3)
        )
        self.w_o = nn.Parameter(torch.randn(h, d_k, d_model) / math.sqrt(d_model))

    def forward(
        self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """``mask`` is boolean, True = may attend, broadcasting to ``[b, len_q, len_k]``."""
        kv = x if memory is None else memory
        q = torch.einsum("bld,hdk->bhlk", x, self.w_q)
        k = torch.einsum("bld,hdk->bhlk", kv, self.w_k)
        v = torch.einsum("bld,hdk->bhlk", kv, self.w_v)
        heads = F.scaled_dot_product_attention(
            q, k, v, None if mask is None else mask.unsqueeze(-3)
        )
        return torch.einsum("bhlk,hkd->bld", heads, self.w_o)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    """A pre-norm encoder layer, or with ``cross=True`` a decoder layer."""

    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, h)
        self.cross_attn = Attention(d_model, h) if cross else None
        self.ffn = FeedForward(d_model, d_ff)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3 if cross else 2))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.dropout(self.self_attn(self.norms[0](x), mask=mask))
        if self.cross_attn is not None:
            x = x + self.dropout(self.cross_attn(self.norms[1](x), memory, memory_mask))
        return x + self.dropout(self.ffn(self.norms[-1](x)))


class Embedding(nn.Module):
    """Dropout(LayerNorm(sqrt(d_model) E[ids] + PE))."""

    def __init__(self, vocab: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.tokens, self.norm = nn.Embedding(vocab, d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.tokens(ids) * math.sqrt(self.tokens.embedding_dim)
        x = x + sinusoids(ids.size(1), x.size(-1), x.dtype, x.device)
        return self.dropout(self.norm(x))


class Stack(nn.Module):
    def __init__(
        self, n: int, d_model: int, h: int, d_ff: int, dropout: float, cross: bool
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(d_model, h, d_ff, dropout, cross) for _ in range(n))
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask, memory, memory_mask)
        return self.norm(x)


class Seq2Seq(nn.Module):
    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 512,
        h: int = 8,
        d_ff: int = 2048,
        n_layers: int = 6,
        dropout: float = 0.1,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            d_model=d_model,
            h=h,
            d_ff=d_ff,
            n_layers=n_layers,
            dropout=dropout,
            pad=pad,
        )
        self.pad = pad
        self.src_embed = Embedding(src_vocab, d_model, dropout)
        self.tgt_embed = Embedding(tgt_vocab, d_model, dropout)
        self.encoder = Stack(n_layers, d_model, h, d_ff, dropout, cross=False)
        self.decoder = Stack(n_layers, d_model, h, d_ff, dropout, cross=True)
        self.lm_head = nn.Linear(d_model, tgt_vocab)

    def encode(self, x: Tensor, src_keep: Tensor) -> Tensor:
        return self.encoder(x, src_keep[:, None, :])

    def decode(self, y: Tensor, memory: Tensor, src_keep: Tensor) -> Tensor:
        n = y.size(1)
        causal = torch.ones(n, n, dtype=torch.bool, device=y.device).tril()
        return self.decoder(y, causal, memory, src_keep[:, None, :])

    def forward(self, src: Tensor, tgt_in: Tensor, src_keep: Tensor | None = None) -> Tensor:
        src_keep = src != self.pad if src_keep is None else src_keep
        memory = self.encode(self.src_embed(src), src_keep)
        return self.lm_head(self.decode(self.tgt_embed(tgt_in), memory, src_keep))

    def next_logits(self, memory: Tensor, src_keep: Tensor, prefix: Tensor) -> Tensor:
        """The logits for the token after ``prefix`` (the whole prefix is recomputed)."""
        return self.lm_head(self.decode(self.tgt_embed(prefix), memory, src_keep)[:, -1])

    @torch.no_grad()
    def greedy(self, src: Tensor, src_keep: Tensor, bos: int, eos: int, max_len: int) -> Tensor:
        memory = self.encode(self.src_embed(src), src_keep)
        ys = torch.full_like(src[:, :1], bos)
        for _ in range(max_len):
            ys = torch.cat([ys, self.next_logits(memory, src_keep, ys).argmax(-1, keepdim=True)], 1)
            if (ys[:, 1:] == eos).any(1).all():
                break
        return ys[:, 1:]

    @torch.no_grad()
    def beam_search(
        self, src: Tensor, src_keep: Tensor, bos: int, eos: int, beam: int = 4, alpha: float = 0.6
    ) -> list[int]:
        """One sentence ``[1, s]``: beam ``beam``, at most input length + 50 tokens; a hypothesis
        that ends leaves the beam, which stops when none is left; the best by
        log P / ((5 + |Y|) / 6)^alpha."""
        memory = self.encode(self.src_embed(src), src_keep)
        ys = torch.full((1, 1), bos, dtype=torch.long, device=src.device)
        scores = torch.zeros(1, dtype=torch.float64, device=src.device)
        done: list[tuple[float, list[int]]] = []
        for _ in range(int(src_keep.sum()) + 50):
            k = ys.size(0)
            logp = self.next_logits(memory.expand(k, -1, -1), src_keep.expand(k, -1), ys)
            total = (scores[:, None] + logp.log_softmax(-1).double()).flatten()
            best, flat = total.topk(min(beam - len(done), total.numel()))
            rows, tokens = flat // logp.size(-1), flat % logp.size(-1)
            ys = torch.cat([ys[rows], tokens[:, None]], 1)
            ended = tokens == eos
            done += [
                (float(s), y[1:].tolist()) for s, y in zip(best[ended], ys[ended], strict=True)
            ]
            ys, scores = ys[~ended], best[~ended]
            if ys.size(0) == 0:
                break
        done += [(float(s), y[1:].tolist()) for s, y in zip(scores, ys, strict=True)]
        return max(done, key=lambda c: c[0] / length_penalty(len(c[1]), alpha))[1]


def length_penalty(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


def smoothed_loss(logits: Tensor, target: Tensor, pad: int, eps: float = 0.1) -> Tensor:
    """Cross-entropy against 1 - eps on the target and eps / (V - 1) on every other token,
    averaged over the targets that are not padding."""
    logp = logits.log_softmax(-1)
    q = torch.full_like(logp, eps / (logp.size(-1) - 1))
    q.scatter_(-1, target.unsqueeze(-1), 1 - eps)
    per_token = -(q * logp).sum(-1)
    real = target != pad
    return per_token.masked_select(real).mean()


class InverseSqrtSchedule:
    """Eq. 3: d_model^-0.5 * min(step^-0.5, step * warmup^-1.5); step 0 counts as step 1."""

    def __init__(self, d_model: int, warmup: int = 4000) -> None:
        self.d_model, self.warmup = d_model, warmup

    def __call__(self, step: int) -> float:
        step = max(step, 1)
        return self.d_model**-0.5 * min(step**-0.5, step * self.warmup**-1.5)


# -- the adapter ------------------------------------------------------------------------------

from spec.adapter import Config, Params  # noqa: E402


def _attention(prefix: str, a: Attention) -> dict[str, Tensor]:
    h, d_k, d_model = a.w_o.shape
    return {
        f"{prefix}W_Q": a.w_q,
        f"{prefix}W_K": a.w_k,
        f"{prefix}W_V": a.w_v,
        f"{prefix}W_O": a.w_o.view(h * d_k, d_model),
    }


def _ffn(prefix: str, f: FeedForward) -> dict[str, Tensor]:
    return {
        f"{prefix}W_1": f.fc1.weight.t(),
        f"{prefix}b_1": f.fc1.bias,
        f"{prefix}W_2": f.fc2.weight.t(),
        f"{prefix}b_2": f.fc2.bias,
    }


def _norm(prefix: str, norm: nn.LayerNorm) -> dict[str, Tensor]:
    return {f"{prefix}gamma": norm.weight, f"{prefix}beta": norm.bias}


def _views(module: nn.Module) -> dict[str, Tensor]:
    """Canonical name -> a view sharing storage with the parameter that holds it."""
    if isinstance(module, Attention):
        return _attention("", module)
    if isinstance(module, FeedForward):
        return _ffn("", module)
    assert isinstance(module, Seq2Seq)
    out = {
        "src_embedding": module.src_embed.tokens.weight,
        "tgt_embedding": module.tgt_embed.tokens.weight,
        "generator.W": module.lm_head.weight.t(),
        "generator.b": module.lm_head.bias,
        **_norm("src_embedding_norm.", module.src_embed.norm),
        **_norm("tgt_embedding_norm.", module.tgt_embed.norm),
    }
    for name, stack in (("encoder", module.encoder), ("decoder", module.decoder)):
        for i, layer in enumerate(stack.layers):
            p = f"{name}.{i}."
            out.update(_attention(p + "self_attn.", layer.self_attn))
            if layer.cross_attn is not None:
                out.update(_attention(p + "cross_attn.", layer.cross_attn))
            out.update(_ffn(p + "ffn.", layer.ffn))
            for k, norm in enumerate(layer.norms, 1):
                out.update(_norm(f"{p}norm_{k}.", norm))
        out.update(_norm(f"{name}.norm.", stack.norm))
    return out


class EmbedNormAdapter:
    name = "outside-embed_norm"
    not_provided: ClassVar[dict[str, str]] = {
        "attention_weights": "F.scaled_dot_product_attention does not return the weights",
        "decode_incremental": "no key/value cache: each decoding step recomputes the prefix",
    }

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, mask)

    def multi_head(self, d_model: int, h: int) -> nn.Module:
        return Attention(d_model, h)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        return module(x, memory, mask)

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return FeedForward(d_model, d_ff)

    def feed_forward_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        return module(x)

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return sinusoids(length, d_model, torch.float64, torch.device("cpu"))

    def model(self, config: Config) -> nn.Module:
        return Seq2Seq(
            config.src_vocab,
            config.tgt_vocab,
            config.d_model,
            config.h,
            config.d_ff,
            config.n_layers,
            config.dropout,
            config.pad_id,
        )

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        return {name: view.detach().clone() for name, view in _views(module).items()}

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        views = _views(module)
        with torch.no_grad():
            for name, value in params.items():
                if views[name].shape != value.shape:
                    raise ValueError(
                        f"{name}: shape {tuple(value.shape)}, expected {tuple(views[name].shape)}"
                    )
                views[name].copy_(value)

    def embed_source(self, model: Seq2Seq, src: Tensor) -> Tensor:
        return model.src_embed(src)

    def embed_target(self, model: Seq2Seq, tgt: Tensor) -> Tensor:
        return model.tgt_embed(tgt)

    def encode(self, model: Seq2Seq, x: Tensor, src_mask: Tensor) -> Tensor:
        return model.encode(x, src_mask)

    def decode(self, model: Seq2Seq, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        return model.decode(y, memory, src_mask)

    def incremental_logits(
        self, model: Seq2Seq, src: Tensor, src_mask: Tensor, tgt_in: Tensor
    ) -> Tensor:
        memory = model.encode(model.src_embed(src), src_mask)
        steps = [
            model.next_logits(memory, src_mask, tgt_in[:, : t + 1]) for t in range(tgt_in.size(1))
        ]
        return torch.stack(steps, 1)

    def project(self, model: Seq2Seq, y: Tensor) -> Tensor:
        return model.lm_head(y)

    def forward(self, model: Seq2Seq, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        return model(src, tgt_in, src_mask)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        return F.pad(tgt[:, :-1], (1, 0), value=bos_id)

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return smoothed_loss(logits, target, pad_id)

    def lr_schedule(self, d_model: int, warmup: int) -> InverseSqrtSchedule:
        return InverseSqrtSchedule(d_model, warmup)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9)

    def greedy(
        self, model: Seq2Seq, src: Tensor, src_mask: Tensor, config: Config, max_len: int
    ) -> Tensor:
        return model.greedy(src, src_mask, config.bos_id, config.eos_id, max_len)

    def beam_search(
        self, model: Seq2Seq, src: Tensor, src_mask: Tensor, config: Config
    ) -> list[int]:
        return model.beam_search(src, src_mask, config.bos_id, config.eos_id)

    def length_penalty(self, length: int, alpha: float) -> float:
        return length_penalty(length, alpha)

    def save(self, model: Seq2Seq, path: str | os.PathLike[str]) -> None:
        torch.save({"config": model.config, "state": model.state_dict()}, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        saved = torch.load(path, weights_only=True)
        like = saved["state"]["lm_head.weight"]
        model = Seq2Seq(**saved["config"]).to(like.device, like.dtype)
        model.load_state_dict(saved["state"])
        return model


VERDICTS: dict[str, tuple[str, str]] = {
    "3.1/residual-norm": ("VARIANT pre-norm", "x + Dropout(Sublayer(LayerNorm(x)))"),
    "3.1/no-final-norm": ("VARIANT final-norm", "each stack ends with a LayerNorm"),
    "3.3/eq2": ("VARIANT gelu", "F.gelu between the two linear maps"),
    "3.4/weight-tying": ("VARIANT untied-embeddings", "three separate matrices"),
    "3.4/output-softmax": ("VARIANT generator-bias", "the lm_head nn.Linear has a bias"),
    "3.5/added": ("VARIANT embedding-norm", "LayerNorm(sqrt(d_model) E + PE) in both stacks"),
    "5.3/eq3": ("VARIANT step-zero", "step 0 gets the rate of step 1"),
    "5.4/residual-dropout": ("VARIANT pre-norm", "x + Dropout(Sublayer(LayerNorm(x)))"),
    "table3/param-formula": (
        "VARIANT embedding-norm, final-norm, generator-bias, untied-embeddings",
        "three V x d matrices, a V-sized generator bias, a LayerNorm after each stack, and the "
        "2 d parameters of each stack's embedding norm",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""

adapter = EmbedNormAdapter()
