import numpy as np
import pytest
import torch

from selectlens.config import load_config
from selectlens.interpret import (
    activation_patching, analyze_attention, attention_patterns, direct_attribution, flat_weights,
    forward_from_weights, head_ablation, logit_lens, module_activations, nest, neuron_statistics,
    query_roles, running_context_error, tl_weights,
)
from selectlens.interpret.probes import probe_scores
from selectlens.model import ModelSpec, SelectionTransformer
from selectlens.tasks import make_generator, make_task


def _model(n_embd=48, n_head=3, seed=0):
    torch.manual_seed(seed)
    m = SelectionTransformer(ModelSpec(n_features=3, n_positions=21, n_embd=n_embd, n_head=n_head)).eval()
    with torch.no_grad():  # make LayerNorms and biases non-trivial
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _batch(n=64, seed=0):
    task = make_task(load_config("default"))
    return task, task.sample(n, make_generator(seed))


def test_tl_weights_shapes_use_real_d_head_and_rebuild_the_forward_pass():
    m = _model(n_embd=48, n_head=3)  # d_head 16, not the notebook's hard-coded 32
    W = tl_weights(m)
    assert W["blocks.0.attn.W_Q"].shape == (3, 48, 16) and W["blocks.2.attn.b_K"].shape == (3, 16)
    assert W["blocks.1.attn.W_O"].shape == (3, 16, 48) and W["blocks.1.mlp.W_in"].shape == (48, 192)
    assert W["W_E"].shape == (3, 48) and W["W_pos"].shape == (21, 48) and W["W_U"].shape == (48, 1)
    _, batch = _batch(16)
    with torch.no_grad():
        ours = m(batch.tokens).raw
    assert (forward_from_weights(W, batch.tokens) - ours).abs().max() < 1e-5
    flat = flat_weights(m)
    assert "blocks.0.attn.qkv" in flat and "read_in" in flat and "ln_final" in flat


def test_module_activations_flat_and_nested():
    m = _model()
    _, batch = _batch(4)
    flat, nested = module_activations(m, batch.tokens)
    assert torch.equal(nested["blocks"]["1"]["mlp"]["val"], flat["blocks.1.mlp"])
    assert nest({"a.b": 1, "a.c": 2}) == {"a": {"b": {"val": 1}, "c": {"val": 2}}}
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())


def test_attention_patterns_and_roles():
    m = _model()
    _, batch = _batch(5)
    p = attention_patterns(m, batch.tokens)
    assert p.shape == (3, 5, 3, 21, 21)
    assert torch.allclose(p.sum(-1), torch.ones(3, 5, 3, 21), atol=1e-5)
    assert list(query_roles("selection", 21)) == ["query"]
    r = query_roles("interleaved", 6)
    assert r["x"].tolist() == [0, 2, 4] and r["y"].tolist() == [1, 3, 5]
    with pytest.raises(ValueError):
        query_roles("nonsense", 4)


