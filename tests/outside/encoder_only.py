"""An encoder-only Transformer (a tagger / masked-LM shape), written with einsum.

How it is cut: there is no decoder. Token embeddings scaled by sqrt(d_model) plus a sinusoid
table (computed and stored in float32, as many tutorials do: not a deviation), dropout on the
sum, N post-norm encoder layers (``nn.LayerNorm``), and an output projection tied to the token
embedding (``h @ E^T``, no bias) over the encoder output. Attention keeps its weights in the
paper's own shapes, ``w_q``, ``w_k``, ``w_v`` ``[h, d_model, d_k]`` and ``w_o`` ``[h, d_k,
d_model]``, applied with ``torch.einsum``; masks are additive (0 where a key may be seen, -inf
where not) and there is only self-attention (the module takes no separate keys and values).
The loss is label-smoothed cross-entropy written by hand, eps_ls = 0.1 spread over the V - 1
tokens other than the true one, averaged over non-pad targets; Adam with the paper's settings;
Eq. 3 written as min(step / warmup, sqrt(warmup / step)) / sqrt(d_model * warmup).

Nothing is deliberately wrong. The clauses about the decoder, cross-attention and decoding are
NOT PROVIDED (``architecture = "encoder-only"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from spec.adapter import Config, NotProvided, Params  # used by the adapter part only

# -- the implementation ----------------------------------------------------------------------


def sinusoid_table(max_len: int, d_model: int) -> Tensor:
    """``[max_len, d_model]`` in the default dtype: sin on even, cos on odd columns."""
    pos = torch.arange(max_len).float().unsqueeze(1)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d_model, 2).float() / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


def additive_mask(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """Boolean ``keep`` (True = may attend) -> 0 / -inf, to be added to the scores."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, -math.inf)


def scaled_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``[..., Lq, d_k]``, ``[..., Lk, d_k]``, ``[..., Lk, d_v]``; ``bias`` is added to the
    scores. Returns the output and the attention weights."""
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    return torch.einsum("...qk,...kd->...qd", weights, v), weights


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, h: int) -> None:
        super().__init__()
        d_k = d_model // h
        self.w_q, self.w_k, self.w_v = (nn.Parameter(torch.empty(h, d_model, d_k)) for _ in "qkv")
        self.w_o = nn.Parameter(torch.empty(h, d_k, d_model))
        for w in (self.w_q, self.w_k, self.w_v, self.w_o):
            nn.init.normal_(w, std=w.shape[1] ** -0.5)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``x [B, L, d]``; ``bias`` broadcasts to ``[B, h, L, L]``."""
        q, k, v = (torch.einsum("bld,hdk->bhlk", x, w) for w in (self.w_q, self.w_k, self.w_v))
        heads, _ = scaled_attention(q, k, v, bias)
        return torch.einsum("bhlk,hkd->bld", heads, self.w_o)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn = SelfAttention(d_model, h)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, bias)))
        return self.norm2(x + self.dropout(self.mlp(x)))


