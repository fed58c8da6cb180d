"""The adapter for the reference implementation in :mod:`transformer`.

It is also the worked example of an adapter: each method translates between the suite's
conventions (:mod:`spec.adapter`) and the implementation's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

import transformer as T
from spec.adapter import Config, Params

# canonical name -> (module attribute path, read: param -> canonical, write: canonical -> param)
Mapping = dict[str, tuple[str, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]]


def _transpose(t: Tensor) -> Tensor:
    return t.t()


def _same(t: Tensor) -> Tensor:
    return t


def _attention_map(prefix: str, module: T.MultiHeadAttention) -> Mapping:
    h, d, dk = module.h, module.d_model, module.d_k

    def head_rows(i: int) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        # in_proj.weight rows [i*d, (i+1)*d) hold W^Q, W^K, W^V as [h*d_k, d_model]
        def read(w: Tensor) -> Tensor:
            return w[i * d : (i + 1) * d].reshape(h, dk, d).transpose(1, 2)

        def write(c: Tensor) -> Tensor:
            return c.transpose(1, 2).reshape(d, d)

        return read, write

    out: Mapping = {}
    for i, name in enumerate(("W_Q", "W_K", "W_V")):
        read, write = head_rows(i)
        out[prefix + name] = (f"in_proj.weight#{i}", read, write)
    out[prefix + "W_O"] = ("out_proj.weight", _transpose, _transpose)
    return out


def _ffn_map(prefix: str) -> Mapping:
    return {
        prefix + "W_1": ("w_1.weight", _transpose, _transpose),
        prefix + "b_1": ("w_1.bias", _same, _same),
        prefix + "W_2": ("w_2.weight", _transpose, _transpose),
        prefix + "b_2": ("w_2.bias", _same, _same),
    }


def _norm_map(prefix: str, residual: str) -> Mapping:
    return {
        prefix + "gamma": (f"{residual}.norm.weight", _same, _same),
        prefix + "beta": (f"{residual}.norm.bias", _same, _same),
    }


def _layout(module: nn.Module) -> Mapping:
    """The canonical names of ``module``'s parameters (module, FFN or whole model)."""
    if isinstance(module, T.MultiHeadAttention):
        return _attention_map("", module)
    if isinstance(module, T.FeedForward):
        return _ffn_map("")
    if not isinstance(module, T.Transformer):
        raise TypeError(f"no parameter layout for {type(module).__name__}")
    out: Mapping = {
        "src_embedding": ("src_embed.weight", _same, _same),
        "tgt_embedding": ("tgt_embed.weight", _same, _same),
        "generator.W": ("generator.weight", _transpose, _transpose),
    }
    for stack, layers in (("encoder", module.encoder.layers), ("decoder", module.decoder.layers)):
        for i, layer in enumerate(layers):
            base = f"{stack}.layers.{i}."
            subs = ["self_attn", "cross_attn"] if stack == "decoder" else ["self_attn"]
            for sub in subs:
                attn = getattr(layer, sub)
                for name, (path, r, w) in _attention_map(f"{stack}.{i}.{sub}.", attn).items():
                    out[name] = (f"{base}{sub}.{path}", r, w)
            for name, (path, r, w) in _ffn_map(f"{stack}.{i}.ffn.").items():
                out[name] = (f"{base}ffn.{path}", r, w)
            for k in range(1, 4 if stack == "decoder" else 3):
                for name, (path, r, w) in _norm_map(
                    f"{stack}.{i}.norm_{k}.", f"residual_{k}"
                ).items():
                    out[name] = (base + path, r, w)
    return out


def _tensors(module: nn.Module) -> Callable[[str], Tensor]:
    """The parameter of ``module`` at a layout path (``#i``, a slice of it, is ignored here): one
    lookup in a table of every parameter, not a walk down the module tree per path."""
    table = dict(module.named_parameters(remove_duplicate=False))  # tied ones under each name
    return lambda path: table[path.split("#")[0]]