def test_analyze_attention_recovers_a_planted_position_split():
    # Zero the queries and keys of layer 0: every row attends uniformly to its prefix, so rows
    # differ only by position -> the clusters are position bands: position alone predicts them on
    # held-out sequences, content alone does no better than the majority class.
    m = _model()
    with torch.no_grad():
        m.blocks[0].attn.qkv.weight[: 2 * 48] = 0
        m.blocks[0].attn.qkv.bias[: 2 * 48] = 0
    _, batch = _batch(300)
    a = analyze_attention(m, batch.tokens, 0, 1, samples=40, feature_names=["c0", "c1", "y"])
    role = a.roles["query"]
    assert 2 <= role.k <= 9 and role.k in role.silhouette_by_k
    # 10 of the 40 clustered sequences are held out, and the next 256 of the batch besides
    assert a.samples == list(range(296)) and sorted(role.test_samples) == sorted(set(range(296)) - set(role.train_samples))
    assert len(role.train_samples) == 30 and max(role.train_samples) < 40 and len(role.test_samples) == 266
    pos_score = role.scores["position"]
    assert pos_score.accuracy == 1.0 and pos_score.test_sequences == 266
    # every held-out sequence scores 1, yet the interval (Wilson, n = 266 sequences) has a width and stays in [0, 1]
    z2 = 1.959963984540054 ** 2
    assert pos_score.ci == pytest.approx((266 / (266 + z2), 1.0)) and pos_score.above_null
    assert not role.scores["content"].above_null
    counts = np.bincount(np.array(role.labels)[np.isin([s for s, _ in role.rows], role.train_samples)])
    test_labels = np.array([l for l, (s, _) in zip(role.labels, role.rows) if s in role.test_samples])
    assert role.scores["content"].majority == pytest.approx((test_labels == counts.argmax()).mean())
    assert role.carried_by.startswith("position")
    members = [r for c in role.clusters for r in c.members]
    assert sorted(members) == sorted(role.rows) and len(members) == 296 * 21
    # each cluster is a contiguous band of positions, identical across samples (held-out ones included)
    for c in role.clusters:
        pos = sorted({p for _, p in c.members})
        assert pos == list(range(pos[0], pos[-1] + 1))
        assert len(c.members) == 296 * len(pos)
    from selectlens.interpret import describe_analysis
    from selectlens.interpret.plots import attention_analysis_figure

    text = describe_analysis(a)
    assert "carried by: position" in text and "NOT above the null" in text
    assert "266 held-out sequences" in text and "Wilson 95% intervals over sequences" in text
    # the figure shows sample 0: its keys, its query tokens, its cluster strip and its attention block
    fig = attention_analysis_figure(a, 0)
    keys, inputs, strip, block = (ax.images[0].get_array() for ax in fig.axes)
    tok0 = batch.tokens[0].double().numpy()
    assert np.allclose(keys, tok0.T) and np.allclose(inputs, tok0)
    by_position = {p: l for l, (s, p) in zip(role.labels, role.rows) if s == 0}
    assert np.asarray(strip)[:, 0].tolist() == [by_position[p] for p in range(21)]
    assert len(set(by_position.values())) == role.k
    uniform_prefix = np.tril(np.ones((21, 21))) / np.arange(1, 22)[:, None]  # what layer 0 attends, by hand
    assert np.allclose(block, uniform_prefix, atol=1e-5)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_classifier_that_only_predicts_the_majority_class_is_said_so():
    from selectlens.interpret import analyze_patterns, describe_analysis
    from selectlens.interpret.attention import wilson_interval

    rng = np.random.default_rng(0)
    S, T = 80, 10
    tokens = rng.normal(size=(S, T, 3))
    pattern = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None] + 0.001 * rng.normal(size=(S, T, T))
    constant = lambda tok, names: (np.zeros(tok.shape[:2] + (1,)), ["zero"])  # noqa: E731
    a = analyze_patterns(pattern, tokens, features=constant, seed=0)
    s = a.roles["query"].scores["content"]
    assert s.all_majority and not s.above_null and s.accuracy == pytest.approx(s.majority)
    assert "content: predicts the majority class for every row" in describe_analysis(a)
    assert not a.roles["query"].scores["position"].all_majority
    # the Wilson interval against scipy's, and inside [0, 1] at the edges
    from scipy.stats import binomtest

    for k, n in ((7, 20), (0, 30), (30, 30), (250, 266)):
        ref = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k / n, n) == pytest.approx((ref.low, ref.high))
        lo, hi = wilson_interval(k / n, n)
        assert 0 <= lo < hi <= 1


def test_analyze_patterns_finds_a_planted_content_split():
    # Rows are one of two fixed patterns chosen by the sign of candidate 0 at the query, whatever the
    # position: content predicts the clusters on held-out sequences, position does not.
    from selectlens.interpret import analyze_patterns

    rng = np.random.default_rng(0)
    S, T = 60, 12
    tokens = rng.normal(size=(S, T, 3))
    va, vb = np.eye(T)[0], np.full(T, 1.0 / T)
    pattern = np.where(tokens[:, :, :1] > 0, va, vb) + 0.01 * rng.normal(size=(S, T, T))
    a = analyze_patterns(pattern, tokens, feature_names=["c0", "c1", "y"], seed=1)
    role = a.roles["query"]
    assert role.k == 2
    assert role.scores["content"].accuracy > 0.95 and role.scores["content"].above_null
    assert not role.scores["position"].above_null
    assert role.scores["position"].accuracy < 0.7
    assert role.carried_by.startswith("content")
    assert a.feature_names[:3] == ["c0", "c1", "y"] and "|c0 − y|" in a.feature_names
    assert a.feature_names[-2:] == ["disagreement", "position"]


