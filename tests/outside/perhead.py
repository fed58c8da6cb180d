"""Per-head modules, Annotated-Transformer style, with a post-norm ``SublayerConnection``.

How it is cut: multi-head attention is an ``nn.ModuleList`` of ``Head`` modules, each with its
own bias-free ``nn.Linear(d_model, d_k)`` for q, k and v, concatenated and projected by a
bias-free ``nn.Linear(h * d_k, d_model)``; there is no head axis anywhere. Layers hold a list of
``SublayerConnection`` wrappers, ``norm(x + dropout(sublayer(x)))`` (the Annotated Transformer's,
turned post-norm), around a hand-written LayerNorm ``a_2 * (x - mean) / (std + eps) + b_2``
(``torch.std`` is unbiased, eps = 1e-6 outside the square root). The sinusoid table is a float64
buffer, cast to the activations' dtype on use; embeddings are scaled by sqrt(d_model); source
embedding, target embedding and generator are one tensor; the generator returns log_softmax.
The loss is the Annotated Transformer's ``LabelSmoothing`` (``KLDivLoss(reduction="sum")``
against a target spreading eps over V - 2 tokens, neither true nor padding), divided by the
number of non-pad tokens. Adam with the paper's settings and the Eq. 3 schedule (which, as in
the Annotated Transformer, answers step 0 with step 1's value for ``LambdaLR``). Greedy decoding
re-runs the decoder over the whole prefix at each step (no cache); there is no beam search.

Nothing is deliberately wrong; the LayerNorm, the loss and the schedule are allowed readings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from spec.adapter import Config, NotProvided, Params  # used by the adapter part only

# -- the implementation ----------------------------------------------------------------------


def attention(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V and the weights; ``mask`` is 0 where a key is hidden."""
    d_k = query.size(-1)
    scores = query @ key.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    p_attn = scores.softmax(dim=-1)
    return p_attn @ value, p_attn


class Head(nn.Module):
    """One attention head: its own projections of the whole d_model-wide input."""

    def __init__(self, d_model: int, d_k: int) -> None:
        super().__init__()
        self.q = nn.Linear(d_model, d_k, bias=False)
        self.k = nn.Linear(d_model, d_k, bias=False)
        self.v = nn.Linear(d_model, d_k, bias=False)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> Tensor:
        return attention(self.q(query), self.k(key), self.v(value), mask)[0]


class MultiHeadedAttention(nn.Module):
    """h heads side by side, concatenated, then the output projection."""

    head: ClassVar[type[Head]] = Head

    def __init__(self, h: int, d_model: int) -> None:
        super().__init__()
        assert d_model % h == 0
        self.d_k = d_model // h
        self.heads = nn.ModuleList(self.head(d_model, self.d_k) for _ in range(h))
        self.out = nn.Linear(h * self.d_k, d_model, bias=False)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return self.out(torch.cat([head(query, key, value, mask) for head in self.heads], -1))


class LayerNorm(nn.Module):
    """The Annotated Transformer's LayerNorm: unbiased std, eps added to it."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class SublayerConnection(nn.Module):
    """Residual connection, dropout on the sub-layer output, then the norm (post-norm)."""

    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        return self.norm(x + self.dropout(sublayer(x)))


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.w_1(x).relu())


class EncoderLayer(nn.Module):
    def __init__(
        self, self_attn: nn.Module, feed_forward: nn.Module, sublayer: nn.ModuleList
    ) -> None:
        super().__init__()
        self.self_attn, self.feed_forward, self.sublayer = self_attn, feed_forward, sublayer

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
        return self.sublayer[1](x, self.feed_forward)


class DecoderLayer(nn.Module):
    def __init__(
        self,
        self_attn: nn.Module,
        src_attn: nn.Module,
        feed_forward: nn.Module,
        sublayer: nn.ModuleList,
    ) -> None:
        super().__init__()
        self.self_attn, self.src_attn = self_attn, src_attn
        self.feed_forward, self.sublayer = feed_forward, sublayer

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor, tgt_mask: Tensor) -> Tensor:
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, tgt_mask))
        x = self.sublayer[1](x, lambda x: self.src_attn(x, memory, memory, src_mask))
        return self.sublayer[2](x, self.feed_forward)


class Embeddings(nn.Module):
    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x: Tensor) -> Tensor:
        return self.lut(x) * math.sqrt(self.d_model)


def sinusoids(length: int, d_model: int) -> Tensor:
    """The sinusoid table ``[length, d_model]`` in float64."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64) * -(math.log(10000.0) / d_model)
    )
    pe = torch.zeros(length, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoids(max_len, d_model), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[: x.size(1)].to(x.dtype))


