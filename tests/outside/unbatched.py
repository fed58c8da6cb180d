"""One sequence at a time: a Transformer whose every module works on a single ``[L, d]`` sequence.

How it is cut: there is no batch axis inside the model. ``Seq2Seq.forward`` loops over the batch
in Python, and every mask is built from the number of real tokens of a sequence (padding follows
the real tokens), never passed around as a tensor. Attention is written out: each head is a
column block of plain ``x @ W`` parameter matrices (no biases), ``q @ k^T / sqrt(d_k)``,
``masked_fill(-inf)``, ``softmax``, ``@ v``. Post-norm layers with ``nn.LayerNorm``; sinusoids
computed for every call in float64; embeddings scaled by sqrt(d_model); source embedding,
target embedding and the generator are three separate matrices, and the generator has a bias.
Training is plain ``F.cross_entropy(reduction="sum", ignore_index=pad)`` (no label smoothing)
with ``torch.optim.Adam`` at a constant learning rate (betas (0.9, 0.98), eps 1e-9, no
schedule). Decoding, greedy or beam search (beam 4, Wu et al.'s length penalty with alpha 0.6,
at most input length + 50 tokens), decodes the whole prefix again at every step (no cache).

Deliberately wrong: no label smoothing (the paper trains with eps_ls = 0.1).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spec.adapter import Config, NotProvided, Params  # used by the adapter part only

# -- the implementation ----------------------------------------------------------------------


def sinusoid(length: int, d_model: int) -> Tensor:
    """``[length, d_model]`` float64: sin and cos of pos / 10000^(2i/d_model), interleaved."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos * freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, d_model)


def attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> tuple[Tensor, Tensor]:
    """Heads of one sequence: ``q [..., Lq, d_k]``, ``k [..., Lk, d_k]``, ``v [..., Lk, d_v]``;
    ``allowed [Lq, Lk]`` is True where a query may see a key. Returns the output and the
    weights."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


class MultiHead(nn.Module):
    """Heads are column blocks of ``w_q``, ``w_k``, ``w_v`` ``[d_model, h * d_k]``."""

    def __init__(self, d_model: int, h: int) -> None:
        super().__init__()
        self.h, self.d_k = h, d_model // h
        scale = d_model**-0.5
        self.w_q, self.w_k, self.w_v, self.w_o = (
            nn.Parameter(torch.randn(d_model, d_model) * scale) for _ in range(4)
        )

    def forward(self, x: Tensor, memory: Tensor, allowed: Tensor | None) -> Tensor:
        """``x [Lq, d]``, ``memory [Lk, d]`` -> ``[Lq, d]``; the heads side by side."""

        def heads(t: Tensor) -> Tensor:  # [L, h * d_k] -> [h, L, d_k]
            return t.reshape(len(t), self.h, self.d_k).transpose(0, 1)

        out, _ = attend(
            heads(x @ self.w_q), heads(memory @ self.w_k), heads(memory @ self.w_v), allowed
        )
        return out.transpose(0, 1).reshape(len(x), -1) @ self.w_o


def feed_forward(d_model: int, d_ff: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))


class EncoderBlock(nn.Module):
    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attn, self.ffn = MultiHead(d_model, h), feed_forward(d_model, d_ff)
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        x = self.ln1(x + self.drop(self.attn(x, x, allowed)))
        return self.ln2(x + self.drop(self.ffn(x)))


class DecoderBlock(nn.Module):
    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn, self.cross_attn = MultiHead(d_model, h), MultiHead(d_model, h)
        self.ffn = feed_forward(d_model, d_ff)
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, y: Tensor, memory: Tensor, causal: Tensor, cross: Tensor) -> Tensor:
        y = self.ln1(y + self.drop(self.self_attn(y, y, causal)))
        y = self.ln2(y + self.drop(self.cross_attn(y, memory, cross)))
        return self.ln3(y + self.drop(self.ffn(y)))


def key_mask(queries: int, keys: int, real: int, device: torch.device) -> Tensor:
    """``[queries, keys]``: every query may see the first ``real`` keys."""
    return (torch.arange(keys, device=device) < real).expand(queries, keys)


class Seq2Seq(nn.Module):
    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        d_model: int = 512,
        h: int = 8,
        d_ff: int = 2048,
        layers: int = 6,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.hparams = dict(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            d_model=d_model,
            h=h,
            d_ff=d_ff,
            layers=layers,
            dropout=dropout,
        )
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
        self.enc = nn.ModuleList(EncoderBlock(d_model, h, d_ff, dropout) for _ in range(layers))
        self.dec = nn.ModuleList(DecoderBlock(d_model, h, d_ff, dropout) for _ in range(layers))
        self.out = nn.Linear(d_model, tgt_vocab)
        self.drop = nn.Dropout(dropout)

    def embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        """``ids [L]`` -> ``[L, d_model]``: dropout(sqrt(d_model) E + PE)."""
        x = table(ids) * math.sqrt(self.d_model)
        return self.drop(x + sinusoid(len(ids), self.d_model).to(x))

    def encode_one(self, x: Tensor, n_src: int) -> Tensor:
        """The encoder over one embedded sequence ``[S, d]`` whose first ``n_src`` are real."""
        allowed = key_mask(len(x), len(x), n_src, x.device)
        for block in self.enc:
            x = block(x, allowed)
        return x

    def decode_one(self, y: Tensor, memory: Tensor, n_src: int) -> Tensor:
        t = len(y)
        causal = torch.ones(t, t, dtype=torch.bool, device=y.device).tril()
        cross = key_mask(t, len(memory), n_src, y.device)
        for block in self.dec:
            y = block(y, memory, causal, cross)
        return y

    def forward(self, src: Tensor, tgt_in: Tensor, src_lengths: list[int]) -> Tensor:
        """Logits ``[B, T, V]`` for a batch, one sequence at a time."""
        out = []
        for s, t, n in zip(src, tgt_in, src_lengths, strict=True):
            memory = self.encode_one(self.embed(self.src_embed, s), n)
            out.append(self.out(self.decode_one(self.embed(self.tgt_embed, t), memory, n)))
        return torch.stack(out)

    def next_logits(self, memory: Tensor, n_src: int, prefix: Tensor) -> Tensor:
        """``[V]``: the logits of the token after ``prefix`` (the prefix is decoded again)."""
        return self.out(self.decode_one(self.embed(self.tgt_embed, prefix), memory, n_src)[-1])

    def memory(self, src: Tensor, n_src: int) -> Tensor:
        return self.encode_one(self.embed(self.src_embed, src), n_src)


def shift_right(tgt: Tensor, bos: int) -> Tensor:
    return torch.cat([tgt.new_full((1,), bos), tgt[:-1]])


def length_penalty(length: int, alpha: float) -> float:
    """Wu et al. (2016): ((5 + |Y|) / 6)^alpha."""
    return ((5 + length) / 6) ** alpha


@torch.no_grad()
def greedy(model: Seq2Seq, src: Tensor, n_src: int, bos: int, eos: int, max_len: int) -> list[int]:
    memory, out = model.memory(src, n_src), [bos]
    for _ in range(max_len):
        out.append(
            int(model.next_logits(memory, n_src, torch.tensor(out, device=src.device)).argmax())
        )
        if out[-1] == eos:
            break
    return out[1:]


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    n_src: int,
    bos: int,
    eos: int,
    beam: int = 4,
    alpha: float = 0.6,
    extra: int = 50,
) -> list[int]:
    """Beam search over at most ``n_src + extra`` tokens: each step keeps the best ``beam``
    minus the number of ended hypotheses; the best ended hypothesis by log P / lp wins."""
    memory = model.memory(src, n_src)
    alive: list[tuple[list[int], float]] = [([bos], 0.0)]
    ended: list[tuple[list[int], float]] = []
    for _ in range(n_src + extra):
        width = beam - len(ended)
        candidates = []
        for tokens, score in alive:
            prefix = torch.tensor(tokens, device=src.device)
            log_probs = model.next_logits(memory, n_src, prefix).double().log_softmax(-1)
            top = log_probs.topk(width)
            candidates += [
                ([*tokens, int(i)], score + float(v))
                for v, i in zip(top.values, top.indices, strict=True)
            ]
        candidates.sort(key=lambda c: -c[1])
        alive = []
        for tokens, score in candidates[:width]:
            (ended if tokens[-1] == eos else alive).append((tokens, score))
        if not alive:
            break
    pool = ended + alive  # alive ones only if the length limit cut them
    best = max(pool, key=lambda c: c[1] / length_penalty(len(c[0]) - 1, alpha))
    return best[0][1:]


def train_loss(logits: Tensor, target: Tensor, pad: int) -> Tensor:
    """Cross-entropy summed over the real target tokens of every sequence."""
    return torch.stack(
        [
            F.cross_entropy(z, y, ignore_index=pad, reduction="sum")
            for z, y in zip(logits, target, strict=True)
        ]
    ).sum()


def make_optimizer(params: Any, lr: float = 3e-4) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.98), eps=1e-9)


# -- the adapter -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Slot:
    """A canonical parameter: the tensor holding it, and the layout maps both ways."""

    tensor: Tensor
    read: Callable[[Tensor], Tensor] = lambda t: t
    write: Callable[[Tensor], Tensor] = lambda c: c


def _head_slot(w: Tensor, h: int) -> _Slot:
    """``[d_model, h * d_k]`` (heads as column blocks) <-> ``[h, d_model, d_k]``."""
    d = w.shape[0]
    return _Slot(
        w,
        lambda t: t.reshape(d, h, -1).permute(1, 0, 2),
        lambda c: c.permute(1, 0, 2).reshape(d, -1),
    )


def _transposed(t: Tensor) -> _Slot:
    return _Slot(t, lambda t: t.T, lambda c: c.T)


def _attention(prefix: str, m: MultiHead) -> dict[str, _Slot]:
    out = {f"{prefix}W_{x}": _head_slot(getattr(m, f"w_{x.lower()}"), m.h) for x in "QKV"}
    out[f"{prefix}W_O"] = _Slot(m.w_o)
    return out


def _ffn(prefix: str, ffn: nn.Sequential) -> dict[str, _Slot]:
    return {
        f"{prefix}W_1": _transposed(ffn[0].weight),
        f"{prefix}b_1": _Slot(ffn[0].bias),
        f"{prefix}W_2": _transposed(ffn[2].weight),
        f"{prefix}b_2": _Slot(ffn[2].bias),
    }


def _norms(prefix: str, block: nn.Module, n: int) -> dict[str, _Slot]:
    out = {}
    for k in range(1, n + 1):
        ln = getattr(block, f"ln{k}")
        out[f"{prefix}norm_{k}.gamma"], out[f"{prefix}norm_{k}.beta"] = (
            _Slot(ln.weight),
            _Slot(ln.bias),
        )
    return out


def _slots(module: nn.Module) -> dict[str, _Slot]:
    if isinstance(module, MultiHead):
        return _attention("", module)
    if isinstance(module, nn.Sequential):
        return _ffn("", module)
    assert isinstance(module, Seq2Seq)
    out: dict[str, _Slot] = {}
    for i, block in enumerate(module.enc):
        out |= _attention(f"encoder.{i}.self_attn.", block.attn)
        out |= _ffn(f"encoder.{i}.ffn.", block.ffn) | _norms(f"encoder.{i}.", block, 2)
    for i, block in enumerate(module.dec):
        out |= _attention(f"decoder.{i}.self_attn.", block.self_attn)
        out |= _attention(f"decoder.{i}.cross_attn.", block.cross_attn)
        out |= _ffn(f"decoder.{i}.ffn.", block.ffn) | _norms(f"decoder.{i}.", block, 3)
    out["src_embedding"], out["tgt_embedding"] = (
        _Slot(module.src_embed.weight),
        _Slot(module.tgt_embed.weight),
    )
    out["generator.W"], out["generator.b"] = _transposed(module.out.weight), _Slot(module.out.bias)
    return out


def _lengths(src_mask: Tensor) -> list[int]:
    """The number of real tokens per sequence; the model knows no other padding than a tail."""
    lengths = src_mask.sum(-1)
    positions = torch.arange(src_mask.shape[-1], device=src_mask.device)
    if not torch.equal(src_mask, positions < lengths[:, None]):
        raise NotProvided(
            "padding mask",
            "unbatched takes lengths: padding must follow the real tokens of a sequence",
        )
    return [int(n) for n in lengths]


class UnbatchedAdapter:
    """Loops over the batch where the suite hands over a batch; translates padding masks into
    lengths and attention masks into per-sequence ``[Lq, Lk]`` matrices."""

    name = "outside-unbatched"
    not_provided: ClassVar[dict[str, str]] = {
        "lr_schedule": "unbatched trains at a constant learning rate",
        "decode_incremental": "unbatched has no key/value cache: each step decodes the prefix",
    }

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return torch.stack([attend(*a)[0] for a in self._per_sequence(q, k, v, mask)])

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return torch.stack([attend(*a)[1] for a in self._per_sequence(q, k, v, mask)])

    @staticmethod
    def _per_sequence(
        q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
        masks = [None] * len(q) if mask is None else mask.expand(len(q), q.shape[1], k.shape[1])
        return zip(q, k, v, masks, strict=True)

    def multi_head(self, d_model: int, h: int) -> nn.Module:
        return MultiHead(d_model, h)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        kv = x if memory is None else memory
        return torch.stack([module(q, m, a) for q, m, _, a in self._per_sequence(x, kv, kv, mask)])

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return feed_forward(d_model, d_ff)

    def feed_forward_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        return torch.stack([module(s) for s in x])

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return sinusoid(length, d_model)

    def model(self, config: Config) -> nn.Module:
        return Seq2Seq(
            config.src_vocab,
            config.tgt_vocab,
            config.d_model,
            config.h,
            config.d_ff,
            config.n_layers,
            config.dropout,
        )

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        return {name: s.read(s.tensor.detach()).clone() for name, s in _slots(module).items()}

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        slots = _slots(module)
        with torch.no_grad():
            for name, value in params.items():
                slot = slots[name]
                if value.shape != slot.read(slot.tensor).shape:
                    raise ValueError(f"{name}: shape {tuple(value.shape)}")
                slot.tensor.copy_(slot.write(value))

    def embed_source(self, model: Seq2Seq, src: Tensor) -> Tensor:
        return torch.stack([model.embed(model.src_embed, s) for s in src])

    def embed_target(self, model: Seq2Seq, tgt: Tensor) -> Tensor:
        return torch.stack([model.embed(model.tgt_embed, t) for t in tgt])

    def encode(self, model: Seq2Seq, x: Tensor, src_mask: Tensor) -> Tensor:
        lengths = _lengths(src_mask)
        return torch.stack([model.encode_one(s, n) for s, n in zip(x, lengths, strict=True)])

    def decode(self, model: Seq2Seq, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        lengths = _lengths(src_mask)
        return torch.stack(
            [model.decode_one(t, m, n) for t, m, n in zip(y, memory, lengths, strict=True)]
        )

    def project(self, model: Seq2Seq, y: Tensor) -> Tensor:
        return model.out(y)

    def forward(self, model: Seq2Seq, src: Tensor, tgt_in: Tensor, src_mask: Tensor) -> Tensor:
        return model(src, tgt_in, _lengths(src_mask))

    def incremental_logits(
        self, model: Seq2Seq, src: Tensor, src_mask: Tensor, tgt_in: Tensor
    ) -> Tensor:
        """The steps of the decoding loop (``next_logits``), fed the given tokens."""
        out = []
        for s, n, t in zip(src, _lengths(src_mask), tgt_in, strict=True):
            memory = model.memory(s, n)
            out.append(
                torch.stack([model.next_logits(memory, n, t[: i + 1]) for i in range(len(t))])
            )
        return torch.stack(out)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        return torch.stack([shift_right(t, bos_id) for t in tgt])

    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return train_loss(logits, target, pad_id)

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        return make_optimizer(params)

    def greedy(
        self, model: Seq2Seq, src: Tensor, src_mask: Tensor, config: Config, max_len: int
    ) -> Tensor:
        rows = [
            greedy(model, s, n, config.bos_id, config.eos_id, max_len)
            for s, n in zip(src, _lengths(src_mask), strict=True)
        ]
        width = max(map(len, rows))
        return torch.tensor(
            [r + [config.pad_id] * (width - len(r)) for r in rows],
            dtype=torch.long,
            device=src.device,
        )

    def beam_search(
        self, model: Seq2Seq, src: Tensor, src_mask: Tensor, config: Config
    ) -> list[int]:
        (n,) = _lengths(src_mask)
        return beam_search(model, src[0], n, config.bos_id, config.eos_id)

    def length_penalty(self, length: int, alpha: float) -> float:
        return length_penalty(length, alpha)

    def save(self, model: Seq2Seq, path: str | os.PathLike[str]) -> None:
        torch.save({"hparams": model.hparams, "weights": model.state_dict()}, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        saved = torch.load(path, weights_only=True)
        first = next(iter(saved["weights"].values()))
        model = Seq2Seq(**saved["hparams"]).to(first.device, first.dtype)
        model.load_state_dict(saved["weights"])
        return model


adapter = UnbatchedAdapter()

VERDICTS: dict[str, tuple[str, str]] = {
    "3.4/weight-tying": ("VARIANT untied-embeddings", "three separate matrices"),
    "3.4/output-softmax": ("VARIANT generator-bias", "the generator is an nn.Linear with bias"),
    "5.3/eq3": ("NOT PROVIDED", "constant learning rate, no schedule"),
    "5.4/label-smoothing": ("DEVIATES no-label-smoothing", "plain F.cross_entropy, summed"),
    "table3/param-formula": (
        "VARIANT generator-bias, untied-embeddings",
        "three V x d matrices and a generator bias",
    ),
}
"""What a careful reader of the paper says of every clause that does not simply CONFORM."""
