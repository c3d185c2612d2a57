"""Sweeps on a real local Ray (``ray.init(num_cpus=2)``, shared by the module): a 2×2 grid × 2 seeds,
equality with standalone runs, a failing trial, SIGKILL of the driver + ``--resume``, the aggregation
against scipy, spec validation (also fuzzed) and the sweep report in headless Chromium."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, run_cli
from selectlens.cli import main
from selectlens.errors import InputError
from selectlens.sweeps import SpecError, load_spec, parse_spec, run_sweep
from selectlens.sweeps.asha import rung_history, rung_table

ray = pytest.importorskip("ray")

TINY = {"data.train_samp_per_class": 400, "training.epochs": 2, "training.batch_size": 64,
        "eval.sequences": 500, "eval.temperature_sequences": 200, "model.n_embd": 16, "model.n_layer": 1}


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def grid_sweep(ray_session, tmp_path_factory):
    """The 2×2 grid × 2 seeds, run once for the module."""
    tmp = tmp_path_factory.mktemp("grid")
    spec = write_spec(tmp / "grid.yaml", base="default", set=TINY,
                      grid={"model.n_head": [1, 2], "training.lr": [0.002, 0.004]}, seeds=[0, 1], resources={"cpus": 1})
    lines = []
    result = run_sweep(load_spec(spec), tmp / "sweep", echo=lines.append)
    return tmp / "sweep", result, lines


def test_grid_sweep_runs_every_trial_and_reports_progress(grid_sweep):
    out, result, lines = grid_sweep
    assert result.count("done") == 8 and len(result.statuses) == 8
    names = sorted(p.name for p in (out / "trials").iterdir() if not p.name.startswith("."))  # not the run locks
    assert sorted(p.name for p in (out / "trials").glob(".*")) == sorted(f".{n}.lock" for n in names)
    assert names == sorted(result.statuses)
    assert "model.n_head=2_training.lr=0.004_seed=1" in names
    for name in names:
        for f in ("config.json", "metrics.jsonl", "model.safetensors", "eval.json"):
            assert (out / "trials" / name / f).exists(), (name, f)
    changes = [ln for ln in lines if ln.startswith("[")]
    assert len(changes) == 16  # running + done per trial
    assert changes[-1].startswith("[done 8 / running 0 / pending 0 / failed 0]")


def test_trial_equals_standalone_train_and_eval(grid_sweep, tmp_path):
    out, _, _ = grid_sweep
    name = "model.n_head=2_training.lr=0.004_seed=1"
    run = tmp_path / "standalone"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    base = [sys.executable, "-m", "selectlens.cli"]
    res = subprocess.run(base + ["train", "--out", str(run), "--seed", "1", "--quiet", "--set", "model.n_head=2",
                                 "--set", "training.lr=0.004", *sets], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(base + ["eval", "--run", str(run), "--json"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    trial = out / "trials" / name
    assert (trial / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    assert json.loads((trial / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    assert json.loads((trial / "eval.json").read_text()) == json.loads((run / "eval.json").read_text())


def test_summary_rows_and_t_intervals_match_scipy(grid_sweep):
    import csv

    from scipy import stats

    out, _, _ = grid_sweep
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 8
    by_point = {}
    for r in rows:
        ev = json.loads((out / "trials" / r["trial"] / "eval.json").read_text())
        cv = ev["predictors"]["context_validation_select"]
        assert float(r["model_mse"]) == pytest.approx(ev["predictors"]["model"]["mse"], rel=1e-12)
        assert float(r["context_validation_select_gap"]) == pytest.approx(cv["mse"] - ev["predictors"]["model"]["mse"], abs=1e-9)
        assert float(r["context_validation_select_gap_ci_low"]) == pytest.approx(cv["paired_diff_ci"][0])
        by_point.setdefault((r["model.n_head"], r["training.lr"]), []).append(float(r["context_validation_select_gap"]))
    grouped = list(csv.DictReader((out / "summary_grouped.csv").open()))
    assert len(grouped) == 4
    for g in grouped:
        vals = np.array(by_point[(g["model.n_head"], g["training.lr"])])
        lo, hi = stats.t.interval(0.95, len(vals) - 1, loc=vals.mean(), scale=stats.sem(vals))
        assert int(g["n"]) == 2
        assert float(g["context_validation_select_gap"]) == pytest.approx(vals.mean())
        assert float(g["context_validation_select_gap_t_low"]) == pytest.approx(lo)
        assert float(g["context_validation_select_gap_t_high"]) == pytest.approx(hi)
    md = (out / "summary.md").read_text()
    assert "t-interval across seeds" in md and md.count("\n| model.n_head=") == 8


def test_failing_trial_does_not_stop_the_others(ray_session, tmp_path):
    # lr = 1e30 passes config validation but the loss turns non-finite in the first epoch
    spec = write_spec(tmp_path / "fail.yaml", set=TINY, grid={"training.lr": [0.002, 1.0e30]}, seeds=[0],
                      stages=["train", "eval"])
    lines = []
    result = run_sweep(load_spec(spec), tmp_path / "sweep", echo=lines.append)
    assert result.statuses["training.lr=0.002_seed=0"]["status"] == "done"
    bad = result.statuses["training.lr=1e+30_seed=0"]
    assert bad["status"] == "failed" and "non-finite loss" in bad["error"]
    failed_line = next(ln for ln in lines if ln.endswith(bad["error"]))
    assert "training.lr=1e+30_seed=0: failed: non-finite loss" in failed_line
    md = (tmp_path / "sweep" / "summary.md").read_text()
    assert "missing" in md and "training.lr=1e+30_seed=0" in md.split("## Per grid point")[1]


def _checkpointed(out: Path) -> bool:
    return any((out / "trials").glob("*/checkpoints/epoch_000004"))


def _driver_at_first_checkpoint(spec: Path, out: Path, ray_session: str) -> subprocess.Popen:
    """A sweep driver in its own process group, connected with --address, once a trial has checkpoints."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "selectlens.cli", "sweep", str(spec), "--out", str(out), "--address", ray_session]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while not _checkpointed(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is not None or not _checkpointed(out):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the driver ended or made no checkpoint in 120 s: {proc.communicate()[0].decode()}")
    return proc


