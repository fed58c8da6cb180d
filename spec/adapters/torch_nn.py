"""The adapter for PyTorch's own ``torch.nn.Transformer`` and ``torch.nn.MultiheadAttention``.

This adapter is *truthful*: it only translates conventions (mask polarity, the fused QKV layout,
``Linear``'s transposed weights) and never adds behaviour that PyTorch does not have. What
``torch.nn`` leaves out of the paper is NOT PROVIDED; what it adds or changes is what the suite
reports as a VARIANT or a deviation. Everything below was checked against torch 2.x's source
(``torch/nn/modules/transformer.py``, ``activation.py``, ``functional.py``).

What torch.nn does, clause by clause
------------------------------------
3.1 Encoder and decoder stacks
    ``nn.Transformer`` is post-norm by default (``norm_first=False``): LayerNorm(x + Sublayer(x)),
    with ``layer_norm_eps=1e-5`` and the biased variance of ``F.layer_norm``. Layers are deep
    copies (``_get_clones``), each with its own parameters. It **adds a final LayerNorm** after
    both stacks (``encoder.norm``, ``decoder.norm``): variant ``final-norm`` of
    3.1/no-final-norm. Causal masking is **the caller's job**: ``nn.TransformerDecoder`` applies
    no mask unless given ``tgt_mask``; :meth:`TorchNNAdapter.decode` passes
    ``nn.Transformer.generate_square_subsequent_mask(T)``, which is what torch.nn's documentation
    tells its users to do. There is no shifted-right decoder input (3.1/shifted-right: NOT
    PROVIDED, no ``decoder_input``).
3.2.1 Scaled dot-product attention
    ``F.scaled_dot_product_attention`` computes Eq. 1 with the default scale 1/sqrt(d_k) (the
    size of the last axis of Q); its boolean mask means True = take part, as ours does. It does
    not return the attention weights, so ``attention_weights`` is NOT PROVIDED (the suite reads
    the weights through V = I instead). Masked scores are -inf before the softmax.
3.2.2 Multi-head attention
    ``nn.MultiheadAttention(d_model, h)`` projects the whole input per head through one fused
    ``in_proj_weight`` ``[3 d_model, d_model]`` (rows: Q, K, V; each block's rows
    ``[i d_k, (i+1) d_k)`` are head i) and ``out_proj``. With PyTorch's default ``bias=True``
    every projection has a bias: variant ``projection-biases``. Its attention-mask convention is
    the inverse of ours (bool True = *not* allowed) and a 3-D mask must be
    ``[batch * h, L_q, L_k]``; the adapter translates (a 2-D mask is expanded, never changed).
    In evaluation mode without autograd, self-attention (query is key is value) with an even
    number of heads takes the fused ``_native_multi_head_attention`` fast path (and encoder
    layers ``_transformer_encoder_layer_fwd``); their numerics agree with the slow path to
    rounding.
3.2.3 Applications of attention
    Encoder self-attention is unmasked apart from padding; decoder cross-attention sees every
    source position apart from padding (``memory_key_padding_mask``); decoder self-attention is
    causal only through the ``tgt_mask`` the caller passes (see 3.1).
3.3 Position-wise feed-forward networks
    Inside each layer: ``linear2(dropout(relu(linear1(x))))``, Eq. 2 with ReLU (the default
    ``activation``). PyTorch has **no standalone FFN module**, so ``feed_forward`` and
    ``feed_forward_forward`` are NOT PROVIDED; the FFN is still checked inside the model through
    its parameters ``encoder.{i}.ffn.*`` and ``decoder.{i}.ffn.*``.
3.4 Embeddings and softmax, 3.5 Positional encoding
    ``nn.Transformer`` takes already-embedded inputs: it has **no token embeddings, no
    sqrt(d_model) scale, no weight tying, no pre-softmax linear map and no positional encoding**.
    ``embed_source``, ``embed_target``, ``project`` and ``positional_encoding`` are NOT PROVIDED.
5.3 Optimizer
    torch.nn prescribes no optimizer and no learning-rate schedule. ``torch.optim.Adam``'s
    defaults (betas (0.9, 0.999), eps 1e-8) are not a choice ``nn.Transformer`` makes, so
    offering them here would judge the adapter's author, not PyTorch: ``optimizer`` and
    ``lr_schedule`` are NOT PROVIDED.
5.4 Regularization
    ``dropout=P`` is applied to each sub-layer output before the residual add (``dropout1``,
    ``dropout2``, ``dropout3``: the paper's residual dropout), **and also** to the attention
    weights (``nn.MultiheadAttention(dropout=P)``) and after the FFN's ReLU (``layer.dropout``):
    variants ``attention-dropout`` and ``ffn-dropout`` of 5.4/dropout-elsewhere. There is no
    embedding dropout (no embeddings: NOT PROVIDED) and no label-smoothed loss (``loss`` NOT
    PROVIDED; ``nn.CrossEntropyLoss(label_smoothing=...)`` is a separate loss, not part of
    ``nn.Transformer``). Evaluation mode disables every dropout.
6.1 Beam search
    None: ``beam_search``, ``greedy`` and ``length_penalty`` are NOT PROVIDED.
Table 3 parameter counts
    Attention blocks carry 4 d^2 + 4 d parameters (biases), each stack adds one final LayerNorm
    (2 d), there are no embeddings.
Practice
    * padding: ``src_key_padding_mask`` (bool, True = padding: the adapter passes
      ``~src_mask``) masks padded keys. **Fast path**: ``nn.TransformerEncoder`` is built with
      ``enable_nested_tensor=True`` (the default; the adapter leaves it). In evaluation mode,
      with autograd off (``torch.no_grad()`` / ``inference_mode``) and an even number of heads,
      it packs the batch into a nested tensor and the encoder stack's output is **zero at
      padded positions** before the final LayerNorm (so ``LayerNorm(0) = beta`` there), where
      the paper's equations (and PyTorch's own slow path, used whenever autograd is on) give the
      padded queries' attention over the real keys. Outputs at real positions agree to
      rounding. This is PyTorch's behaviour, not the adapter's: the adapter never chooses the
      grad mode.
    * incremental decoding: torch.nn has no key/value cache: ``decode_incremental`` is NOT
      PROVIDED.
    * save/load: PyTorch's documented way is ``torch.save(model.state_dict())`` and rebuilding
      the module from its constructor arguments; torch.nn stores no configuration, so the
      adapter saves the ``nn.Transformer`` constructor arguments (read off the module) next to
      the state dict and loads with ``torch.load(..., weights_only=True)``.
    * odd h: ``nn.TransformerEncoder`` warns at construction that it cannot use nested tensors
      (its fast path needs an even number of heads); the warning is PyTorch's.

Canonical parameter names (see :mod:`spec.adapter`) map onto PyTorch's as follows:
``W_Q``/``W_K``/``W_V`` <- rows ``[0, d)``, ``[d, 2d)``, ``[2d, 3d)`` of ``in_proj_weight``
(transposed, split per head), ``b_Q``/``b_K``/``b_V`` <- ``in_proj_bias`` blocks, ``W_O`` <-
``out_proj.weight.T``, ``b_O`` <- ``out_proj.bias``; ``ffn.W_1`` <- ``linear1.weight.T``,
``ffn.b_1`` <- ``linear1.bias``, ``ffn.W_2`` <- ``linear2.weight.T``, ``ffn.b_2`` <-
``linear2.bias``; ``norm_k.gamma``/``beta`` <- ``normk.weight``/``bias``; the decoder's
``cross_attn`` is ``multihead_attn``; ``encoder.norm``/``decoder.norm`` are the final norms.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spec.adapter import Config, Params
from spec.adapters.layout import Layout, Slot, heads, read, transpose, write

__all__ = ["TorchNNAdapter", "adapter"]

FORMAT = "attention-spec/torch.nn-state-dict/1"
"""Marks a file written by :meth:`TorchNNAdapter.save`."""


def _attention_layout(prefix: str, path: str, module: nn.MultiheadAttention) -> Layout:
    """``nn.MultiheadAttention``: fused ``in_proj_weight`` rows Q, K, V; ``out_proj``."""
    if not module._qkv_same_embed_dim or module.in_proj_weight is None:
        raise TypeError(
            "nn.MultiheadAttention with kdim/vdim != embed_dim keeps separate q/k/v_proj_weight; "
            "this adapter reads the fused in_proj_weight of the default construction only"
        )
    return heads(prefix, path, module.num_heads, module.head_dim, module.embed_dim,
                 bias=module.in_proj_bias is not None, fused="in_proj")


def _ffn_layout(prefix: str, path: str, layer: nn.Module) -> Layout:
    """The FFN inside a ``TransformerEncoderLayer`` / ``TransformerDecoderLayer``."""
    out: Layout = {}
    for k in (1, 2):
        linear = getattr(layer, f"linear{k}")
        out[f"{prefix}W_{k}"] = Slot(f"{path}linear{k}.weight", transpose, transpose)
        if linear.bias is not None:
            out[f"{prefix}b_{k}"] = Slot(f"{path}linear{k}.bias")
    return out


def _norm_layout(prefix: str, path: str, norm: nn.LayerNorm) -> Layout:
    out: Layout = {}
    if norm.weight is not None:
        out[f"{prefix}gamma"] = Slot(f"{path}weight")
    if norm.bias is not None:
        out[f"{prefix}beta"] = Slot(f"{path}bias")
    return out


def _layout(module: nn.Module) -> Layout:
    """The canonical names of ``module``'s parameters (attention block or whole model)."""
    if isinstance(module, nn.MultiheadAttention):
        return _attention_layout("", "", module)
    if not isinstance(module, nn.Transformer):
        raise TypeError(
            f"no parameter layout for {type(module).__name__}: this adapter knows "
            "nn.MultiheadAttention and nn.Transformer"
        )
    out: Layout = {}
    stacks: tuple[tuple[str, Any], ...] = (
        ("encoder", module.encoder),
        ("decoder", module.decoder),
    )
    for stack, container in stacks:
        attentions = {"self_attn": "self_attn"}
        if stack == "decoder":
            attentions["cross_attn"] = "multihead_attn"
        norms = 3 if stack == "decoder" else 2
        for i, layer in enumerate(container.layers):
            name, path = f"{stack}.{i}.", f"{stack}.layers.{i}."
            for ours, theirs in attentions.items():
                out.update(
                    _attention_layout(f"{name}{ours}.", f"{path}{theirs}.", getattr(layer, theirs))
                )
            out.update(_ffn_layout(f"{name}ffn.", path, layer))
            for k in range(1, norms + 1):
                out.update(
                    _norm_layout(f"{name}norm_{k}.", f"{path}norm{k}.", getattr(layer, f"norm{k}"))
                )
        if container.norm is not None:  # the extra LayerNorm after the stack (final-norm)
            out.update(_norm_layout(f"{stack}.norm.", f"{stack}.norm.", container.norm))
    return out