class Generator(nn.Module):
    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).log_softmax(dim=-1)


def subsequent_mask(size: int, device: torch.device | None = None) -> Tensor:
    """``[1, size, size]``, True where position i may see position j (j <= i)."""
    return torch.ones(1, size, size, dtype=torch.bool, device=device).triu(1) == 0


class Transformer(nn.Module):
    """The encoder-decoder; ``attention`` and ``sublayers`` build the parts of every layer."""

    def __init__(
        self,
        vocab: int,
        n_layers: int = 6,
        d_model: int = 512,
        d_ff: int = 2048,
        h: int = 8,
        dropout: float = 0.1,
        max_len: int = 5000,
    ) -> None:
        super().__init__()
        self.args = dict(
            vocab=vocab,
            n_layers=n_layers,
            d_model=d_model,
            d_ff=d_ff,
            h=h,
            dropout=dropout,
            max_len=max_len,
        )
        self.h, self.d_model, self.p = h, d_model, dropout

        def ffn() -> PositionwiseFeedForward:
            return PositionwiseFeedForward(d_model, d_ff)

        self.encoder = nn.ModuleList(
            EncoderLayer(self.attention(), ffn(), self.sublayers(2)) for _ in range(n_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(self.attention(), self.attention(), ffn(), self.sublayers(3))
            for _ in range(n_layers)
        )
        self.src_embed = nn.Sequential(
            Embeddings(d_model, vocab), PositionalEncoding(d_model, dropout, max_len)
        )
        self.tgt_embed = nn.Sequential(
            Embeddings(d_model, vocab), PositionalEncoding(d_model, dropout, max_len)
        )
        self.generator = Generator(d_model, vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.tgt_embed[0].lut.weight = self.src_embed[0].lut.weight
        self.generator.proj.weight = self.src_embed[0].lut.weight

    def attention(self) -> nn.Module:
        return MultiHeadedAttention(self.h, self.d_model)

    def sublayers(self, n: int) -> nn.ModuleList:
        return nn.ModuleList(SublayerConnection(self.d_model, self.p) for _ in range(n))

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        x = self.src_embed(src)
        for layer in self.encoder:
            x = layer(x, src_mask)
        return x

    def decode(self, memory: Tensor, src_mask: Tensor, tgt: Tensor, tgt_mask: Tensor) -> Tensor:
        x = self.tgt_embed(tgt)
        for layer in self.decoder:
            x = layer(x, memory, src_mask, tgt_mask)
        return x

    def forward(self, src: Tensor, tgt: Tensor, src_mask: Tensor, tgt_mask: Tensor) -> Tensor:
        return self.decode(self.encode(src, src_mask), src_mask, tgt, tgt_mask)

    def next_log_probs(self, memory: Tensor, src_mask: Tensor, ys: Tensor) -> Tensor:
        """Log-probabilities of the token after ``ys`` (the whole prefix is decoded again)."""
        out = self.decode(memory, src_mask, ys, subsequent_mask(ys.size(1), ys.device))
        return self.generator(out[:, -1])


def greedy_decode(
    model: Transformer, src: Tensor, src_mask: Tensor, max_len: int, start_symbol: int
) -> Tensor:
    """``[B, max_len]`` tokens, the start symbol first."""
    memory = model.encode(src, src_mask)
    ys = torch.full((src.size(0), 1), start_symbol, dtype=torch.long, device=src.device)
    for _ in range(max_len - 1):
        next_word = model.next_log_probs(memory, src_mask, ys).argmax(dim=-1, keepdim=True)
        ys = torch.cat([ys, next_word], dim=1)
    return ys


class LabelSmoothing(nn.Module):
    """KL divergence to a target with ``1 - smoothing`` on the true token and ``smoothing``
    spread over the ``size - 2`` tokens that are neither true nor padding; rows whose target
    is padding count nothing."""

    def __init__(self, size: int, padding_idx: int, smoothing: float = 0.0) -> None:
        super().__init__()
        self.criterion = nn.KLDivLoss(reduction="sum")
        self.padding_idx, self.size = padding_idx, size
        self.confidence, self.smoothing = 1.0 - smoothing, smoothing

    def forward(self, x: Tensor, target: Tensor) -> Tensor:
        assert x.size(1) == self.size
        true_dist = torch.full_like(x.detach(), self.smoothing / (self.size - 2))
        true_dist.scatter_(1, target.unsqueeze(1), self.confidence)
        true_dist[:, self.padding_idx] = 0
        true_dist.masked_fill_((target == self.padding_idx).unsqueeze(1), 0.0)
        return self.criterion(x, true_dist)


def loss_compute(x: Tensor, y: Tensor, criterion: LabelSmoothing) -> Tensor:
    """The Annotated Transformer's ``SimpleLossCompute``: the summed criterion over the
    generator's log-probabilities, divided by the number of non-pad target tokens."""
    norm = (y != criterion.padding_idx).sum()
    return criterion(x.reshape(-1, x.size(-1)), y.reshape(-1)) / norm


def rate(step: int, model_size: int, factor: float, warmup: int) -> float:
    """Eq. 3; step 0 counts as step 1 (``LambdaLR`` asks for step 0 first)."""
    if step == 0:
        step = 1
    return factor * (model_size ** (-0.5) * min(step ** (-0.5), step * warmup ** (-1.5)))


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9)


# -- the adapter -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One canonical parameter: the tensors that hold it (several: one per head, stacked) and
    whether they are ``nn.Linear`` weights (``[out, in]``, the transpose of ``x @ W``)."""

    parts: tuple[Tensor, ...]
    stacked: bool = False
    linear: bool = False

    def read(self) -> Tensor:
        views = [p.detach().t() if self.linear else p.detach() for p in self.parts]
        return torch.stack(views) if self.stacked else views[0].clone()

    def write(self, value: Tensor) -> None:
        values = list(value) if self.stacked else [value]
        for p, v in zip(self.parts, values, strict=True):
            p.copy_(v.t() if self.linear else v)


def _attention_slots(prefix: str, mha: MultiHeadedAttention) -> dict[str, _Slot]:
    out = {
        f"{prefix}W_{x}": _Slot(
            tuple(getattr(head, x.lower()).weight for head in mha.heads), stacked=True, linear=True
        )
        for x in "QKV"
    }
    out[f"{prefix}W_O"] = _Slot((mha.out.weight,), linear=True)
    return out


def _ffn_slots(prefix: str, ffn: PositionwiseFeedForward) -> dict[str, _Slot]:
    return {
        f"{prefix}W_1": _Slot((ffn.w_1.weight,), linear=True),
        f"{prefix}b_1": _Slot((ffn.w_1.bias,)),
        f"{prefix}W_2": _Slot((ffn.w_2.weight,), linear=True),
        f"{prefix}b_2": _Slot((ffn.w_2.bias,)),
    }


def _slots(module: nn.Module) -> dict[str, _Slot]:
    """Canonical name -> where it lives, for an attention block, an FFN or the model."""
    if isinstance(module, MultiHeadedAttention):
        return _attention_slots("", module)
    if isinstance(module, PositionwiseFeedForward):
        return _ffn_slots("", module)
    assert isinstance(module, Transformer)
    out: dict[str, _Slot] = {}
    for stack, layers in (("encoder", module.encoder), ("decoder", module.decoder)):
        for i, layer in enumerate(layers):
            p = f"{stack}.{i}."
            out.update(_attention_slots(p + "self_attn.", layer.self_attn))
            if stack == "decoder":
                out.update(_attention_slots(p + "cross_attn.", layer.src_attn))
            out.update(_ffn_slots(p + "ffn.", layer.feed_forward))
            for k, sub in enumerate(layer.sublayer, 1):
                out[f"{p}norm_{k}.gamma"] = _Slot((sub.norm.a_2,))
                out[f"{p}norm_{k}.beta"] = _Slot((sub.norm.b_2,))
    out["src_embedding"] = _Slot((module.src_embed[0].lut.weight,))
    out["tgt_embedding"] = _Slot((module.tgt_embed[0].lut.weight,))
    out["generator.W"] = _Slot((module.generator.proj.weight,), linear=True)
    return out


class PerHeadAdapter:
    """Translates the suite's conventions: its masks (True = may attend) are this code's
    (nonzero = may attend) with a query axis added, ``[B, S] -> [B, 1, S]``."""

    name = "outside-perhead"
    outputs = "log-probs"
    not_provided: ClassVar[dict[str, str]] = {
        "beam_search": "perhead decodes greedily only",
        "length_penalty": "perhead has no beam search",
        "decode_incremental": "perhead has no key/value cache: each step decodes the prefix",
    }
    model_type: ClassVar[type[Transformer]] = Transformer
    attention_type: ClassVar[type[MultiHeadedAttention]] = MultiHeadedAttention

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return attention(q, k, v, mask)[0]

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return attention(q, k, v, mask)[1]

    def multi_head(self, d_model: int, h: int) -> nn.Module:
        return self.attention_type(h, d_model)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        kv = x if memory is None else memory
        return module(x, kv, kv, mask)

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return PositionwiseFeedForward(d_model, d_ff)

    def feed_forward_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        return module(x)

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return sinusoids(length, d_model)

    def model(self, config: Config) -> nn.Module:
        if not config.shared_vocab:
            raise NotProvided("model", "perhead ties three ways: it needs one shared vocabulary")
        return self.model_type(
            config.src_vocab,
            config.n_layers,
            config.d_model,
            config.d_ff,
            config.h,
            config.dropout,
            config.max_len,
        )

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        return {name: slot.read() for name, slot in _slots(module).items()}

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        slots = _slots(module)
        unknown = sorted(set(params) - set(slots))
        if unknown:
            raise KeyError(f"unknown parameters {unknown}")
        with torch.no_grad():
            for name, value in params.items():
                expected = slots[name].read().shape
                if value.shape != expected:
                    raise ValueError(f"{name}: shape {tuple(value.shape)}, expected {expected}")
                slots[name].write(value)

    def embed_source(self, model: Transformer, src: Tensor) -> Tensor:
        return model.src_embed(src)

    def embed_target(self, model: Transformer, tgt: Tensor) -> Tensor:
        return model.tgt_embed(tgt)

    def encode(self, model: Transformer, x: Tensor, src_mask: Tensor) -> Tensor:
        mask = src_mask.unsqueeze(-2)
        for layer in model.encoder:
            x = layer(x, mask)
        return x

    def decode(self, model: Transformer, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        mask, causal = src_mask.unsqueeze(-2), subsequent_mask(y.size(1), y.device)
        for layer in model.decoder:
            y = layer(y, memory, mask, causal)
        return y

    def project(self, model: Transformer, y: Tensor) -> Tensor:
        return model.generator(y)

    def forward(self, model: Transformer, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        causal = subsequent_mask(tgt_in.size(1), tgt_in.device)
        return model.generator(model(src, tgt_in, src_mask.unsqueeze(-2), causal))

    def incremental_logits(
        self, model: Transformer, src: Tensor, src_mask: Tensor, tgt_in: Tensor
    ) -> Tensor:
        """The steps of ``greedy_decode``, fed the given tokens instead of its own choices."""
        mask = src_mask.unsqueeze(-2)
        memory = model.encode(src, mask)
        steps = [
            model.next_log_probs(memory, mask, tgt_in[:, : t + 1]) for t in range(tgt_in.size(1))
        ]
        return torch.stack(steps, dim=1)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        """The Annotated Transformer's ``Batch``: ``<s> + tgt`` without its last token."""
        return torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt], dim=1)[:, :-1]

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        """``loss_compute`` on the generator's log_softmax of the given pre-softmax values
        (a no-op on log-probabilities)."""
        criterion = LabelSmoothing(logits.size(-1), pad_id, smoothing=0.1)
        return loss_compute(logits.log_softmax(dim=-1), target, criterion)

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        return lambda step: rate(step, d_model, factor=1.0, warmup=warmup)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        return make_optimizer(params)

    def greedy(
        self, model: Transformer, src: Tensor, src_mask: Tensor, config: Config, max_len: int
    ) -> Tensor:
        return greedy_decode(model, src, src_mask.unsqueeze(-2), max_len + 1, config.bos_id)[:, 1:]

    def save(self, model: Transformer, path: str | os.PathLike[str]) -> None:
        torch.save({"args": model.args, "state_dict": model.state_dict()}, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        saved = torch.load(path, weights_only=True)
        first = next(iter(saved["state_dict"].values()))
        model = self.model_type(**saved["args"]).to(first.device, first.dtype)
        model.load_state_dict(saved["state_dict"])
        return model


adapter = PerHeadAdapter()

VERDICTS: dict[str, tuple[str, str]] = {
    "3.1/residual-norm": (
        "VARIANT eps-outside-sqrt, layer-norm-eps, unbiased-variance",
        "a_2 * (x - mean) / (x.std() + 1e-6) + b_2: unbiased std, eps 1e-6 added to it",
    ),
    "5.3/eq3": ("VARIANT step-zero", "rate() answers step 0 with step 1's value"),
    "5.4/label-smoothing": (
        "VARIANT kl-loss, spread-excluding-true-and-pad",
        "KLDivLoss against eps / (V - 2) on the tokens neither true nor padding",
    ),
    "6.1/beam-search": ("NOT PROVIDED", "greedy decoding only"),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""