def test_sigkill_driver_then_resume_equals_uninterrupted(ray_session, tmp_path):
    """The driver (its own process group, connected with --address) is SIGKILLed once a trial has
    checkpoints; --resume finishes the sweep and every trial equals an uninterrupted run."""
    from selectlens.config import load_config
    from selectlens.train import train

    longer = dict(TINY, **{"training.epochs": 14, "training.save_every_epochs": 2, "data.train_samp_per_class": 1200})
    spec = write_spec(tmp_path / "kill.yaml", set=longer, seeds=[3, 4], stages=["train"])
    out = tmp_path / "sweep"
    proc = _driver_at_first_checkpoint(spec, out, ray_session)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    states = [json.loads(p.read_text())["status"] for p in (out / "state").glob("*.json")]
    assert "running" in states  # killed mid-sweep
    lines = []
    resumed = run_sweep(None, out, resume=True, echo=lines.append)  # in this process, on the same Ray
    assert resumed.count("done") == 2
    import torch
    from safetensors.torch import load_file

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial (resources.cpus = 1)
    try:
        for seed in (3, 4):
            cfg = load_config("default", [f"{k}={v}" for k, v in longer.items()] + [f"seed={seed}"])
            train(cfg, tmp_path / f"ref{seed}", progress=False)
    finally:
        torch.set_num_threads(threads)
    for seed in (3, 4):
        ref = tmp_path / f"ref{seed}"
        trial = out / "trials" / f"seed={seed}"
        assert (trial / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
        got, want = load_file(trial / "model.safetensors"), load_file(ref / "model.safetensors")
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # bitwise
    lines = []
    run_sweep(None, out, resume=True, echo=lines.append)
    assert lines == [f"sweep {out.resolve()}: 2 trials, 2 done, 0 to run"]  # finished trials are not rerun


def test_ctrl_c_leaves_running_trials_to_resume_not_stopped(ray_session, tmp_path):
    """Ctrl-C (SIGINT) on the driver: Tune stops every trial, but only the scheduler's stops are stops; the
    interrupted trials stay unfinished and a resume trains them to the end."""
    longer = dict(TINY, **{"training.epochs": 14, "training.save_every_epochs": 2, "data.train_samp_per_class": 1200})
    spec = write_spec(tmp_path / "int.yaml", set=longer, seeds=[5, 6], stages=["train"])
    out = tmp_path / "sweep"
    proc = _driver_at_first_checkpoint(spec, out, ray_session)
    try:
        os.kill(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    states = {p.stem: json.loads(p.read_text())["status"] for p in (out / "state").glob("*.json")}
    assert "stopped" not in states.values() and "running" in states.values(), (states, output)
    resumed = run_sweep(None, out, resume=True, echo=lambda line: None)
    assert resumed.count("done") == 2
    assert all(len((out / "trials" / f"seed={s}" / "metrics.jsonl").read_text().splitlines()) == 14 for s in (5, 6))


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"data.NN": [5, 6]}}, "trial data.NN=5_seed=0: unknown config key data.NN for data.task selection (did you mean data.N?)"),
    ({"grid": {"data.N": [5, 1]}}, "trial data.N=1_seed=0: config key data.N: Input should be greater than or equal to 2"),
    ({"set": {"training.lr": -1}}, "trial seed=0: config key training.lr: Input should be greater than 0"),
    ({"sets": {}}, "unknown sweep spec key 'sets'"),
    ({"seeds": [0, -1]}, "spec seeds: -1 is not an integer >= 0"),
    ({"seeds": []}, "spec key seeds must be a non-empty list"),
    ({"resources": {"gpu": 1}}, "unknown spec resources key 'gpu'"),
    ({"resources": {"cpus": 0}}, "spec resources.cpus must be a number > 0"),
    ({"stages": ["eval"]}, "spec stages must be train, train+eval or train+eval+interpret"),
    ({"stages": ["train", "plot"]}, "unknown stage 'plot'"),
    ({"grid": {"data.N": []}}, "spec grid.data.N must be a non-empty list"),
    ({"grid": {"data.N": [5, 5]}}, "spec grid.data.N repeats a value"),
    ({"base": "nosuchpreset"}, "config file not found"),
])
def test_bad_specs_are_refused_before_anything_runs(tmp_path, capsys, spec, message):
    path = write_spec(tmp_path / "s.yaml", **spec)
    code = main(["sweep", str(path), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_sweep_flags_and_directories(tmp_path, capsys):
    spec = write_spec(tmp_path / "s.yaml", set=TINY)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    cases = [
        (["sweep", str(spec), "--out", str(tmp_path / "full")], "sweep directory exists"),
        (["sweep", "--resume", "--out", str(tmp_path / "full")], "is not a sweep directory"),
        (["sweep", "--out", str(tmp_path / "o")], "give a SPEC_FILE"),
        (["sweep", str(spec), "--out", str(tmp_path / "o"), "--max-concurrent", "0"], "--max-concurrent"),
        (["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")], "not found"),
        (["sweep-report", str(tmp_path / "full")], "is not a sweep directory"),
    ]
    for args, message in cases:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "full" / "x").read_text() == "keep"


