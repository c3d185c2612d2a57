"""Regenerate examples/walkthrough.ipynb (outputs empty): python examples/make_walkthrough.py"""

from pathlib import Path

import nbformat as nbf

cells = [
    ("md", """# SelectLens walkthrough

The original notebook's steps with the SelectLens API — load a run, weights, activation cache, attention,
cluster analysis — then probes, ablation and activation patching.

Set `SELECTLENS_RUN` to a run directory (for example `runs/default` from `selectlens run`); otherwise a
tiny run is trained here in a few seconds."""),
    ("code", """import os, tempfile
from pathlib import Path
import torch
from selectlens.config import load_config
from selectlens.rundir import load_run_model
from selectlens.evaluate import heldout_batch

run_dir = os.environ.get("SELECTLENS_RUN")
if run_dir is None:
    from selectlens.train import train
    run_dir = Path(tempfile.mkdtemp()) / "tiny"
    cfg = load_config("default", ["training.epochs=3", "data.train_samp_per_class=2000", "eval.temperature_sequences=500"])
    train(cfg, run_dir, progress=False)
model, cfg = load_run_model(run_dir)
batch = heldout_batch(cfg, 256)
print(model.spec)
print(batch.tokens.shape, "tokens: [candidate predictions..., y]")"""),
    ("md", "## Weights\nBy module name (the notebook's `get_flat_weights`), and in TransformerLens conventions with the real `d_head`."),
    ("code", """from selectlens.interpret import flat_weights, tl_weights, forward_from_weights
print(list(flat_weights(model))[:8])
W = tl_weights(model)
for k in ["W_E", "W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.b_Q", "blocks.0.attn.W_O", "blocks.0.mlp.W_in", "W_U"]:
    print(f"{k:22s} {tuple(W[k].shape)}")
with torch.no_grad():
    print("forward from the dict matches:", torch.allclose(forward_from_weights(W, batch.tokens), model(batch.tokens).raw, atol=1e-5))"""),
    ("md", "## Activations\nThe hook-point cache (TransformerLens names) and the notebook's every-module capture — whose hooks are always removed."),
    ("code", """from selectlens.interpret import activation_cache, module_activations
cache = activation_cache(model, batch.tokens[:8])
print(len(cache), "hook points, e.g.", [k for k in cache if k.startswith("blocks.0.")][:6])
flat, nested = module_activations(model, batch.tokens[:8])
print(list(nested["blocks"]["0"]))"""),
    ("md", "## Attention\nPatterns per layer, head and sample; one heatmap, and the grid of all heads."),
    ("code", """from selectlens.interpret import attention_patterns
from selectlens.interpret import plots
patterns = attention_patterns(model, batch.tokens[:4]).numpy()   # [layer, sample, head, query, key]
print(patterns.shape)
plots.attention_heatmap(patterns[1, 0, 0], "layer 1, head 0, sample 0");
plots.attention_grid(patterns, sample=0);"""),
    ("md", "## Cluster analysis (`analyze_attn_matrix`, done right)\nRows grouped by query role, k chosen by silhouette, seeded KMeans, a LinearSVC from token features to clusters with held-out accuracy."),
    ("code", """from selectlens.interpret import analyze_attention, describe_analysis
analysis = analyze_attention(model, batch.tokens, layer=1, head=0, samples=32,
                             feature_names=[f"cand[{c:g}]" for c in cfg.data.candidates] + ["y"])
print(describe_analysis(analysis))
plots.attention_analysis_figure(analysis, 0);"""),
    ("md", "## Probes\nWhat is linearly readable from the residual stream, by layer and position."),
    ("code", """from selectlens.interpret import run_probes
probes = run_probes(model, batch, "mse", cfg.data.candidates)
for p in probes:
    print(f"{p.name:24s} {p.metric:8s} best {p.scores.max():.3f}   last position by layer {p.scores[:, -1].round(3)}")
plots.probe_figure(probes);"""),
    ("md", "## Ablation and activation patching\nPaired sequences share w, x and noise draws and differ only in α."),
    ("code", """import numpy as np
from selectlens.interpret import head_ablation, activation_patching
from selectlens.tasks import make_task, make_generator
abl = head_ablation(model, batch, "mse")
print("mean-ablation Δloss per head:\\n", abl["mean_loss"].round(4))
task = make_task(cfg)
pair = task.paired_batches(128, make_generator(1))   # the lowest α against the highest
print(f"paired sequences: {pair.latent} = {pair.clean_value:g} (clean) vs {pair.corrupt_value:g} (corrupted)")
clean, corrupt = pair.clean, pair.corrupt
patch = activation_patching(model, clean, corrupt, "mse")
l, t = np.unravel_index(np.argmax(np.abs(patch["resid_output"])), patch["resid_output"].shape)
print(f"largest residual patching effect: layer {l}, position {t}: {patch['resid_output'][l, t]:.3f}")
plots.effects_figure({"resid_pre patching": patch["resid_output"]}, xlabel="position");"""),
]

nb = nbf.v4.new_notebook()
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("walkthrough.ipynb"))
