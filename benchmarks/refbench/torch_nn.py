"""The torch.nn model the reference is compared with, and its greedy decoding (no cache)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

import transformer as T


class TorchNNTransformer(nn.Module):
    """``torch.nn.Transformer`` with the reference's embeddings, positional encoding and output
    projection (copies), and the reference's weights.

    The encoder and decoder stacks are ``nn.TransformerEncoder`` / ``nn.TransformerDecoder``
    built with ``norm=None``: the paper has no LayerNorm after the stacks (torch.nn's default
    adds one). Masks are passed the way torch.nn's documentation says: ``tgt_mask`` from
    ``generate_square_subsequent_mask`` with ``tgt_is_causal=True``, and key padding masks.
    """

    def __init__(self, reference: T.Transformer) -> None:
        super().__init__()
        c = self.config = reference.config
        shared = copy.deepcopy(
            nn.ModuleDict(
                {
                    "src_embed": reference.src_embed,
                    "tgt_embed": reference.tgt_embed,
                    "positions": reference.positions,
                    "generator": reference.generator,
                }
            )
        )  # one deepcopy, so that tied weights stay tied
        self.src_embed, self.tgt_embed = shared["src_embed"], shared["tgt_embed"]
        self.positions, self.generator = shared["positions"], shared["generator"]
        layer: dict[str, Any] = {
            "d_model": c.d_model,
            "nhead": c.h,
            "dim_feedforward": c.d_ff,
            "dropout": c.dropout,
            "activation": "relu",
            "layer_norm_eps": c.norm_eps,
            "batch_first": True,
            "norm_first": False,
        }
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer), c.n_layers, norm=None, enable_nested_tensor=True
        )
        decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), c.n_layers, norm=None)
        self.transformer = nn.Transformer(
            d_model=c.d_model,
            nhead=c.h,
            dim_feedforward=c.d_ff,
            dropout=c.dropout,
            custom_encoder=encoder,
            custom_decoder=decoder,
            batch_first=True,
        )
        self.to(next(reference.parameters()).device)
        self.load_reference(reference)

    @torch.no_grad()
    def load_reference(self, reference: T.Transformer) -> None:
        """Copy the reference's encoder and decoder weights (attention biases set to zero)."""

        def attention(mine: T.MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
            assert theirs.in_proj_weight is not None and theirs.in_proj_bias is not None
            theirs.in_proj_weight.copy_(mine.in_proj.weight)  # rows W^Q, W^K, W^V in both
            theirs.in_proj_bias.zero_()
            theirs.out_proj.weight.copy_(mine.out_proj.weight)
            assert theirs.out_proj.bias is not None
            theirs.out_proj.bias.zero_()

        def ffn_and_norms(
            mine: T.EncoderLayer | T.DecoderLayer,
            theirs: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer,
            norms: int,
        ) -> None:
            theirs.linear1.load_state_dict(mine.ffn.w_1.state_dict())
            theirs.linear2.load_state_dict(mine.ffn.w_2.state_dict())
            for k in range(1, norms + 1):
                getattr(theirs, f"norm{k}").load_state_dict(
                    getattr(mine, f"residual_{k}").norm.state_dict()
                )

        mine: Any  # the layers of both models, walked by attribute name
        theirs: Any
        for mine, theirs in zip(
            reference.encoder.layers, self.transformer.encoder.layers, strict=True
        ):
            attention(mine.self_attn, theirs.self_attn)
            ffn_and_norms(mine, theirs, 2)
        for mine, theirs in zip(
            reference.decoder.layers, self.transformer.decoder.layers, strict=True
        ):
            attention(mine.self_attn, theirs.self_attn)
            attention(mine.cross_attn, theirs.multihead_attn)
            ffn_and_norms(mine, theirs, 3)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder output and the key padding mask (``True`` = padding, torch.nn's)."""
        padding = src == self.config.pad_id
        x = self.positions(self.src_embed(src))
        return self.transformer.encoder(x, src_key_padding_mask=padding), padding

    def decode(self, tgt_in: Tensor, memory: Tensor, padding: Tensor) -> Tensor:
        y = self.positions(self.tgt_embed(tgt_in))
        causal = nn.Transformer.generate_square_subsequent_mask(
            tgt_in.size(1), device=y.device, dtype=y.dtype
        )
        return self.transformer.decoder(
            y, memory, tgt_mask=causal, memory_key_padding_mask=padding, tgt_is_causal=True
        )

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, padding = self.encode(src)
        return self.generator(self.decode(tgt_in, memory, padding))


@torch.no_grad()
def torch_nn_greedy(model: TorchNNTransformer, src: Tensor, max_len: int) -> Tensor:
    """Greedy decoding with torch.nn: no key/value cache, so each step recomputes the prefix
    (the decoder runs over all tokens so far; only the last position is projected)."""
    c = model.config
    memory, padding = model.encode(src)
    tokens = torch.full((src.size(0), 1), c.bos_id, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        hidden = model.decode(tokens, memory, padding)[:, -1]
        tokens = torch.cat([tokens, model.generator(hidden).argmax(-1, keepdim=True)], dim=1)
    return tokens[:, 1:]