def _torch_attn_mask(
    mask: Tensor, batch: int, lq: int, lk: int, h: int, device: torch.device
) -> Tensor:
    """Ours (bool, True = may attend, broadcasting to ``[B, Lq, Lk]``) -> PyTorch's
    ``attn_mask`` for ``nn.MultiheadAttention`` (bool, True = *not* allowed,
    ``[B * h, Lq, Lk]`` with index ``b * h + head``)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
    allowed = torch.broadcast_to(mask.to(device), (batch, lq, lk))
    return (~allowed).repeat_interleave(h, dim=0)


def _padding(src_mask: Tensor) -> Tensor:
    """Ours (``[B, S]`` bool, True = real token) -> PyTorch's key padding mask (True = pad)."""
    if src_mask.dtype != torch.bool:
        raise TypeError(f"padding mask must be bool (True = real token), got {src_mask.dtype}")
    return ~src_mask


def _constructor_arguments(model: nn.Transformer) -> dict[str, Any]:
    """The ``nn.Transformer`` constructor arguments that rebuild ``model``, read off it."""
    enc = model.encoder.layers[0]
    activation = enc.activation
    names = {F.relu: "relu", F.gelu: "gelu"}
    if activation not in names:
        raise TypeError(f"cannot save an nn.Transformer with activation {activation!r}")
    return {
        "d_model": model.d_model,
        "nhead": model.nhead,
        "num_encoder_layers": len(model.encoder.layers),
        "num_decoder_layers": len(model.decoder.layers),
        "dim_feedforward": enc.linear1.out_features,
        "dropout": float(enc.dropout.p),
        "activation": names[activation],
        "layer_norm_eps": float(enc.norm1.eps),
        "batch_first": bool(model.batch_first),
        "norm_first": bool(enc.norm_first),
        "bias": enc.self_attn.in_proj_bias is not None,
    }