class ReferenceAdapter:
    """Adapter for :mod:`transformer`, the reference implementation of this project."""

    name = "reference"

    # -- 3.2.1 ---------------------------------------------------------------------------
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return T.scaled_dot_product_attention(q, k, v, mask)[0]

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        weights = T.scaled_dot_product_attention(q, k, v, mask, need_weights=True)[1]
        assert weights is not None
        return weights

    # -- 3.2.2, 3.3, 3.5 ---------------------------------------------------------------------
    def multi_head(self, d_model: int, h: int) -> nn.Module:
        return T.MultiHeadAttention(d_model, h)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        return module(x, memory, mask)[0]

    def feed_forward(self, d_model: int, d_ff: int) -> nn.Module:
        return T.FeedForward(d_model, d_ff)

    def feed_forward_forward(self, module: nn.Module, x: Tensor) -> Tensor:
        return module(x)

    def positional_encoding(self, length: int, d_model: int) -> Tensor:
        return T.positional_encoding(length, d_model, dtype=torch.float64)

    # -- the model ---------------------------------------------------------------------------
    def model(self, config: Config) -> nn.Module:
        return T.Transformer(
            T.TransformerConfig(
                src_vocab=config.src_vocab,
                tgt_vocab=config.tgt_vocab,
                d_model=config.d_model,
                h=config.h,
                d_ff=config.d_ff,
                n_layers=config.n_layers,
                dropout=config.dropout,
                max_len=config.max_len,
                share_vocab=config.shared_vocab,
                pad_id=config.pad_id,
                bos_id=config.bos_id,
                eos_id=config.eos_id,
            )
        )

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        tensor = _tensors(module)
        return {
            name: read(tensor(path).detach()) for name, (path, read, _) in _layout(module).items()
        }

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        layout = _layout(module)
        unknown = sorted(set(params) - set(layout))
        if unknown:
            raise KeyError(f"unknown parameters {unknown}")
        tensor = _tensors(module)
        with torch.no_grad():
            for name, value in params.items():
                path, _, write = layout[name]
                target = tensor(path)
                if "#" in path:  # one of W^Q, W^K, W^V inside in_proj.weight
                    i = int(path.split("#")[1])
                    d = target.size(1)
                    target[i * d : (i + 1) * d].copy_(write(value))
                else:
                    target.copy_(write(value))

    def embed_source(self, model: T.Transformer, src: Tensor) -> Tensor:
        return model.positions(model.src_embed(src))

    def embed_target(self, model: T.Transformer, tgt: Tensor) -> Tensor:
        return model.positions(model.tgt_embed(tgt))

    def encode(self, model: T.Transformer, x: Tensor, src_mask: Tensor) -> Tensor:
        return model.encoder(x, src_mask.unsqueeze(1))

    def decode(self, model: T.Transformer, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        return model.decoder(y, memory, src_mask.unsqueeze(1))

    def decode_incremental(
        self, model: T.Transformer, y: Tensor, memory: Tensor, src_mask: Tensor
    ) -> Tensor:
        state = model.new_state()
        steps = [
            model.decoder(y[:, t : t + 1], memory, src_mask.unsqueeze(1), state.layers, t)
            for t in range(y.size(1))
        ]
        return torch.cat(steps, dim=1)

    def project(self, model: T.Transformer, y: Tensor) -> Tensor:
        return model.generator(y)

    def decoder_input(self, tgt: Tensor, bos_id: int) -> Tensor:
        return T.shift_right(tgt, bos_id)

    # -- training and decoding -------------------------------------------------------------
    def loss(self, logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
        return T.LabelSmoothingLoss(logits.size(-1), pad_id, 0.1)(logits, target)

    def lr_schedule(self, d_model: int, warmup: int) -> Callable[[int], float]:
        return lambda step: T.noam_rate(step, d_model, warmup)

    def optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return T.make_optimizer(params)

    def beam_search(
        self, model: T.Transformer, src: Tensor, src_mask: Tensor, config: Config
    ) -> list[int]:
        return T.beam_search(model, src)

    def greedy(
        self, model: T.Transformer, src: Tensor, src_mask: Tensor, config: Config, max_len: int
    ) -> Tensor:
        return T.greedy_decode(model, src, max_len)

    def length_penalty(self, length: int, alpha: float) -> float:
        return T.length_penalty(length, alpha)

    def save(self, model: T.Transformer, path: str | os.PathLike[str]) -> None:
        T.save_checkpoint(model, path)

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        return T.load_checkpoint(path)


adapter = ReferenceAdapter()
