"""A lean GPT-2 for token-vector inputs (docs/design.md#model), with TransformerLens hook names.

Numerically the same as Hugging Face ``GPT2Model`` with a linear read-in in
place of the token table and a linear read-out: pre-LayerNorm blocks, causal
multi-head attention scaled by 1/sqrt(d_head), GELU (tanh approximation),
LayerNorm eps 1e-5, learned positional embeddings. There is no 50257-row
token table. The prediction is read at the last position.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selectlens.model.hooks import HookedModule, HookPoint


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the network (saved as ``config.json`` beside the weights)."""

    n_features: int  # token width (the task's data.n_features)
    n_positions: int  # sequence length (the task's data.n_positions)
    n_embd: int = 64
    n_layer: int = 3
    n_head: int = 2
    layer_norm_eps: float = 1e-5
    output: str = "identity"  # "identity" (MSE) or "sigmoid" (BCE: the read-out is a logit)

    @property
    def d_head(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config) -> "ModelSpec":  # config: selectlens.config.Config
        return cls(
            n_features=config.data.n_features,
            n_positions=config.data.n_positions,
            n_embd=config.model.n_embd,
            n_layer=config.model.n_layer,
            n_head=config.model.n_head,
            output="sigmoid" if config.training.loss == "bce" else "identity",
        )


class LayerNorm(nn.Module):
    """LayerNorm with TransformerLens's hooks: ``hook_scale`` (the standard deviation) and
    ``hook_normalized`` (``(x − mean) / scale``, before the affine map). When neither is
    hooked, the fused kernel computes the same thing."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d))
        self.eps = eps
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Tensor) -> Tensor:
        if not (self.hook_scale._forward_hooks or self.hook_normalized._forward_hooks):
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        x = x - x.mean(dim=-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(dim=-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.weight + self.bias


class Attention(nn.Module):
    """Causal multi-head attention. The scores and pattern are materialised (and
    their hooks run) when something hooks them; otherwise the fused
    ``scaled_dot_product_attention`` computes the same thing faster."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        d, self.n_head, self.d_head = spec.n_embd, spec.n_head, spec.d_head
        self.qkv = nn.Linear(d, 3 * d)  # GPT-2 c_attn: output is concat([q, k, v])
        self.out = nn.Linear(d, d)  # GPT-2 c_proj
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query_pos, key_pos], masked, before softmax
        self.hook_pattern = HookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        mask = torch.ones(spec.n_positions, spec.n_positions, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q = self.hook_q(q.view(B, T, self.n_head, self.d_head))  # (B, T, H, dh)
        k = self.hook_k(k.view(B, T, self.n_head, self.d_head))
        v = self.hook_v(v.view(B, T, self.n_head, self.d_head))
        if self.hook_attn_scores._forward_hooks or self.hook_pattern._forward_hooks:
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.d_head)  # (B, H, T, T)
            scores = scores.masked_fill(~self.causal_mask[:T, :T], float("-inf"))
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, H, T, T)
            z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)  # (B, T, H, dh)
        else:  # nothing reads the pattern: fused kernel, same maths
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            z = z.transpose(1, 2)  # (B, T, H, dh)
        z = self.hook_z(z)
        return self.out(z.reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.fc_in = nn.Linear(spec.n_embd, 4 * spec.n_embd)  # GPT-2 c_fc
        self.fc_out = nn.Linear(4 * spec.n_embd, spec.n_embd)  # GPT-2 c_proj
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Tensor) -> Tensor:
        pre = self.hook_pre(self.fc_in(x))
        return self.fc_out(self.hook_post(F.gelu(pre, approximate="tanh")))


class Block(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.ln1 = LayerNorm(spec.n_embd, spec.layer_norm_eps)
        self.attn = Attention(spec)
        self.ln2 = LayerNorm(spec.n_embd, spec.layer_norm_eps)
        self.mlp = MLP(spec)
        self.hook_resid_pre = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = HookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = HookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Tensor) -> Tensor:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class ModelOutput(NamedTuple):
    prediction: Tensor  # [batch]: at the last position, in target space (probability if output="sigmoid")
    raw: Tensor  # [batch, pos]: read-out at every position, before the output map (a logit for BCE)


class SelectionTransformer(HookedModule):
    """Read-in → GPT-2 backbone → read-out; ``forward(tokens [B, T, F]) -> ModelOutput``."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.read_in = nn.Linear(spec.n_features, spec.n_embd)  # the "W_E" of this model
        self.pos_embed = nn.Embedding(spec.n_positions, spec.n_embd)
        self.blocks = nn.ModuleList(Block(spec) for _ in range(spec.n_layer))
        self.ln_final = LayerNorm(spec.n_embd, spec.layer_norm_eps)
        self.read_out = nn.Linear(spec.n_embd, 1)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.reset_parameters()
        self.setup_hooks()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln" in name or name.startswith("ln_final"):
                nn.init.ones_(p)
            elif name.endswith("attn.out.weight") or name.endswith("mlp.fc_out.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.spec.n_layer))
            else:
                nn.init.normal_(p, std=0.02)

    def residual(self, tokens: Tensor) -> Tensor:
        """``[B, T, F]`` tokens → ``[B, T, d]`` final residual stream (before ``ln_final``)."""
        T = tokens.shape[1]
        if T > self.spec.n_positions:
            raise ValueError(f"sequence length {T} exceeds n_positions {self.spec.n_positions}")
        pos = self.hook_pos_embed(self.pos_embed.weight[:T].unsqueeze(0).expand(tokens.shape[0], -1, -1))
        x = self.hook_embed(self.read_in(tokens)) + pos
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, tokens: Tensor) -> ModelOutput:
        raw = self.read_out(self.ln_final(self.residual(tokens))).squeeze(-1)  # [B, T]
        last = raw[:, -1]
        return ModelOutput(prediction=torch.sigmoid(last) if self.spec.output == "sigmoid" else last, raw=raw)

    def predict(self, tokens: Tensor) -> Tensor:
        """``[B]`` predictions at the last position, in target space."""
        return self.forward(tokens).prediction

    @torch.no_grad()
    def predict_in_chunks(self, tokens: Tensor, chunk: int = 8192) -> Tensor:
        """:meth:`predict` in eval mode, ``chunk`` sequences at a time (bounded memory for large sets)."""
        self.eval()
        return torch.cat([self.predict(tokens[i : i + chunk]) for i in range(0, tokens.shape[0], chunk)])

    def positions(self, tokens: Tensor, readout: slice) -> Tensor:
        """``[B, P]`` read-outs at the positions ``readout`` selects (a task's ``readout``), in target
        space (a probability for a logit read-out), with grad."""
        raw = self.forward(tokens).raw[:, readout]
        return torch.sigmoid(raw) if self.spec.output == "sigmoid" else raw

    @torch.no_grad()
    def predict_positions(self, tokens: Tensor, readout: slice, chunk: int = 8192) -> Tensor:
        """:meth:`positions` in eval mode, ``chunk`` sequences at a time (bounded memory for large sets)."""
        self.eval()
        return torch.cat([self.positions(tokens[i : i + chunk], readout) for i in range(0, tokens.shape[0], chunk)])
