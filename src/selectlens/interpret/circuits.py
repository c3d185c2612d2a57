"""Logit lens, direct attribution, head ablation, activation patching, MLP neuron statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from selectlens.baselines import pointwise_loss
from selectlens.model.gpt2 import SelectionTransformer
from selectlens.tasks.selection import TaskBatch


def _apply_output(model: SelectionTransformer, raw: Tensor) -> Tensor:
    return torch.sigmoid(raw) if model.spec.output == "sigmoid" else raw


@torch.no_grad()
def logit_lens(model: SelectionTransformer, batch: TaskBatch, kind: str) -> dict[str, np.ndarray]:
    """The read-out applied to ``ln_final`` of each layer's residual stream.

    Returns ``prediction [n_layer+1, B, T]`` and ``error [n_layer+1, T]``: the
    mean loss against each position's label (``y_test``; at the last position
    this is the target the model is trained on).
    """
    from selectlens.interpret.probes import residual_streams

    resid = residual_streams(model, batch.tokens)  # [L+1, B, T, d]
    pred = _apply_output(model, model.read_out(model.ln_final(resid)).squeeze(-1))  # [L+1, B, T]
    labels = batch.y_test.to(pred)  # [B, T]
    err = pointwise_loss(pred, labels.unsqueeze(0), kind).mean(dim=1)  # [L+1, T]
    return {"prediction": pred.cpu().numpy(), "error": err.cpu().numpy()}


@dataclass
class Attribution:
    components: list[str]  # "embed", "pos_embed", "L{l}H{h}", "L{l} attn bias", "L{l} mlp", "bias"
    values: np.ndarray  # [B, n_components]: contribution to the read-out (before the output map)
    output: np.ndarray  # [B]: the read-out itself; values.sum(1) == output


@torch.no_grad()
def direct_attribution(model: SelectionTransformer, tokens: Tensor) -> Attribution:
    """Split the last position's read-out into the residual stream's parts.

    With ``ln_final``'s scale frozen at its actual value, the read-out is linear
    in the residual stream, which is the sum of the read-in embedding, the
    positional embedding, every head's output (``z_h @ W_O_h``), every
    attention bias and every MLP output. Each part's share is
    ``w_U·γ⊙(part − mean(part))/scale``; the constant ``w_U·β + b_U`` is "bias".
    The parts add up to the read-out exactly.
    """
    L, H, dh = model.spec.n_layer, model.spec.n_head, model.spec.d_head
    _, cache = model.run_with_cache(tokens)
    parts: dict[str, Tensor] = {"embed": cache["hook_embed"][:, -1], "pos_embed": cache["hook_pos_embed"][:, -1]}
    for l, blk in enumerate(model.blocks):
        z = cache[f"blocks.{l}.attn.hook_z"][:, -1]  # [B, H, dh]
        W_O = blk.attn.out.weight.T.reshape(H, dh, -1)  # [H, dh, d]
        for h in range(H):
            parts[f"L{l}H{h}"] = z[:, h] @ W_O[h]
        parts[f"L{l} attn bias"] = blk.attn.out.bias.expand_as(parts["embed"])
        parts[f"L{l} mlp"] = cache[f"blocks.{l}.hook_mlp_out"][:, -1]
    resid = cache[f"blocks.{L - 1}.hook_resid_post"][:, -1]
    ln = model.ln_final
    scale = (resid.var(dim=-1, unbiased=False, keepdim=True) + ln.eps).sqrt()  # [B, 1]
    w = (model.read_out.weight.squeeze(0) * ln.weight)  # [d]
    values = {k: ((v - v.mean(dim=-1, keepdim=True)) / scale) @ w for k, v in parts.items()}
    values["bias"] = (model.read_out.weight.squeeze(0) @ ln.bias + model.read_out.bias).expand(resid.shape[0])
    output = model.read_out(ln(resid)).squeeze(-1)
    names = list(values)
    return Attribution(names, torch.stack([values[k] for k in names], dim=1).cpu().numpy(), output.cpu().numpy())


def _loss(model: SelectionTransformer, raw_last: Tensor, target: Tensor, kind: str) -> Tensor:
    return pointwise_loss(_apply_output(model, raw_last), target, kind)


@torch.no_grad()
def head_ablation(model: SelectionTransformer, batch: TaskBatch, kind: str) -> dict[str, np.ndarray]:
    """Zero- and mean-ablate each head's ``z`` (mean over the batch, per position).

    Returns ``[n_layer, n_head]`` arrays: ``{zero,mean}_output`` (mean |Δ
    prediction|) and ``{zero,mean}_loss`` (Δ mean loss; > 0 means the head helps).
    """
    L, H = model.spec.n_layer, model.spec.n_head
    tokens, target = batch.tokens, batch.target
    base = model(tokens)
    base_pred = base.prediction
    base_loss = _loss(model, base.raw[:, -1], target, kind).mean()
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    out = {k: np.zeros((L, H)) for k in ("zero_output", "zero_loss", "mean_output", "mean_loss")}
    for l in range(L):
        mean_z = cache[f"blocks.{l}.attn.hook_z"].mean(dim=0, keepdim=True)  # [1, T, H, dh]
        for h in range(H):
            for mode in ("zero", "mean"):
                def ablate(z, hook, h=h, mode=mode, mean_z=mean_z):
                    z = z.clone()
                    z[:, :, h] = 0.0 if mode == "zero" else mean_z[:, :, h]
                    return z

                res = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{l}.attn.hook_z", ablate)])
                out[f"{mode}_output"][l, h] = float((res.prediction - base_pred).abs().mean())
                out[f"{mode}_loss"][l, h] = float(_loss(model, res.raw[:, -1], target, kind).mean() - base_loss)
    return out


def position_patch(src: Tensor, t: int):
    """A hook that overwrites position ``t`` of a ``[batch, pos, d]`` activation with ``src``'s."""

    def patch(x: Tensor, hook) -> Tensor:
        x = x.clone()
        x[:, t] = src[:, t]
        return x

    return patch


