"""Fuzzing (hypothesis): random configs, CLI flags and output paths are either accepted or refused
with one ``error:`` line and exit code 2 — never a traceback. The expensive work behind a valid
command (training, evaluation, generation, reports) is replaced by stubs: the target is the input
layer."""

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import selectlens.benchmarks.datagen
import selectlens.benchmarks.train
import selectlens.evaluate
import selectlens.interpret.report
import selectlens.interpret.tl_export
import selectlens.model
import selectlens.tasks
import selectlens.tasks.io
import selectlens.train
from selectlens.cli import main
from selectlens.config import Config, ConfigError, config_from_dict

COUNTS = {"accepted": 0, "refused": 0}
EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


class Stubbed(Exception):
    pass


@pytest.fixture(autouse=True)
def stub_heavy_work(monkeypatch):
    def stop(*a, **k):
        raise Stubbed()

    for mod, name in [(selectlens.train, "train"), (selectlens.evaluate, "evaluate_model"),
                      (selectlens.interpret.report, "interpret_run"), (selectlens.benchmarks.datagen, "bench_datagen"),
                      (selectlens.benchmarks.train, "bench_train"), (selectlens.interpret.tl_export, "export_for_transformer_lens")]:
        monkeypatch.setattr(mod, name, stop)
    monkeypatch.setattr(selectlens.tasks, "make_task", stop)
    monkeypatch.setattr(selectlens.tasks.io, "write_data_file", stop)
    monkeypatch.setattr(selectlens.evaluate, "heldout_batch", stop)
    monkeypatch.setattr(selectlens.model, "import_legacy_state_dict", stop)


def run_main(argv, capsys):
    """``(exit code, stderr)``; ``None`` as code when a valid command reached the stubbed work."""
    try:
        code = main(argv)
    except Stubbed:
        capsys.readouterr()
        return None, ""
    err = capsys.readouterr().err
    return code, err


def check_outcome(code, err):
    if code is None or code == 0:
        COUNTS["accepted"] += 1
        return
    COUNTS["refused"] += 1
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------- values

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12), st.sampled_from(["1e-3", "cpu", "cuda:7", "float64", "gpt2", "nan", "-1"]),
)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(string.ascii_letters, max_size=8), c, max_size=4), max_leaves=8)

FIELDS = {
    "data": ["train_samp_per_class", "d_d", "N", "data_alphas", "candidate_alphas", "train_prop", "classification",
             "data_gen_factor", "noise_scale", "bogus"],
    "model": ["family", "n_embd", "n_layer", "n_head", "n_embed"],
    "training": ["batch_size", "lr", "save_every_epochs", "epochs", "loss", "schedule", "warmup_steps", "grad_clip"],
    "wandb": ["name", "project", "entity", "notes"],
    "eval": ["sequences", "temperature_sequences"],
}
TOP = ["out_dir", "seed", "device", "dtype", "extra"]


@st.composite
def config_documents(draw):
    doc = {}
    for section, keys in FIELDS.items():
        if draw(st.booleans()):
            doc[section] = {k: draw(values) for k in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))}
        elif draw(st.integers(0, 9)) == 0:
            doc[section] = draw(values)
    for k in draw(st.lists(st.sampled_from(TOP), max_size=2, unique=True)):
        doc[k] = draw(values)
    return doc