def test_selection_content_features_by_hand():
    from selectlens.interpret.attention import selection_content_features

    tok = np.array([[[1.0, 3.0, 2.5]]])
    f, names = selection_content_features(tok, ["a", "b", "y"])
    assert f[0, 0].tolist() == [1.0, 3.0, 2.5, 1.5, 0.5, 2.0]
    assert names == ["a", "b", "y", "|a − y|", "|b − y|", "disagreement"]


def test_running_context_error_by_hand():
    _, batch = _batch(3)
    err = running_context_error(batch, "mse")  # [B, T, K]
    sq = (batch.tokens[0, :, 0] - batch.tokens[0, :, -1]) ** 2
    assert torch.allclose(err[0, 4, 0], sq[:5].mean())
    assert torch.allclose(err[0, -1, 0], sq[:-1].mean())  # the masked last label is excluded


def test_probe_scores_recover_a_linear_target_and_not_noise():
    g = np.random.default_rng(0)
    resid = torch.tensor(g.normal(size=(2, 400, 3, 8)))
    w = g.normal(size=8)
    y = resid[1, :, :, :].numpy() @ w  # [B, T], linear in layer 1 only
    s = probe_scores(resid, y, "regression")
    assert (s[1] > 0.99).all() and (s[0] < 0.2).all()


def test_logit_lens_final_layer_is_the_model_output():
    m = _model()
    _, batch = _batch(8)
    lens = logit_lens(m, batch, "mse")
    with torch.no_grad():
        raw = m(batch.tokens).raw
    assert np.allclose(lens["prediction"][-1], raw.numpy(), atol=1e-5)
    assert lens["error"].shape == (4, 21)


def test_direct_attribution_adds_up():
    m = _model()
    _, batch = _batch(32)
    attr = direct_attribution(m, batch.tokens)
    assert len(attr.components) == 2 + 3 * (3 + 2) + 1
    assert np.abs(attr.values.sum(1) - attr.output).max() < 1e-4
    with torch.no_grad():
        assert np.allclose(attr.output, m(batch.tokens).raw[:, -1].numpy(), atol=1e-5)


def test_ablating_a_silent_head_changes_nothing():
    m = _model()
    with torch.no_grad():
        m.blocks[1].attn.out.weight[:, 16:32] = 0  # head 1 of layer 1 writes nothing
    _, batch = _batch(32)
    res = head_ablation(m, batch, "mse")
    assert res["zero_output"][1, 1] < 1e-6 and res["mean_output"][1, 1] < 1e-6
    assert res["zero_output"].max() > 1e-4


def test_patching_one_differing_position_restores_the_clean_output():
    m = _model()
    _, clean = _batch(16)
    corrupt = clean[:]
    corrupt.tokens = clean.tokens.clone()
    corrupt.tokens[:, 3] += 1.0  # the runs differ at position 3 only
    res = activation_patching(m, clean, corrupt, "mse")
    assert res["resid_output"][0, 3] == pytest.approx(1.0, abs=1e-4)
    assert np.abs(np.delete(res["resid_output"][0], 3)).max() < 1e-4


def test_paired_batches_differ_only_in_alpha():
    task, _ = _batch(1)
    pair = task.paired_batches(20, make_generator(0))  # the lowest α against the highest
    assert (pair.latent, pair.clean_value, pair.corrupt_value) == ("α", 0.1, 0.8)
    a, b = pair.clean, pair.corrupt
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.w, b.w)
    clean = (a.x_train @ a.w.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose((b.y_train - clean), 8 * (a.y_train - clean), atol=1e-5)
    assert torch.all(a.alpha == 0.1) and torch.all(b.alpha == 0.8)


def test_neuron_statistics():
    m = _model()
    _, batch = _batch(8)
    stats = neuron_statistics(m, batch.tokens)
    assert len(stats) == 3 and stats[0]["frac_active"].shape == (192,)
    assert ((stats[0]["frac_active"] >= 0) & (stats[0]["frac_active"] <= 1)).all()