class TorchNNAdapter:
    """Adapter for ``torch.nn.Transformer`` / ``torch.nn.MultiheadAttention`` (PyTorch's own).

    Capabilities torch.nn does not have are absent from this class (NOT PROVIDED); see the
    module docstring for the list and the reasons.
    """

    name = "torch.nn"

    not_provided: ClassVar[dict[str, str]] = {
        "attention_weights": "F.scaled_dot_product_attention does not return the weights",
        "feed_forward": "torch.nn has no standalone position-wise FFN module (it is checked "
        "inside the layers)",
        "positional_encoding": "nn.Transformer has no positional encoding",
        "embed_source": "nn.Transformer takes embedded inputs: no token embeddings, no "
        "sqrt(d_model) scale, no positional encoding",
        "embed_target": "nn.Transformer takes embedded inputs: no token embeddings",
        "project": "nn.Transformer has no pre-softmax linear map (generator)",
        "decoder_input": "nn.Transformer leaves the shifted-right decoder input to the caller",
        "decode_incremental": "nn.Transformer has no key/value cache",
        "loss": "nn.Transformer has no loss; label smoothing is nn.CrossEntropyLoss's option",
        "lr_schedule": "torch.nn prescribes no learning-rate schedule",
        "optimizer": "torch.nn prescribes no optimizer",
        "beam_search": "torch.nn has no decoding",
        "greedy": "torch.nn has no decoding",
        "length_penalty": "torch.nn has no decoding",
    }
    """Why each capability is missing: the report shows these reasons."""

    # -- 3.2.1 ---------------------------------------------------------------------------
    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """``F.scaled_dot_product_attention``; its bool mask means True = attend, like ours."""
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be bool (True = may attend), got {mask.dtype}")
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    # -- 3.2.2 ---------------------------------------------------------------------------
    def multi_head(self, d_model: int, h: int) -> nn.Module:
        """``nn.MultiheadAttention`` with PyTorch's defaults (``bias=True``, ``dropout=0``)."""
        return nn.MultiheadAttention(d_model, h, batch_first=True)

    def multi_head_forward(
        self, module: nn.Module, x: Tensor, memory: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        """Self-attention ``module(x, x, x)`` when ``memory`` is None, else
        ``module(x, memory, memory)``; the mask is translated to PyTorch's ``attn_mask``."""
        assert isinstance(module, nn.MultiheadAttention)
        kv = x if memory is None else memory
        attn_mask = None
        if mask is not None:
            attn_mask = _torch_attn_mask(
                mask, x.size(0), x.size(1), kv.size(1), module.num_heads, x.device
            )
        out, _ = module(x, kv, kv, attn_mask=attn_mask, need_weights=False)
        return out

    # -- the model ---------------------------------------------------------------------------
    def model(self, config: Config) -> nn.Transformer:
        """``nn.Transformer`` with PyTorch's defaults apart from the sizes, the dropout rate and
        ``batch_first=True`` (the suite's layout). Vocabulary sizes are unused: it has no
        embeddings."""
        return nn.Transformer(
            d_model=config.d_model,
            nhead=config.h,
            num_encoder_layers=config.n_layers,
            num_decoder_layers=config.n_layers,
            dim_feedforward=config.d_ff,
            dropout=config.dropout,
            batch_first=True,
        )

    def parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """A snapshot of ``module``'s parameters under their canonical names."""
        return read(module, _layout(module))

    def load_parameters(self, module: nn.Module, params: Params) -> None:
        """Write canonical parameters into ``module`` (any subset; shapes must match)."""
        write(module, _layout(module), params)

    def encode(self, model: nn.Transformer, x: Tensor, src_mask: Tensor) -> Tensor:
        """``model.encoder(x, src_key_padding_mask=~src_mask)``: the encoder stack with its
        final LayerNorm. In eval mode with autograd off, PyTorch's nested-tensor fast path
        returns zeros at padded positions before the final norm (see the module docstring)."""
        return model.encoder(x, src_key_padding_mask=_padding(src_mask))

    def decode(self, model: nn.Transformer, y: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """``model.decoder`` with the causal ``tgt_mask`` that torch.nn leaves to the caller
        (``nn.Transformer.generate_square_subsequent_mask``) and the source padding mask."""
        causal = nn.Transformer.generate_square_subsequent_mask(
            y.size(1), device=y.device, dtype=y.dtype
        )
        return model.decoder(
            y, memory, tgt_mask=causal, memory_key_padding_mask=_padding(src_mask)
        )

    # -- practice ----------------------------------------------------------------------------
    def save(self, model: nn.Transformer, path: str | os.PathLike[str]) -> None:
        """``torch.save`` of the state dict, with the constructor arguments next to it."""
        torch.save(
            {
                "format": FORMAT,
                "arguments": _constructor_arguments(model),
                "state_dict": model.state_dict(),
            },
            path,
        )

    def load(self, path: str | os.PathLike[str]) -> nn.Module:
        """Rebuild the ``nn.Transformer`` (same dtype and device as the saved tensors) and load
        its state dict strictly; ``torch.load(..., weights_only=True)`` unpickles no code."""
        payload = torch.load(path, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a file written by the torch.nn adapter's save()")
        state: dict[str, Tensor] = payload["state_dict"]
        first = next(iter(state.values()))
        model = nn.Transformer(**payload["arguments"], device=first.device, dtype=first.dtype)
        model.load_state_dict(state, strict=True)
        return model


adapter = TorchNNAdapter()
"""The shipped adapter for ``torch.nn`` (``--impl torch.nn``)."""
