"""The adapter that points the conformance suite at ``tiny_transformer``.

Run the suite against it (with this folder on ``PYTHONPATH``)::

    python -m spec --impl tiny_adapter:adapter
"""

# --8<-- [start:imports]
import tiny_transformer as tiny
import torch
from torch import nn

from spec.adapter import Config, NotProvided

# --8<-- [end:imports]


# --8<-- [start:layout]
def _linear(prefix, name, linear, heads=None):
    """Canonical views of an nn.Linear: ``W`` is weight^T; with ``heads``, split per head."""
    w, b = linear.weight.t(), linear.bias
    if heads is None:
        return {f"{prefix}W_{name}": (w, linear.weight), f"{prefix}b_{name}": (b, b)}
    d_in, d_out = w.shape
    per_head = w.view(d_in, heads, d_out // heads).permute(1, 0, 2)  # [h, d_model, d_k]
    return {
        f"{prefix}W_{name}": (per_head, linear.weight),
        f"{prefix}b_{name}": (b.view(heads, -1), b),
    }


def _attention(prefix, mh):
    out = {}
    for name in "QKV":
        out.update(_linear(prefix, name, getattr(mh, name.lower()), mh.heads))
    out.update(_linear(prefix, "O", mh.out))
    return out


def _ffn(prefix, ffn):
    return {**_linear(prefix, "1", ffn[0]), **_linear(prefix, "2", ffn[2])}


def _norm(prefix, norm):
    return {f"{prefix}gamma": (norm.weight, norm.weight), f"{prefix}beta": (norm.bias, norm.bias)}


def _layout(module):
    """Canonical name -> (canonical view, the parameter that holds it)."""
    if isinstance(module, tiny.MultiHead):
        return _attention("", module)
    if isinstance(module, nn.Sequential):
        return _ffn("", module)
    out = {
        "src_embedding": (module.embed.weight, module.embed.weight),
        "tgt_embedding": (module.embed.weight, module.embed.weight),
        "generator.W": (module.generator.weight.t(), module.generator.weight),
    }
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(module, stack)):
            p = f"{stack}.{i}."
            out.update(_attention(p + "self_attn.", layer.self_attn))
            if layer.cross_attn is not None:
                out.update(_attention(p + "cross_attn.", layer.cross_attn))
            out.update(_ffn(p + "ffn.", layer.ffn))
            for k, norm in enumerate(layer.norms, 1):
                out.update(_norm(f"{p}norm_{k}.", norm))
    return out


# --8<-- [end:layout]


# --8<-- [start:class]
class TinyAdapter:
    name = "tiny-transformer"

    def __init__(self):
        self.not_provided = {  # why the suite gets NOT PROVIDED for these
            "beam_search": "tiny_transformer decodes greedily only",
            "decode_incremental": "tiny_transformer has no key/value cache",
        }

    # --8<-- [end:class]
    # --8<-- [start:modules]
    # 3.2.1: the suite's masks are True = may attend, tiny's are True = hidden
    def attention(self, q, k, v, mask):
        return tiny.attention(q, k, v, None if mask is None else ~mask)

    # 3.2.2 and 3.3: modules built from the paper's dimensions
    def multi_head(self, d_model, h):
        return tiny.MultiHead(d_model, h)

    def multi_head_forward(self, module, x, memory, mask):
        return module(x, memory, None if mask is None else ~mask)

    def feed_forward(self, d_model, d_ff):
        return tiny.feed_forward(d_model, d_ff)

    def feed_forward_forward(self, module, x):
        return module(x)

    # 3.5
    def positional_encoding(self, length, d_model):
        return tiny.sinusoids(length, d_model)

    # --8<-- [end:modules]
    # --8<-- [start:model]
    # the model, and its parameters in the paper's notation
    def model(self, config: Config):
        if not config.shared_vocab:
            raise NotProvided("model", "tiny_transformer needs one shared vocabulary")
        return tiny.Transformer(
            config.src_vocab,
            config.d_model,
            config.h,
            config.d_ff,
            config.n_layers,
            config.dropout,
            config.max_len,
            config.pad_id,
        )

    def parameters(self, module):
        return {name: view.detach() for name, (view, _) in _layout(module).items()}

    def load_parameters(self, module, params):
        layout = _layout(module)
        with torch.no_grad():
            for name, value in params.items():
                view, _ = layout[name]
                view.copy_(value)  # the views share storage with the parameters

    # --8<-- [end:model]
    # --8<-- [start:pieces]
    # the model's pieces, with the suite's masks ([B, S], True = real token)
    def embed_source(self, model, src):
        return model.embed_tokens(src)

    embed_target = embed_source

    def encode(self, model, x, src_mask):
        return model.encode(x, ~src_mask.unsqueeze(1))

    def decode(self, model, y, memory, src_mask):
        return model.decode(y, memory, ~src_mask.unsqueeze(1))

    def project(self, model, y):
        return model.generator(y)  # logits

    def decoder_input(self, tgt, bos_id):
        return torch.cat([torch.full_like(tgt[:, :1], bos_id), tgt[:, :-1]], dim=1)

    # --8<-- [end:pieces]
    # --8<-- [start:training]
    # training and decoding
    def loss(self, logits, target, pad_id):
        loss = nn.CrossEntropyLoss(ignore_index=pad_id, label_smoothing=0.1)
        return loss(logits.flatten(0, 1), target.flatten())

    def lr_schedule(self, d_model, warmup):
        return lambda step: d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)

    def optimizer(self, params):
        return torch.optim.Adam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9)

    def greedy(self, model, src, src_mask, config, max_len):
        return model.greedy(src, config.bos_id, max_len)

    def length_penalty(self, length, alpha):
        return ((5 + length) / 6) ** alpha

    # --8<-- [end:training]
    # --8<-- [start:practice]
    # practice: checkpoints hold the constructor's arguments and the weights
    def save(self, model, path):
        torch.save({"args": model.args, "weights": model.state_dict()}, path)

    def load(self, path):
        saved = torch.load(path, weights_only=True)
        dtype = saved["weights"]["embed.weight"].dtype  # load in the dtype that was saved
        model = tiny.Transformer(**saved["args"]).to(dtype)
        model.load_state_dict(saved["weights"])
        return model

    # --8<-- [end:practice]


# --8<-- [start:instance]
adapter = TinyAdapter()
# --8<-- [end:instance]