class EncoderOnly(nn.Module):
    def __init__(
        self,
        vocab: int,
        d_model: int = 512,
        h: int = 8,
        d_ff: int = 2048,
        n_layers: int = 6,
        dropout: float = 0.1,
        max_len: int = 512,
    ) -> None:
        super().__init__()
        self.config = dict(
            vocab=vocab,
            d_model=d_model,
            h=h,
            d_ff=d_ff,
            n_layers=n_layers,
            dropout=dropout,
            max_len=max_len,
        )
        self.scale = math.sqrt(d_model)
        self.tok = nn.Embedding(vocab, d_model)
        self.register_buffer("pos", sinusoid_table(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, h, d_ff, dropout) for _ in range(n_layers)
        )

    def embed(self, ids: Tensor) -> Tensor:
        return self.dropout(self.tok(ids) * self.scale + self.pos[: ids.shape[1]])

    def encode(self, x: Tensor, keep: Tensor) -> Tensor:
        """``keep [B, L]``: True at real tokens."""
        bias = additive_mask(keep[:, None, None, :], x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.tok.weight.T

    def forward(self, ids: Tensor, keep: Tensor) -> Tensor:
        return self.logits(self.encode(self.embed(ids), keep))


def smoothed_cross_entropy(logits: Tensor, target: Tensor, pad: int, eps: float = 0.1) -> Tensor:
    """-sum_k q(k) log p(k), q = 1 - eps on the target and eps / (V - 1) on every other token;
    averaged over the positions whose target is not ``pad``."""
    log_p = logits.log_softmax(dim=-1)
    q = torch.full_like(log_p, eps / (logits.shape[-1] - 1))
    q = q.scatter(-1, target.unsqueeze(-1), 1.0 - eps)
    per_token = -(q * log_p).sum(-1)
    return per_token[target != pad].mean()


def noam(d_model: int, warmup: int) -> Callable[[int], float]:
    return lambda step: min(step / warmup, math.sqrt(warmup / step)) / math.sqrt(d_model * warmup)


# -- the adapter -----------------------------------------------------------------------------


def _canonical(module: nn.Module) -> dict[str, tuple[Tensor, Callable[[Tensor], Tensor]]]:
    """Canonical name -> (the parameter, its canonical view). Every view shares storage with
    its parameter, so writing through it loads the weight."""

    def attention(p: str, a: SelfAttention) -> dict[str, tuple[Tensor, Callable]]:
        out: dict[str, tuple[Tensor, Callable]] = {
            f"{p}W_{x}": (getattr(a, f"w_{x.lower()}"), lambda t: t) for x in "QKV"
        }
        out[f"{p}W_O"] = (a.w_o, lambda t: t.reshape(-1, t.shape[-1]))
        return out

    def mlp(p: str, m: nn.Sequential) -> dict[str, tuple[Tensor, Callable]]:
        return {
            f"{p}W_1": (m[0].weight, lambda t: t.T),
            f"{p}b_1": (m[0].bias, lambda t: t),
            f"{p}W_2": (m[2].weight, lambda t: t.T),
            f"{p}b_2": (m[2].bias, lambda t: t),
        }

    if isinstance(module, SelfAttention):
        return attention("", module)
    if isinstance(module, nn.Sequential):
        return mlp("", module)
    assert isinstance(module, EncoderOnly)
    out = {
        "src_embedding": (module.tok.weight, lambda t: t),
        "generator.W": (module.tok.weight, lambda t: t.T),
    }
    for i, layer in enumerate(module.layers):
        out |= attention(f"encoder.{i}.self_attn.", layer.attn)
        out |= mlp(f"encoder.{i}.ffn.", layer.mlp)
        for k, norm in ((1, layer.norm1), (2, layer.norm2)):
            out[f"encoder.{i}.norm_{k}.gamma"] = (norm.weight, lambda t: t)
            out[f"encoder.{i}.norm_{k}.beta"] = (norm.bias, lambda t: t)
    return out


class EncoderOnlyAdapter:
    """The suite's boolean masks become additive ones; ``[B, S]`` padding masks are the
    model's ``keep``."""

    name = "outside-encoder_only"
    architecture = "encoder-only"

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return scaled_attention(q, k, v, None if mask is None else additive_mask(mask, q.dtype))[0]

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return scaled_attention(q, k, v, None if mask is None else additive_mask(mask, q.dtype))[1]

    def multi_head(self, d_model: int, h: int) -> nn.Module:
        return SelfAttention(d_model, h)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        if memory is not None:
            raise NotProvided(
                "multi_head_forward",
                "encoder_only has self-attention only: queries, keys and values all come from x",
            )
        bias = None if mask is None else additive_mask(mask, x.dtype).unsqueeze(-3)
        return module(x, bias)

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))

    def feed_forward_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        return module(x)

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return sinusoid_table(length, d_model)

    def model(self, config: Config) -> nn.Module:
        return EncoderOnly(
            config.src_vocab,
            config.d_model,
            config.h,
            config.d_ff,
            config.n_layers,
            config.dropout,
            config.max_len,
        )

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        return {name: view(p.detach()).clone() for name, (p, view) in _canonical(module).items()}

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        canonical = _canonical(module)
        with torch.no_grad():
            for name, value in params.items():
                p, view = canonical[name]
                target = view(p)
                if target.shape != value.shape:
                    raise ValueError(
                        f"{name}: shape {tuple(value.shape)}, not {tuple(target.shape)}"
                    )
                target.copy_(value)

    def embed_source(self, model: EncoderOnly, src: Tensor) -> Tensor:
        return model.embed(src)

    def encode(self, model: EncoderOnly, x: Tensor, src_mask: Tensor) -> Tensor:
        return model.encode(x, src_mask)

    def project(self, model: EncoderOnly, y: Tensor) -> Tensor:
        return model.logits(y)

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return smoothed_cross_entropy(logits, target, pad_id)

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        return noam(d_model, warmup)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-9)

    def save(self, model: EncoderOnly, path: str | os.PathLike[str]) -> None:
        torch.save({"config": model.config, "state": model.state_dict()}, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        saved = torch.load(path, weights_only=True)
        first = next(iter(saved["state"].values()))
        model = EncoderOnly(**saved["config"]).to(first.device, first.dtype)
        model.load_state_dict(saved["state"])
        return model


adapter = EncoderOnlyAdapter()

VERDICTS: dict[str, tuple[str, str]] = {
    **{
        cid: ("NOT PROVIDED", "encoder-only: no decoder")
        for cid in (
            "3.1/decoder-layer",
            "3.1/decoder-causal",
            "3.1/shifted-right",
            "3.1/shared-memory",
            "3.2.3/cross-attention",
            "3.2.3/decoder-self",
            "6.1/beam-search",
            "practice/incremental-decoding",
        )
    },
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM.

Clauses with decoder parts judge what exists: 3.1/width and 3.5/added the source side,
3.4/weight-tying the embedding and the projection (tied: everything there is, is one matrix),
table3/param-formula the encoder stack and the embedding, practice/padding the encoder and the
loss, practice/trainable the encoder learning to copy."""
