import os
import pickle

import pytest
import torch

from selectlens.model import CheckpointError, ModelSpec, SelectionTransformer, import_legacy_state_dict, load_model, save_model

SPEC = ModelSpec(n_features=3, n_positions=21)


def _orig_state(seed=0):
    pytest.importorskip("transformers")
    from selectlens.benchmarks.reference import original_model

    torch.manual_seed(seed)
    ref = original_model(3, 21).eval()
    return ref, dict(ref.state_dict())


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SelectionTransformer(SPEC)
    p = save_model(m, tmp_path / "m.safetensors")
    back = load_model(p)
    X = torch.randn(3, 21, 3)
    assert back.spec == SPEC and torch.equal(back.predict(X), m.eval().predict(X))


@pytest.mark.parametrize("variant", ["full", "no_wte", "old_buffers", "no_wte_old_buffers"])
def test_original_checkpoints_import_and_predict_identically(tmp_path, variant):
    ref, state = _orig_state()
    if "no_wte" in variant:
        del state["_backbone.wte.weight"]
    else:
        assert state["_backbone.wte.weight"].shape == (50257, 64)
    if "old_buffers" in variant:
        for l in range(3):
            state[f"_backbone.h.{l}.attn.bias"] = torch.ones(1, 1, 21, 21).tril()
            state[f"_backbone.h.{l}.attn.masked_bias"] = torch.tensor(-1e4)
    path = tmp_path / "model_epoch1750.pth"
    torch.save(state, path)
    model = import_legacy_state_dict(path, SPEC)
    X = torch.randn(32, 21, 3)
    with torch.no_grad():
        assert (model.predict(X) - ref(X)).abs().max() < 1e-5


def test_legacy_missing_or_misshaped_tensor_is_named(tmp_path):
    _, state = _orig_state()
    missing = dict(state)
    del missing["_backbone.h.1.mlp.c_fc.bias"]
    torch.save(missing, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match=r"missing tensor '_backbone.h.1.mlp.c_fc.bias'"):
        import_legacy_state_dict(tmp_path / "a.pth", SPEC)
    bad = dict(state)
    bad["_backbone.wpe.weight"] = torch.zeros(20, 64)
    torch.save(bad, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"'_backbone.wpe.weight' has shape \[20, 64\], expected \[21, 64\]") as e:
        import_legacy_state_dict(tmp_path / "b.pth", SPEC)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        import_legacy_state_dict(tmp_path / "b.pth", ModelSpec(n_features=3, n_positions=21, n_layer=2))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"_read_in.weight": _Payload(marker)}, f)
    torch.save({"x": _Payload(marker)}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(CheckpointError, match="refused|not a valid"):
            import_legacy_state_dict(p, SPEC)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_garbage_files_give_one_line(tmp_path, content):
    p = tmp_path / "x.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        import_legacy_state_dict(p, SPEC)
    assert "\n" not in str(e.value)
    q = tmp_path / "x.safetensors"
    q.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model(q)


def test_import_predict_and_eval_cli(cli, tmp_path):
    ref, state = _orig_state(3)
    torch.save(state, tmp_path / "orig.pth")
    run = tmp_path / "imported"
    res = cli("import", "--checkpoint", str(tmp_path / "orig.pth"), "--config", "model_selection", "--out", str(run))
    assert res.returncode == 0, res.stderr
    data = tmp_path / "d.safetensors"
    assert cli("data", "--sequences", "50", "--out", str(data)).returncode == 0
    pred = tmp_path / "p.safetensors"
    res = cli("predict", "--run", str(run), "--data", str(data), "--out", str(pred))
    assert res.returncode == 0, res.stderr
    from safetensors.torch import load_file

    tokens = load_file(data)["tokens"]
    with torch.no_grad():
        expected = ref(tokens)
    assert (load_file(pred)["prediction"] - expected).abs().max() < 1e-5
    res = cli("eval", "--run", str(run), "--sequences", "500", "--json")
    assert res.returncode == 0, res.stderr
    # a second import into the same directory is refused
    res = cli("import", "--checkpoint", str(tmp_path / "orig.pth"), "--config", "model_selection", "--out", str(run))
    assert res.returncode == 2 and "exists" in res.stderr
    # data that does not fit the model
    other = tmp_path / "cls.safetensors"
    assert cli("data", "--config", "classification", "--sequences", "4", "--set", "data.N=8", "--out", str(other)).returncode == 0
    res = cli("predict", "--run", str(run), "--data", str(other), "--out", str(tmp_path / "q.safetensors"))
    assert res.returncode == 2 and "do not fit" in res.stderr


_WRITE_BOTH = """
import sys, torch
from selectlens.config import load_config
from selectlens.model import save_model
from selectlens.tasks import make_generator, make_task, save_task_batch
from selectlens.train import build_model
cfg = load_config("default", ["model.n_embd=16", "model.n_layer=1"])
save_model(build_model(cfg), sys.argv[1] + "/model.safetensors", {"epoch": "3", "b": "x", "a": "y"})
save_task_batch(sys.argv[1] + "/data.safetensors", make_task(cfg).sample(8, make_generator(0)), cfg)
"""


def test_equal_content_gives_equal_bytes_across_processes(tmp_path):
    """Two processes write the same weights and data: the files are byte-identical (metadata order no
    longer depends on a per-process hash seed), and still load with the safetensors package."""
    import hashlib
    import subprocess
    import sys

    from safetensors.torch import load_file

    digests = []
    for i in range(3):
        out = tmp_path / f"p{i}"
        out.mkdir()
        subprocess.run([sys.executable, "-c", _WRITE_BOTH, str(out)], check=True, env=dict(os.environ))
        digests.append([hashlib.sha256((out / f).read_bytes()).hexdigest() for f in ("model.safetensors", "data.safetensors")])
        assert load_model(out / "model.safetensors").spec.n_embd == 16
        assert load_file(out / "data.safetensors")["tokens"].shape == (8, 21, 3)
    assert digests[0] == digests[1] == digests[2]


def test_files_with_the_old_metadata_layout_still_load(tmp_path):
    """Files written by safetensors' own ``save`` (metadata in hash order) load as before."""
    import json

    from safetensors.torch import save

    torch.manual_seed(1)
    m = SelectionTransformer(SPEC)
    tensors = {k: v.contiguous() for k, v in m.state_dict().items()}
    meta = {"spec": json.dumps(SPEC.to_dict()), "format": "selectlens-model-1", "epoch": "2"}
    (tmp_path / "old.safetensors").write_bytes(save(tensors, metadata=meta))
    back = load_model(tmp_path / "old.safetensors")
    X = torch.randn(2, 21, 3)
    assert torch.equal(back.predict(X), m.eval().predict(X))
