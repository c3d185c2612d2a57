import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.linear_model import Ridge

from selectlens.tasks import DataFileError, load_task_batch

EXPECTED = {"tokens", "target", "alpha", "x_train", "y_train", "x_test", "y_test", "w"}


def test_data_command_writes_exact_tensors_and_config(cli, tmp_path):
    out = tmp_path / "d.safetensors"
    res = cli("data", "--sequences", "40", "--seed", "3", "--out", str(out), "--set", "data.N=11")
    assert res.returncode == 0, res.stderr
    tensors = load_file(out)
    assert set(tensors) == EXPECTED
    with safe_open(str(out), framework="pt") as f:
        meta = json.loads(f.metadata()["config"])
    assert meta["seed"] == 3 and meta["data"]["N"] == 11
    assert tensors["tokens"].shape == (40, 11, 3)
    # Anyone can check the data outside the project: refit scikit-learn on the ground truth.
    for b in range(40):
        for k, a in enumerate(meta["data"]["data_alphas"]):
            m = Ridge(alpha=a).fit(tensors["x_train"][b].double().numpy(), tensors["y_train"][b].double().numpy())
            np.testing.assert_allclose(tensors["tokens"][b, :, k].numpy(), m.predict(tensors["x_test"][b].double().numpy()), atol=1e-4)
    # Same seed, same file contents.
    again = tmp_path / "e.safetensors"
    assert cli("data", "--sequences", "40", "--seed", "3", "--out", str(again), "--set", "data.N=11").returncode == 0
    assert all(torch.equal(tensors[k], load_file(again)[k]) for k in EXPECTED)


def test_data_command_refuses_to_overwrite(cli, tmp_path):
    out = tmp_path / "d.safetensors"
    out.write_bytes(b"precious results")
    res = cli("data", "--sequences", "4", "--out", str(out))
    assert res.returncode == 2 and "exists" in res.stderr and "--force" in res.stderr
    assert out.read_bytes() == b"precious results"
    res = cli("data", "--sequences", "4", "--out", str(out), "--force")
    assert res.returncode == 0, res.stderr
    assert load_task_batch(out)[0].tokens.shape[0] == 4
    res = cli("data", "--sequences", "4", "--out", str(tmp_path))
    assert res.returncode == 2 and "directory" in res.stderr


def test_load_task_batch_round_trip_and_bad_files(tmp_path):
    from selectlens.config import load_config
    from selectlens.tasks import make_generator, make_task, save_task_batch

    cfg = load_config("classification", ["data.N=8", "data.d_d=3"])
    batch = make_task(cfg).sample(7, make_generator(0))
    p = save_task_batch(tmp_path / "c.safetensors", batch, cfg)
    got, got_cfg = load_task_batch(p)
    assert got_cfg == cfg and torch.equal(got.tokens, batch.tokens)

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(p.read_bytes()[:200])
    partial = tmp_path / "partial.safetensors"
    save_file({"tokens": batch.tokens}, partial, metadata={"config": json.dumps(cfg.to_dict())})
    for bad, msg in [(empty, "empty"), (junk, "not a valid"), (truncated, "not a valid"), (partial, "lacks tensor"),
                     (tmp_path / "missing.safetensors", "not found")]:
        with pytest.raises(DataFileError, match=msg) as e:
            load_task_batch(bad)
        assert "\n" not in str(e.value)