def head_patch(zsrc: Tensor, h: int):
    """A hook that overwrites head ``h`` of a ``[batch, pos, head, d_head]`` ``hook_z`` with ``zsrc``'s."""

    def patch(z: Tensor, hook) -> Tensor:
        z = z.clone()
        z[:, :, h] = zsrc[:, :, h]
        return z

    return patch


@torch.no_grad()
def activation_patching(model: SelectionTransformer, clean: TaskBatch, corrupt: TaskBatch, kind: str) -> dict[str, np.ndarray]:
    """Patch clean activations into the corrupted run.

    ``resid_output [n_layer, T]``: patching ``blocks.{l}.hook_resid_pre`` at one
    position; ``head_output [n_layer, n_head]``: patching one head's ``z`` at
    every position. Effects are normalised: 0 = corrupted prediction, 1 = clean
    prediction (mean over the batch of the per-sequence shift, divided by the mean
    clean−corrupt gap). ``*_loss``: the corrupted run's loss after patching,
    against the corrupted target.
    """
    L, H, T = model.spec.n_layer, model.spec.n_head, clean.tokens.shape[1]
    _, cache = model.run_with_cache(clean.tokens, names_filter=lambda n: n.endswith("hook_resid_pre") or n.endswith("hook_z"))
    clean_pred = model.predict(clean.tokens)
    corrupt_pred = model.predict(corrupt.tokens)
    gap = (clean_pred - corrupt_pred)
    denom = float((gap * gap.sign()).mean()) or 1e-12

    def effect(pred: Tensor) -> float:
        return float(((pred - corrupt_pred) * gap.sign()).mean()) / denom

    res = {k: np.zeros(s) for k, s in (("resid_output", (L, T)), ("resid_loss", (L, T)), ("head_output", (L, H)), ("head_loss", (L, H)))}
    for l in range(L):
        src = cache[f"blocks.{l}.hook_resid_pre"]
        for t in range(T):
            out = model.run_with_hooks(corrupt.tokens, fwd_hooks=[(f"blocks.{l}.hook_resid_pre", position_patch(src, t))])
            res["resid_output"][l, t] = effect(out.prediction)
            res["resid_loss"][l, t] = float(_loss(model, out.raw[:, -1], corrupt.target, kind).mean())
        zsrc = cache[f"blocks.{l}.attn.hook_z"]
        for h in range(H):
            out = model.run_with_hooks(corrupt.tokens, fwd_hooks=[(f"blocks.{l}.attn.hook_z", head_patch(zsrc, h))])
            res["head_output"][l, h] = effect(out.prediction)
            res["head_loss"][l, h] = float(_loss(model, out.raw[:, -1], corrupt.target, kind).mean())
    res["clean_loss"] = np.array(float(_loss(model, _raw_last(model, clean.tokens), clean.target, kind).mean()))
    res["corrupt_loss"] = np.array(float(_loss(model, _raw_last(model, corrupt.tokens), corrupt.target, kind).mean()))
    res["gap"] = np.array(denom)
    return res


def _raw_last(model: SelectionTransformer, tokens: Tensor) -> Tensor:
    return model(tokens).raw[:, -1]


@torch.no_grad()
def neuron_statistics(model: SelectionTransformer, tokens: Tensor) -> list[dict[str, np.ndarray]]:
    """Per layer, per MLP neuron (after GELU): mean, std, fraction > 0, max, and the mean at the last position."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("mlp.hook_post"))
    out = []
    for l in range(model.spec.n_layer):
        a = cache[f"blocks.{l}.mlp.hook_post"]  # [B, T, d_mlp]
        flat = a.reshape(-1, a.shape[-1])
        out.append({
            "mean": flat.mean(0).cpu().numpy(),
            "std": flat.std(0).cpu().numpy(),
            "frac_active": (flat > 0).float().mean(0).cpu().numpy(),
            "max": flat.max(0).values.cpu().numpy(),
            "mean_last_position": a[:, -1].mean(0).cpu().numpy(),
        })
    return out
