"""Real TransformerLens: an exported run boots in TransformerBridge offline and its cache matches ours."""

import pytest
import torch

from selectlens.interpret.tl_export import one_hot_tokens


def test_bridge_cache_matches_selectlens(cli, tiny_run, tmp_path, monkeypatch):
    pytest.importorskip("transformer_lens")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    run, _ = tiny_run
    folder = tmp_path / "tl"
    res = cli("export-tl", "--run", str(run), "--out", str(folder))
    assert res.returncode == 0, res.stderr
    from transformer_lens.model_bridge import TransformerBridge

    from selectlens.rundir import load_run_model

    bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
    model, cfg = load_run_model(run)
    F, T = model.spec.n_features, model.spec.n_positions
    ids = torch.randint(0, F, (6, T), generator=torch.Generator().manual_seed(0))
    logits, theirs = bridge.run_with_cache(ids)
    out, ours = model.run_with_cache(one_hot_tokens(ids, F))
    common = [k for k in ours if k in theirs]
    assert len(common) == len(ours), sorted(set(ours) - set(theirs))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for k in common:
        a, b = ours[k], theirs[k]
        if k.endswith("hook_attn_scores"):  # masked entries: -inf here, the dtype's minimum there
            a, b = a[..., causal], b[..., causal]
        assert a.shape == b.shape, k
        assert (a - b).abs().max() < 1e-5, k
    # the read-out is row 0 of the exported lm_head (its bias is kept in selectlens.json)
    import json

    bias = json.loads((folder / "selectlens.json").read_text())["read_out_bias"]
    assert (logits[..., 0] + bias - out.raw).abs().max() < 1e-5
    res = cli("export-tl", "--run", str(run), "--out", str(folder))
    assert res.returncode == 2 and "exists" in res.stderr
