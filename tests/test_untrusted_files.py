"""Every file SelectLens reads, corrupted every way: refused with one line and exit 2, no code run."""

import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from selectlens.cli import main

REFUSED = []


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refused(argv, capsys, label):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, (label, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (label, err)
    REFUSED.append(label)


def _corruptions(good: bytes, marker):
    evil = pickle.dumps({"x": Payload(marker)})
    return {
        "empty": b"",
        "truncated": good[: len(good) // 3],
        "garbage": os.urandom(512),
        "json": json.dumps({"not": "weights"}).encode(),
        "code-running pickle": evil,
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from selectlens.config import load_config
    from selectlens.train import train

    run = tmp_path_factory.mktemp("u") / "run"
    cfg = load_config("default", ["data.train_samp_per_class=200", "training.epochs=2", "training.save_every_epochs=1",
                                  "eval.temperature_sequences=100", "model.n_embd=16", "model.n_layer=1"])
    train(cfg, run, progress=False)
    return run


def test_corrupted_files_are_refused(trained, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    # legacy checkpoints for `import`
    good_pth = tmp_path / "good.pth"
    torch.save({"_read_in.weight": torch.zeros(16, 3)}, good_pth)
    for name, data in _corruptions(good_pth.read_bytes(), marker).items():
        p = tmp_path / f"legacy-{name.replace(' ', '_')}.pth"
        p.write_bytes(data)
        _refused(["import", "--checkpoint", p, "--config", "default", "--out", tmp_path / f"imp-{len(REFUSED)}"], capsys, f"legacy .pth: {name}")
    torch.save({"_read_in.weight": torch.zeros(5, 5)}, tmp_path / "shape.pth")
    _refused(["import", "--checkpoint", tmp_path / "shape.pth", "--config", "default", "--out", tmp_path / "imp-shape"], capsys, "legacy .pth: wrong shape")
    # a run's model weights for `eval` / `predict`
    data = tmp_path / "d.safetensors"
    assert main(["data", "--sequences", "8", "--out", str(data)]) == 0
    good_model = (trained / "model.safetensors").read_bytes()
    for name, blob in _corruptions(good_model, marker).items():
        run = tmp_path / f"run-{name.replace(' ', '_')}"
        shutil.copytree(trained, run)
        (run / "model.safetensors").write_bytes(blob)
        for _, ck in [(p, p) for p in (run / "checkpoints").iterdir()]:
            (ck / "model.safetensors").write_bytes(blob)
        _refused(["predict", "--run", run, "--data", data, "--out", tmp_path / f"p-{len(REFUSED)}.safetensors"], capsys, f"model.safetensors: {name}")
    run = tmp_path / "run-shape"
    shutil.copytree(trained, run)
    from selectlens.model.checkpoint import read_safetensors

    tensors, meta = read_safetensors(run / "model.safetensors")
    tensors["read_out.weight"] = torch.zeros(1, 7)
    save_file(tensors, run / "model.safetensors", metadata=meta)
    shutil.rmtree(run / "checkpoints")
    _refused(["predict", "--run", run, "--data", data, "--out", tmp_path / "p-shape.safetensors"], capsys, "model.safetensors: wrong shape")
    # data files for `predict`
    for name, blob in _corruptions(data.read_bytes(), marker).items():
        p = tmp_path / f"data-{name.replace(' ', '_')}.safetensors"
        p.write_bytes(blob)
        _refused(["predict", "--run", trained, "--data", p, "--out", tmp_path / f"q-{len(REFUSED)}.safetensors"], capsys, f"data file: {name}")
    wrong = tmp_path / "data-shape.safetensors"
    assert main(["data", "--sequences", "4", "--set", "data.N=30", "--out", str(wrong)]) == 0
    _refused(["predict", "--run", trained, "--data", wrong, "--out", tmp_path / "q-shape.safetensors"], capsys, "data file: wrong shape")
    # trainer state for `train --resume`
    for name, blob in _corruptions((next((trained / "checkpoints").iterdir()) / "state.pt").read_bytes(), marker).items():
        run = tmp_path / f"state-{name.replace(' ', '_')}"
        shutil.copytree(trained, run)
        for ck in (run / "checkpoints").iterdir():
            (ck / "state.pt").write_bytes(blob)
        _refused(["train", "--out", run, "--resume", "--quiet"], capsys, f"state.pt: {name}")
    # run config
    for name, blob in {"empty": b"", "garbage": os.urandom(64), "invalid values": json.dumps({"data": {"N": -1}}).encode()}.items():
        run = tmp_path / f"cfg-{name.replace(' ', '_')}"
        shutil.copytree(trained, run)
        (run / "config.json").write_bytes(blob)
        _refused(["eval", "--run", run], capsys, f"config.json: {name}")
    assert not marker.exists(), "a pickle payload ran"
    print(f"\nuntrusted files: {len(REFUSED)} corrupted or malicious files refused, 0 payloads executed")
    assert len(REFUSED) >= 25
