"""Weights by module name, and in TransformerLens conventions (docs/interpretability.md#weights: the original notebook's flat weights, with the real d_head).

The TransformerLens dict uses the model's real ``d_head = n_embd / n_head``
(the notebook hard-coded 32). Shapes::

    W_E [d_in, d_model], b_E [d_model]          (the read-in plays the embedding)
    W_pos [n_ctx, d_model]
    blocks.{l}.ln1.w/b [d_model]
    blocks.{l}.attn.W_Q/W_K/W_V [n_heads, d_model, d_head], b_Q/b_K/b_V [n_heads, d_head]
    blocks.{l}.attn.W_O [n_heads, d_head, d_model], b_O [d_model]
    blocks.{l}.ln2.w/b, mlp.W_in [d_model, d_mlp], b_in, W_out [d_mlp, d_model], b_out
    ln_final.w/b, W_U [d_model, 1], b_U [1]   (the read-out plays the unembedding)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from selectlens.model.gpt2 import SelectionTransformer


def flat_weights(model: SelectionTransformer) -> dict[str, Tensor]:
    """Every module's ``weight`` by module name (the notebook's ``get_flat_weights``), detached."""
    return {name: m.weight.detach() for name, m in model.named_modules() if isinstance(getattr(m, "weight", None), Tensor)}


def tl_weights(model: SelectionTransformer) -> dict[str, Tensor]:
    """The weights in TransformerLens names and shapes (see module docstring)."""
    s = model.spec
    H, dh, d = s.n_head, s.d_head, s.n_embd
    W: dict[str, Tensor] = {
        "W_E": model.read_in.weight.detach().T,
        "b_E": model.read_in.bias.detach(),
        "W_pos": model.pos_embed.weight.detach(),
    }
    for l, blk in enumerate(model.blocks):
        p = f"blocks.{l}."
        qkv_w = blk.attn.qkv.weight.detach().T  # [d_model, 3*d]
        qkv_b = blk.attn.qkv.bias.detach()
        for i, name in enumerate("QKV"):
            W[p + f"attn.W_{name}"] = qkv_w[:, i * d : (i + 1) * d].reshape(d, H, dh).permute(1, 0, 2)  # [H, d_model, dh]
            W[p + f"attn.b_{name}"] = qkv_b[i * d : (i + 1) * d].reshape(H, dh)
        W[p + "attn.W_O"] = blk.attn.out.weight.detach().T.reshape(H, dh, d)
        W[p + "attn.b_O"] = blk.attn.out.bias.detach()
        W[p + "ln1.w"], W[p + "ln1.b"] = blk.ln1.weight.detach(), blk.ln1.bias.detach()
        W[p + "ln2.w"], W[p + "ln2.b"] = blk.ln2.weight.detach(), blk.ln2.bias.detach()
        W[p + "mlp.W_in"] = blk.mlp.fc_in.weight.detach().T
        W[p + "mlp.b_in"] = blk.mlp.fc_in.bias.detach()
        W[p + "mlp.W_out"] = blk.mlp.fc_out.weight.detach().T
        W[p + "mlp.b_out"] = blk.mlp.fc_out.bias.detach()
    W["ln_final.w"], W["ln_final.b"] = model.ln_final.weight.detach(), model.ln_final.bias.detach()
    W["W_U"] = model.read_out.weight.detach().T
    W["b_U"] = model.read_out.bias.detach()
    return W


def forward_from_weights(W: dict[str, Tensor], tokens: Tensor, *, eps: float = 1e-5) -> Tensor:
    """The forward pass from a :func:`tl_weights` dict alone: ``[B, T, d_in] -> [B, T]`` read-out."""
    n_layers = 1 + max(int(k.split(".")[1]) for k in W if k.startswith("blocks."))
    T = tokens.shape[1]
    x = tokens @ W["W_E"] + W["b_E"] + W["W_pos"][:T]
    mask = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    for l in range(n_layers):
        p = f"blocks.{l}."
        h = F.layer_norm(x, (x.shape[-1],), W[p + "ln1.w"], W[p + "ln1.b"], eps)
        q = torch.einsum("btm,hmd->bthd", h, W[p + "attn.W_Q"]) + W[p + "attn.b_Q"]
        k = torch.einsum("btm,hmd->bthd", h, W[p + "attn.W_K"]) + W[p + "attn.b_K"]
        v = torch.einsum("btm,hmd->bthd", h, W[p + "attn.W_V"]) + W[p + "attn.b_V"]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        pattern = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        x = x + torch.einsum("bqhd,hdm->bqm", z, W[p + "attn.W_O"]) + W[p + "attn.b_O"]
        h = F.layer_norm(x, (x.shape[-1],), W[p + "ln2.w"], W[p + "ln2.b"], eps)
        x = x + F.gelu(h @ W[p + "mlp.W_in"] + W[p + "mlp.b_in"], approximate="tanh") @ W[p + "mlp.W_out"] + W[p + "mlp.b_out"]
    x = F.layer_norm(x, (x.shape[-1],), W["ln_final.w"], W["ln_final.b"], eps)
    return (x @ W["W_U"] + W["b_U"]).squeeze(-1)
