import pytest
import torch

from selectlens.model import ModelSpec, SelectionTransformer, capture_module_outputs

SPEC = ModelSpec(n_features=3, n_positions=21)
EXPECTED_HOOKS = ["hook_embed", "hook_pos_embed", "ln_final.hook_scale", "ln_final.hook_normalized"] + [
    f"blocks.{l}.{h}" for l in range(3) for h in (
        "hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "ln2.hook_scale", "attn.hook_q", "attn.hook_k", "attn.hook_v",
        "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
        "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post",
    )
]


def _model(seed=0, spec=SPEC):
    torch.manual_seed(seed)
    return SelectionTransformer(spec).eval()


def test_identical_to_huggingface_gpt2():
    pytest.importorskip("transformers")
    from selectlens.benchmarks.reference import original_model
    from selectlens.model.checkpoint import _legacy_names

    torch.manual_seed(1)
    ref = original_model(3, 21).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = SelectionTransformer(SPEC).eval()
    sd = ref.state_dict()
    with torch.no_grad():
        for name, (theirs, transposed) in _legacy_names(3).items():
            ours.state_dict()[name].copy_(sd[theirs].t() if transposed else sd[theirs])
    X = torch.randn(16, 21, 3)
    with torch.no_grad():
        assert (ours.predict(X) - ref(X)).abs().max() < 1e-5
        # shorter sequences too (positions are a prefix)
        assert (ours.predict(X[:, :7]) - ref(X[:, :7])).abs().max() < 1e-5


def test_no_token_table_and_parameter_count():
    m = _model()
    names = [n for n, _ in m.named_parameters()]
    assert not any("wte" in n for n in names)
    assert max(p.numel() for p in m.parameters()) < 50257  # nothing like the 50257-row table


def test_hook_names_and_cache_shapes():
    m = _model()
    assert sorted(EXPECTED_HOOKS) == sorted(m.hook_names)
    X = torch.randn(4, 21, 3)
    out, cache = m.run_with_cache(X)
    assert set(cache) == set(EXPECTED_HOOKS)
    assert cache["blocks.0.attn.hook_pattern"].shape == (4, 2, 21, 21)
    assert cache["blocks.1.attn.hook_q"].shape == (4, 21, 2, 32)
    assert cache["blocks.2.mlp.hook_post"].shape == (4, 21, 256)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert torch.allclose(pattern.sum(-1), torch.ones(4, 2, 21))
    assert torch.all(pattern.triu(1) == 0)  # causal
    # the residual stream decomposes exactly
    r = cache["blocks.1.hook_resid_post"]
    assert torch.allclose(r, cache["blocks.1.hook_resid_mid"] + cache["blocks.1.hook_mlp_out"])
    assert torch.allclose(cache["blocks.0.hook_resid_pre"], cache["hook_embed"] + cache["hook_pos_embed"])
    # TransformerLens semantics: normalized is (x - mean) / scale, before the affine map
    x = cache["blocks.1.hook_resid_pre"]
    assert torch.allclose(cache["blocks.1.ln1.hook_normalized"], torch.nn.functional.layer_norm(x, (64,)), atol=1e-5)
    assert torch.allclose(cache["blocks.1.ln1.hook_scale"].squeeze(-1), (x.var(-1, unbiased=False) + 1e-5).sqrt())
    _, some = m.run_with_cache(X, names_filter=lambda n: n.endswith("hook_pattern"))
    assert set(some) == {f"blocks.{l}.attn.hook_pattern" for l in range(3)}
    assert torch.allclose(out.prediction, m.predict(X), atol=1e-6)


def test_run_with_hooks_can_patch_and_hooks_are_removed():
    m = _model()
    X = torch.randn(3, 21, 3)
    clean = m.predict(X)

    def zero(x, hook):
        return torch.zeros_like(x)

    patched = m.run_with_hooks(X, fwd_hooks=[("blocks.2.hook_mlp_out", zero)]).prediction
    assert not torch.allclose(patched, clean)
    assert torch.equal(m.predict(X), clean)  # removed

    def boom(x, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        m.run_with_hooks(X, fwd_hooks=[("blocks.0.attn.hook_pattern", boom)])
    assert all(len(hp._forward_hooks) == 0 for hp in m.hook_dict.values())
    assert torch.equal(m.predict(X), clean)
    with pytest.raises(KeyError):
        m.run_with_hooks(X, fwd_hooks=[("blocks.9.nope", zero)])


def test_capture_every_module_removes_its_hooks():
    m = _model()
    X = torch.randn(2, 21, 3)
    out, flat = capture_module_outputs(m, X)
    assert "blocks.0.attn" in flat and "read_in" in flat
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


def test_sigmoid_output_for_bce():
    m = _model(spec=ModelSpec(n_features=8, n_positions=64, output="sigmoid"))
    out = m(torch.randn(5, 64, 8))
    assert torch.allclose(out.prediction, torch.sigmoid(out.raw[:, -1]))


def test_fused_and_explicit_attention_agree():
    m = _model(3)
    X = torch.randn(8, 21, 3)
    fused = m.predict(X)  # no hooks: fused kernel
    hooked, cache = m.run_with_cache(X, names_filter="blocks.0.attn.hook_pattern")
    assert "blocks.0.attn.hook_pattern" in cache
    assert torch.allclose(fused, hooked.prediction, atol=1e-6)