@FUZZ
@given(doc=st.one_of(config_documents(), values))
def test_fuzz_config_documents(doc, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    try:
        cfg = config_from_dict(yaml.safe_load(path.read_text()))
        assert isinstance(cfg, Config)
    except ConfigError as e:
        assert "\n" not in str(e)
    out = path.parent / "d.safetensors"
    code, err = run_main(["data", "--config", str(path), "--out", str(out)], capsys)
    check_outcome(code, err)


@FUZZ
@given(text=st.text(max_size=200))
def test_fuzz_raw_yaml_text(text, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    code, err = run_main(["data", "--config", str(path), "--out", str(path.parent / "d.safetensors")], capsys)
    check_outcome(code, err)


# ---------------------------------------------------------------------------- flags

OPTIONS = {
    "data": ["--config", "--set", "--sequences", "--seed", "--device", "--heldout", "--run", "--out", "--force"],
    "train": ["--config", "--set", "--out", "--resume", "--force", "--max-minutes", "--seed", "--device", "--quiet"],
    "eval": ["--run", "--sequences", "--device", "--json"],
    "predict": ["--run", "--data", "--out", "--force", "--device"],
    "import": ["--checkpoint", "--config", "--set", "--out", "--force"],
    "run": ["--config", "--set", "--out", "--force", "--max-minutes", "--seed", "--device", "--quiet"],
    "interpret": ["--run", "--out", "--sequences", "--device", "--quiet"],
    "export-tl": ["--run", "--out", "--force"],
    "bench datagen": ["--task", "--config", "--set", "--device", "--sequences", "--reference-sequences", "--json"],
    "bench train": ["--config", "--set", "--device", "--reference-sequences", "--json"],
}
FLAG_VALUES = st.one_of(
    st.sampled_from(["0", "1", "-3", "1e9", "nan", "abc", "", "cpu", "cuda", "meta", "default", "classification",
                     "regression", "training.lr=1e-3", "data.N=1", "data.N=x", "bogus=1", "=", "a.b.c=[", "model.n_head=0",
                     "data.data_alphas=[]", "/nonexistent/x", "/proc/selectlens/x", "."]),
    st.text(string.printable, max_size=10),
)


@st.composite
def argvs(draw, command):
    argv = command.split()
    for opt in draw(st.lists(st.sampled_from(OPTIONS[command] + ["--nope", "-x"]), max_size=5)):
        argv.append(opt)
        if opt not in ("--force", "--resume", "--quiet", "--json", "--heldout") and draw(st.integers(0, 9)) > 0:
            argv.append(draw(FLAG_VALUES))
    return argv


@pytest.mark.parametrize("command", list(OPTIONS))
def test_fuzz_cli_flags(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative outputs land in a scratch directory

    @FUZZ
    @given(argv=argvs(command))
    def inner(argv):
        code, err = run_main(argv, capsys)
        check_outcome(code, err)

    inner()


# ---------------------------------------------------------------------------- output paths

@FUZZ
@given(kind=st.sampled_from(["existing_file", "directory", "unwritable", "file_as_parent"]),
       command=st.sampled_from(["data", "predict", "train", "import", "export-tl"]), name=st.text(string.ascii_letters, min_size=1, max_size=8))
def test_fuzz_output_paths(kind, command, name, tmp_path_factory, capsys):
    base = tmp_path_factory.mktemp("paths")
    precious = base / f"{name}.safetensors"
    precious.write_bytes(b"precious results")
    target = {
        "existing_file": precious,
        "directory": base,
        "unwritable": Path("/proc/selectlens-fuzz") / f"{name}.safetensors",
        "file_as_parent": precious / "inner.safetensors",
    }[kind]
    if command in ("train", "import", "export-tl") and kind == "directory":
        (base / "keep.txt").write_text("keep")  # a non-empty run directory
    argv = {
        "data": ["data", "--sequences", "4", "--out", str(target)],
        "predict": ["predict", "--run", str(base), "--data", str(precious), "--out", str(target)],
        "train": ["train", "--out", str(target)],
        "import": ["import", "--checkpoint", str(precious), "--config", "default", "--out", str(target)],
        "export-tl": ["export-tl", "--run", str(base), "--out", str(target)],
    }[command]
    code, err = run_main(argv, capsys)
    assert code == 2, (argv, code, err)
    check_outcome(code, err)
    assert precious.read_bytes() == b"precious results"


def test_zz_report_fuzz_counts():
    total = COUNTS["accepted"] + COUNTS["refused"]
    print(f"\nfuzz: {total} CLI invocations, {COUNTS['accepted']} accepted, {COUNTS['refused']} refused with one line, 0 tracebacks")
    assert total >= EXAMPLES * 3