def _spec_values():
    scalar = st.one_of(st.integers(-3, 70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.text(max_size=6), st.none())
    return st.one_of(scalar, st.lists(scalar, max_size=3))


KEYS = st.sampled_from(["data.N", "data.d_d", "training.lr", "model.n_head", "model.n_embd", "seed", "data.x",
                        "nope", "data.data_alphas", "training.epochs", "", "a..b"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.dictionaries(st.sampled_from(["base", "set", "grid", "seeds", "resources", "stages", "other"]),
                       st.one_of(_spec_values(), st.dictionaries(KEYS, st.one_of(_spec_values(), st.lists(_spec_values(), max_size=3)),
                                                                 max_size=3)), max_size=5))
def test_fuzz_spec_parser_accepts_or_refuses_with_one_line(raw):
    try:
        spec = parse_spec(raw)
        trials = spec.trials()
    except SpecError as e:
        assert "\n" not in str(e) and str(e)
        return
    except InputError as e:  # a base config that fails to load
        assert "\n" not in str(e)
        return
    assert len(trials) == math.prod(len(v) for v in spec.grid.values()) * len(spec.seeds)
    assert len({t.name for t in trials}) == len(trials)


def test_sweep_report_in_headless_chromium_marks_missing_trials(grid_sweep, browser, tmp_path):
    import shutil

    out, _, _ = grid_sweep
    partial = tmp_path / "partial"
    shutil.copytree(out, partial, ignore=shutil.ignore_patterns(".ray"))
    missing = "model.n_head=1_training.lr=0.002_seed=1"
    (partial / "state" / f"{missing}.json").write_text(json.dumps({"status": "running", "stages_done": ["train"]}))
    # a user string in a grid value must come out escaped
    res = run_cli("sweep-report", str(partial))
    assert res.returncode == 0, res.stderr
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto((partial / "report.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("#plots img").count() >= 4  # model MSE and gaps vs each of the two keys
    assert all(page.locator("#plots img").nth(i).evaluate("i => i.naturalWidth > 100") for i in range(4))
    assert "7 of 8 trials finished; 1 missing" in page.locator("#status").inner_text()
    row = page.locator("#trials tr.missing")
    assert row.count() == 1 and missing in row.inner_text() and "running" in row.inner_text()
    assert missing in page.locator("#grouped").inner_text()
    assert not errors, errors
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    page.close()


def test_sweep_report_escapes_user_strings(tmp_path):
    from selectlens.sweeps.engine import create_sweep_dir
    from selectlens.sweeps.report import write_sweep_report

    spec = parse_spec({"set": TINY, "grid": {"wandb.notes": ["<script>alert(1)</script>", "a&b"]}, "seeds": [0]})
    out = tmp_path / "s"
    create_sweep_dir(out, spec, spec.trials())
    text = write_sweep_report(out).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text and "a&amp;b" in text


RAW_TINY = {"data.train_samp_per_class": 400, "training.epochs": 8, "training.batch_size": 32, "eval.sequences": 400,
            "eval.temperature_sequences": 200, "model.n_embd": 16, "model.n_layer": 1, "data.N": 8,
            "training.warmup_steps": 0, "training.schedule": "constant", "data.layout": "interleaved"}


def test_asha_stops_the_worse_trial_and_the_report_draws_every_curve(ray_session, tmp_path):
    """One trial at a time, the good learning rate first: at the first rung (4 epochs = 1,440 sequences) ASHA
    compares the hopeless lr = 1e-7 with it and stops it; a resume does not run a stopped trial again."""
    spec = write_spec(tmp_path / "asha.yaml", base="mixed_noise_cpu", set=RAW_TINY, grid={"training.lr": [0.003, 1.0e-7]},
                      seeds=[0], stages=["train", "eval"],
                      scheduler={"asha": {"metric": "excess_ratio", "time": "sequences", "max": 2880, "grace": 1440,
                                          "reduction": 2}})
    lines: list[str] = []
    result = run_sweep(load_spec(spec), tmp_path / "sweep", max_concurrent=1, echo=lines.append)
    good, bad = result.statuses["training.lr=0.003_seed=0"], result.statuses["training.lr=1e-07_seed=0"]
    assert any(line.endswith("training.lr=1e-07_seed=0: stopped: by the scheduler at 1,440 sequences") for line in lines), lines
    assert good["status"] == "done" and bad["status"] == "stopped"
    trials = tmp_path / "sweep" / "trials"
    epochs = lambda name: len((trials / name / "metrics.jsonl").read_text().splitlines())  # noqa: E731
    assert epochs("training.lr=0.003_seed=0") == 8 and epochs("training.lr=1e-07_seed=0") < 8
    assert (trials / "training.lr=0.003_seed=0" / "eval.json").is_file()
    assert not (trials / "training.lr=1e-07_seed=0" / "eval.json").exists()
    lines = []
    again = run_sweep(None, tmp_path / "sweep", resume=True, echo=lines.append)
    assert again.statuses["training.lr=1e-07_seed=0"]["status"] == "stopped"
    assert lines[0].endswith(": 2 trials, 1 done, 1 stopped by the scheduler, 0 to run"), lines

    # As if the driver had died before the hopeless trial started: a resume's ASHA must hold the good trial's
    # rungs from its metrics.jsonl, or it meets lr = 1e-7 with empty rungs and runs it to its end.
    good_rungs = rung_history(tmp_path / "sweep", {t.name: t.config.to_dict() for t in load_spec(spec).trials()},
                              load_spec(spec).asha)["training.lr=0.003_seed=0"]
    metrics = [json.loads(line) for line in (trials / "training.lr=0.003_seed=0" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in good_rungs] == [m["sequences"] for m in metrics]
    assert [r for _, r in good_rungs] == pytest.approx(
        [m["test_loss"] / m["baselines"]["bayes_posterior_mixture"] - 1 for m in metrics], rel=1e-12)
    (tmp_path / "sweep" / "state" / "training.lr=1e-07_seed=0.json").unlink()
    shutil.rmtree(trials / "training.lr=1e-07_seed=0")
    lines = []
    third = run_sweep(None, tmp_path / "sweep", resume=True, max_concurrent=1, echo=lines.append)
    assert third.statuses["training.lr=1e-07_seed=0"]["status"] == "stopped", lines
    assert epochs("training.lr=1e-07_seed=0") == 4  # stopped at the first rung, 1,440 sequences

    # The rung table (report, docs) against the metrics themselves, and read back from a kept record.
    def ratio_at(name, rung):
        records = [json.loads(line) for line in (trials / name / "metrics.jsonl").read_text().splitlines()]
        first = next(m for m in records if m["sequences"] >= rung)
        return f"{first['test_loss'] / first['baselines']['bayes_posterior_mixture'] - 1:.3f}"

    head, rows, count = rung_table(tmp_path / "sweep")
    assert head[-3:] == ["excess_ratio at 1,440", "excess_ratio at 2,880", "at the last epoch"]
    assert count == "2 trials: 1 done, 1 stopped by ASHA, 0 unfinished, 0 not started; 4,320 training sequences in all"
    assert rows[0][:3] == ["0.003", "0", "done"] and rows[1][:3] == ["1e-07", "0", "stopped"]
    assert rows[0][4:6] == [ratio_at("training.lr=0.003_seed=0", 1440), ratio_at("training.lr=0.003_seed=0", 2880)]
    assert rows[1][4:6] == [ratio_at("training.lr=1e-07_seed=0", 1440), "—"]
    keep_sweep = load_script("keep_sweep")
    spec_file = tmp_path / "asha.yaml"
    assert keep_sweep.main([str(tmp_path / "sweep"), "--spec", str(spec_file), "--to", str(tmp_path / "records")]) == 0
    assert rung_table(tmp_path / "records" / "sweep") == (head, rows, count)
    assert not list((tmp_path / "records" / "sweep").rglob("*.pt")) and not list((tmp_path / "records" / "sweep").rglob("checkpoint*"))
    assert keep_sweep.main([str(tmp_path / "sweep"), "--spec", str(spec_file), "--to", str(tmp_path / "records")]) == 2  # no --force
    other = write_spec(tmp_path / "other.yaml", **{**yaml.safe_load(spec_file.read_text()), "seeds": [1]})
    assert keep_sweep.main([str(tmp_path / "sweep"), "--spec", str(other), "--to", str(tmp_path / "elsewhere")]) == 2
    assert not (tmp_path / "elsewhere" / "sweep").exists()
    from selectlens.sweeps.report import write_sweep_report

    html_text = write_sweep_report(tmp_path / "sweep").read_text()
    assert "every trial&#x27;s training curve" in html_text or "every trial's training curve" in html_text
    assert "id='rungs'" in html_text and "1 stopped by ASHA" in html_text


def test_asha_settings_are_checked():
    base = {"base": "mixed_noise_cpu", "scheduler": {"asha": {"metric": "excess_ratio", "max": 100, "grace": 10}}}
    assert parse_spec(base).asha["reduction"] == 3
    for bad, message in (({"metric": "accuracy"}, "scheduler.asha.metric"), ({"grace": 1000}, "grace must not exceed max"),
                         ({"rungs": 3}, "unknown spec scheduler.asha key"), ({"time": "epochs"}, "scheduler.asha.time")):
        with pytest.raises(SpecError, match=message):
            parse_spec({**base, "scheduler": {"asha": {**base["scheduler"]["asha"], **bad}}})


def test_rung_records_replay_rays_own_bracket():
    """``recorded_at_rungs`` against Ray's ``_Bracket`` fed the same results (random times, some skipping rungs)."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    from selectlens.sweeps.asha import recorded_at_rungs, rungs

    rng = np.random.default_rng(0)
    for settings in ({"max": 2700000, "grace": 100000, "reduction": 3}, {"max": 2880, "grace": 1440, "reduction": 2},
                     {"max": 1000, "grace": 7, "reduction": 4}):
        bracket = _Bracket(settings["grace"], settings["max"] * 1.01 + 1, settings["reduction"], 0)
        assert sorted(m for m, _ in bracket._rungs) == pytest.approx(rungs(settings))
        for trial in range(200):
            times = np.cumsum(rng.integers(1, settings["max"] // 3, size=rng.integers(1, 12)))
            points = [(float(t), float(rng.random())) for t in times]
            key = f"t{trial}"
            for t, m in points:
                bracket.on_result(SimpleNamespace(trial_id=key), t, -m)
            ray_values = [(-recorded[key] if key in recorded else None) for _, recorded in bracket._rungs]
            assert recorded_at_rungs(points, [m for m, _ in bracket._rungs]) == ray_values


def test_seeded_asha_judges_a_continuing_trial_again_and_reports_each_stop():
    """Rungs seeded from earlier trials stop a worse newcomer; a continuing trial's highest rung is judged again
    (the kill may have come before its judgement), its lower ones not; every stop reaches ``on_stop``."""
    from ray.tune.schedulers import TrialScheduler

    from selectlens.sweeps.asha import seeded_asha

    settings = {"metric": "excess_ratio", "time": "sequences", "max": 900, "grace": 100, "reduction": 3}
    history = {"a": [(100, 0.1), (300, 0.1)], "b": [(100, 0.2)], "c": [(100, 0.3)], "late": [(100, 0.25), (300, 0.9)]}
    stops = []
    asha = seeded_asha(settings, history, running={"late", "new"}, finished={"a": "done", "b": "stopped", "c": "stopped"},
                       on_stop=lambda name, result: stops.append((name, result["sequences"])))
    new, late = SimpleNamespace(trial_id="1", config={"name": "new"}), SimpleNamespace(trial_id="2", config={"name": "late"})
    asha.on_trial_add(None, new)
    asha.on_trial_add(None, late)
    # new at rung 100 with 0.25: the cutoff over 0.1, 0.2, 0.3 and late's 0.25 is worse than the best third
    assert asha.on_trial_result(None, new, {"sequences": 100, "excess_ratio": 0.25}) == TrialScheduler.STOP
    # late resumes past 300: judged there again with the 0.9 it had at 300 (not its 0.05 now), against a's 0.1
    assert asha.on_trial_result(None, late, {"sequences": 280, "excess_ratio": 0.6}) == TrialScheduler.CONTINUE  # not back yet
    assert asha.on_trial_result(None, late, {"sequences": 320, "excess_ratio": 0.05}) == TrialScheduler.STOP
    assert stops == [("new", 100), ("late", 320)]
    keeps = seeded_asha(settings, {"a": [(100, 0.3), (300, 0.2)], "good": [(100, 0.1), (300, 0.05)]}, running={"good"},
                        finished={"a": "done"})
    good = SimpleNamespace(trial_id="3", config={"name": "good"})
    keeps.on_trial_add(None, good)
    assert keeps.on_trial_result(None, good, {"sequences": 320, "excess_ratio": 0.02}) == TrialScheduler.CONTINUE
    rung300 = next(recorded for milestone, recorded in keeps._brackets[0]._rungs if milestone == 300)
    assert rung300 == {"earlier:a": pytest.approx(-0.2), "3": pytest.approx(-0.05)}  # its value at 300, not its later 0.02
    fresh = seeded_asha(settings, {}, running={"new"})
    fresh.on_trial_add(None, new)
    assert fresh.on_trial_result(None, new, {"sequences": 100, "excess_ratio": 0.25}) == TrialScheduler.CONTINUE


def test_asha_never_stops_a_trial_that_has_trained_its_whole_budget():
    """The top rung is the budget (100 · 3² = 900): a worse trial judged there has nothing left to save and
    goes on to its evaluation, its value kept on the rung; below the budget the same value stops it."""
    from ray.tune.schedulers import TrialScheduler

    from selectlens.sweeps.asha import seeded_asha

    settings = {"metric": "excess_ratio", "time": "sequences", "max": 900, "grace": 100, "reduction": 3}
    history = {"a": [(100, 0.1), (300, 0.1), (900, 0.1)], "b": [(100, 0.1), (300, 0.1), (900, 0.1)],
               "c": [(100, 0.1), (300, 0.2)]}
    stops = []
    asha = seeded_asha(settings, history, running={"late"}, finished={"a": "done", "b": "done", "c": "stopped"},
                       on_stop=lambda name, result: stops.append(name))
    late = SimpleNamespace(trial_id="1", config={"name": "late"})
    asha.on_trial_add(None, late)
    assert asha.on_trial_result(None, late, {"sequences": 100, "excess_ratio": 0.1}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, late, {"sequences": 300, "excess_ratio": 0.1}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, late, {"sequences": 900, "excess_ratio": 0.5}) == TrialScheduler.CONTINUE
    rung900 = next(recorded for milestone, recorded in asha._brackets[0]._rungs if milestone == 900)
    assert rung900["1"] == pytest.approx(-0.5) and stops == []
    worse = SimpleNamespace(trial_id="2", config={"name": "worse"})
    asha.on_trial_add(None, worse)
    assert asha.on_trial_result(None, worse, {"sequences": 300, "excess_ratio": 0.5}) == TrialScheduler.STOP
    assert stops == ["worse"]


def test_curve_figure_labels_the_best_trials_shortly():
    """With more trials than the legend holds, the best at their last epoch are labelled by their swept values."""
    from selectlens.sweeps.report import LABELLED, curve_label, curves_figure

    keys = ["data.layout", "training.curriculum"]
    row = {"data.layout": "per_example", "training.curriculum": '{"d_start": 2}', "seed": 0}
    assert curve_label(row, keys, seeds=False) == 'layout=per_example, curriculum={"d_start":2}'
    assert curve_label(row, keys, seeds=True).endswith(", seed=0")
    finals = np.random.default_rng(1).permutation(LABELLED + 5) + 1.0
    curves = {f"t{i}": {"sequences": [1, 2], "test_loss": [4.0, f], "reference": [1.0, 1.0], "reference_name": "bayes",
                        "status": "done", "label": f"trial {i}"} for i, f in enumerate(finals)}
    fig = curves_figure(curves)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    best = sorted(range(len(finals)), key=lambda i: finals[i])[:LABELLED]
    assert labels == [f"trial {i} (done)" for i in best]
    assert len(fig.axes[0].get_lines()) == len(finals)


def test_asha_judges_a_curriculum_trial_on_its_full_size_split(tmp_path):
    """A curriculum trial reports (live, and in the rungs a resume rebuilds) its full-size split's excess, not its
    smaller point's; a record from before runs kept that split is left off the rungs, and the rung table marks
    it; the sweep log says when the first rung comes before a curriculum reaches full size."""
    from selectlens.sweeps.asha import epoch_report
    from selectlens.sweeps.spec import curriculum_before_grace
    from selectlens.sweeps.aggregate import collect
    from selectlens.sweeps.engine import create_sweep_dir
    from selectlens.sweeps.report import trial_curves
    from selectlens.sweeps.trial import run_trial, trial_dir

    cur = {"d_start": 2, "d_inc": 1, "n_start": 3, "n_inc": 1, "every": 10}
    spec = parse_spec({"base": "mixed_noise_cpu", "set": {**RAW_TINY, "training.epochs": 3, "training.position_weights": "uniform"},
                       "grid": {"training.curriculum": [None, cur]}, "seeds": [0], "stages": ["train"],
                       "scheduler": {"asha": {"metric": "excess_ratio", "time": "sequences", "max": 1080, "grace": 360}}})
    trials = spec.trials()
    out = tmp_path / "sweep"
    create_sweep_dir(out, spec, trials)
    reports: dict[str, list[dict]] = {}
    for t in trials:
        run_trial(out, t.name, t.config.to_dict(), ["train"], 1, on_epoch=lambda r, n=t.name: reports.setdefault(n, []).append(
            epoch_report(r, "bayes_posterior_mixture", 0.0)))
    plain, grown = (t.name for t in trials)
    metrics = [json.loads(line) for line in (trial_dir(out, grown) / "metrics.jsonl").read_text().splitlines()]
    full = [m["full_size"]["test_loss"] / m["full_size"]["baselines"]["bayes_posterior_mixture"] - 1 for m in metrics]
    point = [m["test_loss"] / m["baselines"]["bayes_posterior_mixture"] - 1 for m in metrics]
    assert [r["excess_ratio"] for r in reports[grown]] == pytest.approx(full, rel=1e-12) and full != pytest.approx(point)
    history = rung_history(out, {t.name: t.config.to_dict() for t in trials}, spec.asha)
    assert [v for _, v in history[grown]] == pytest.approx(full, rel=1e-12) and len(history[plain]) == 3
    curves = trial_curves(out, collect(out))  # the sweep report's curves: the same split
    assert curves[grown]["test_loss"] == [m["full_size"]["test_loss"] for m in metrics]
    assert not curves[grown]["label"].endswith("(at its curriculum point)")

    # As written before curriculum runs kept a full-size split: off the rungs, and marked in the table.
    path = trial_dir(out, grown) / "metrics.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in m.items() if k != "full_size"}) + "\n" for m in metrics))
    assert grown not in rung_history(out, {t.name: t.config.to_dict() for t in trials}, spec.asha)
    head, rows, line = rung_table(out)
    row = next(r for r in rows if r[0] != "none")
    assert row[head.index("excess_ratio at 360")] == f"{point[0]:.3f}°" and row[-1] == f"{point[-1]:.3f}°"
    assert "° marks a value measured at the trial's curriculum point" in line
    assert not any("°" in c for r in rows if r[0] == "none" for c in r)
    assert trial_curves(out, collect(out))[grown]["label"].endswith("(at its curriculum point)")

    # The log's note, against a brute-force count of the batches (the last of each epoch is short).
    def sequences_to_full(config) -> float:
        cur, data, n_train, bs = config.training.curriculum, config.data, 360, config.training.batch_size
        seen, step = 0, 0
        for _ in range(config.training.epochs):
            for i in range(-(-n_train // bs)):
                if cur.point(step, data.d_d, data.N) == (data.d_d, data.N):
                    return seen
                seen, step = seen + min(bs, n_train - i * bs), step + 1
        return math.inf

    assert sequences_to_full(trials[1].config) == math.inf  # 50 steps to full size, 36 in the budget
    assert curriculum_before_grace(spec, trials) == ("note: 1 trials' curricula do not reach full size within their "
                                                     "budget; ASHA judges them on the full-size task before they have trained at full size")
    assert curriculum_before_grace(spec, trials[:1]) is None  # no curriculum
    quick = parse_spec({**spec.to_dict(), "grid": {"training.curriculum": [{**cur, "every": 5}]}})
    ends = sequences_to_full(quick.trials()[0].config)
    assert 360 < ends < 1080 and ends % 32 != 0  # within the budget, past a short batch
    note = curriculum_before_grace(quick, quick.trials())
    assert note is not None and f"after up to {ends:,} training sequences" in note and f"grace of {ends:,} or more" in note
    late = parse_spec({**quick.to_dict(), "scheduler": {"asha": {**spec.asha, "grace": ends}}})
    assert curriculum_before_grace(late, late.trials()) is None
