"""A compact Transformer written from scratch, tutorial style, with its own conventions.

It is the implementation that the guide "Point the suite at your own implementation" adapts.
Its conventions differ from the suite's on purpose, so that the adapter has work to do:

* masks are ``True`` where a position is *hidden* (the suite's are ``True`` = may attend);
* every projection is an ``nn.Linear`` (weights ``[out, in]``, with biases), and the heads of
  a projection are stored side by side in one matrix;
* one sinusoid table and one embedding matrix serve both stacks (a shared vocabulary).
"""

import math

import torch
from torch import nn


def attention(q, k, v, hide=None):
    """softmax(q k^T / sqrt(d_k)) v; ``hide`` is True where a key must not be seen."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if hide is not None:
        scores = scores.masked_fill(hide, float("-inf"))
    return scores.softmax(dim=-1) @ v


class MultiHead(nn.Module):
    def __init__(self, d_model, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, x, memory=None, hide=None):
        memory = x if memory is None else memory
        b, n, d = x.shape

        def split(t):  # [b, len, d] -> [b, heads, len, d / heads]
            return t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)

        hide = None if hide is None else hide.unsqueeze(-3)  # the same mask for every head
        heads = attention(split(self.q(x)), split(self.k(memory)), split(self.v(memory)), hide)
        return self.out(heads.transpose(1, 2).reshape(b, n, d))


def feed_forward(d_model, d_ff):
    return nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))


class Layer(nn.Module):
    """An encoder layer, or with ``cross=True`` a decoder layer: post-norm sub-layers."""

    def __init__(self, d_model, heads, d_ff, dropout, cross=False):
        super().__init__()
        self.self_attn = MultiHead(d_model, heads)
        self.cross_attn = MultiHead(d_model, heads) if cross else None
        self.ffn = feed_forward(d_model, d_ff)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3 if cross else 2))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, hide, memory=None, memory_hide=None):
        x = self.norms[0](x + self.drop(self.self_attn(x, hide=hide)))
        if self.cross_attn is not None:
            x = self.norms[1](x + self.drop(self.cross_attn(x, memory, memory_hide)))
        return self.norms[-1](x + self.drop(self.ffn(x)))


def sinusoids(length, d_model):
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    angle = pos / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = angle.sin(), angle.cos()
    return table


class Transformer(nn.Module):
    def __init__(
        self, vocab, d_model=512, heads=8, d_ff=2048, layers=6, dropout=0.1, max_len=512, pad=0
    ):
        super().__init__()
        self.args = dict(
            vocab=vocab,
            d_model=d_model,
            heads=heads,
            d_ff=d_ff,
            layers=layers,
            dropout=dropout,
            max_len=max_len,
            pad=pad,
        )
        self.pad, self.d_model = pad, d_model
        self.embed = nn.Embedding(vocab, d_model)
        self.register_buffer("pe", sinusoids(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.ModuleList(Layer(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.decoder = nn.ModuleList(
            Layer(d_model, heads, d_ff, dropout, cross=True) for _ in range(layers)
        )
        self.generator = nn.Linear(d_model, vocab, bias=False)
        self.generator.weight = self.embed.weight  # one matrix for embeddings and pre-softmax

    def embed_tokens(self, ids):
        x = self.embed(ids) * math.sqrt(self.d_model)
        return self.drop(x + self.pe[: ids.size(1)].to(x.dtype))

    def encode(self, x, src_hide):
        for layer in self.encoder:
            x = layer(x, src_hide)
        return x

    def decode(self, y, memory, src_hide):
        n = y.size(1)
        future = torch.ones(n, n, dtype=torch.bool, device=y.device).triu(1)
        for layer in self.decoder:
            y = layer(y, future, memory, src_hide)
        return y

    def forward(self, src, tgt_in):
        src_hide = (src == self.pad).unsqueeze(1)  # [b, 1, src_len]
        memory = self.encode(self.embed_tokens(src), src_hide)
        return self.generator(self.decode(self.embed_tokens(tgt_in), memory, src_hide))

    @torch.no_grad()
    def greedy(self, src, bos, max_len):
        src_hide = (src == self.pad).unsqueeze(1)
        memory = self.encode(self.embed_tokens(src), src_hide)
        out = torch.full((src.size(0), 1), bos, dtype=torch.long, device=src.device)
        for _ in range(max_len):
            logits = self.generator(self.decode(self.embed_tokens(out), memory, src_hide))
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return out[:, 1:]
