"""scripts/results_tables.py: docs tables regenerated from runs and bench outputs, checked against
the numbers in the sources read independently of the script."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_RUN, run_cli

SCRIPT = ROOT / "scripts" / "results_tables.py"
NUM = r"[-+]?\d[\d,]*\.?\d*"


def _script():
    spec = importlib.util.spec_from_file_location("results_tables", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A tiny regression run made with the CLI: train, then eval (no interpret)."""
    run = tmp_path_factory.mktemp("results") / "tiny"
    sets = [a for o in TINY_RUN for a in ("--set", o)]
    res = run_cli("train", "--out", str(run), "--quiet", *sets)
    assert res.returncode == 0, res.stderr
    res = run_cli("eval", "--run", str(run))
    assert res.returncode == 0, res.stderr
    return run


def _page(tmp_path, *regions: str) -> str:
    text = "# Page\n\nText before.\n\n"
    for r in regions:
        text += f"<!-- table: {r} -->\n*Not generated yet.*\n<!-- /table -->\n\nText between.\n\n"
    return text


def _rows(markdown: str, region: str) -> list[list[str]]:
    body = re.search(rf"<!-- table: {region}[^>]*-->\n(.*?)<!-- /table -->", markdown, re.S).group(1)
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[1:]]  # without the header


def _numbers(cell: str) -> list[float]:
    return [float(v.replace(",", "")) for v in re.findall(NUM, cell)]


def test_eval_table_matches_eval_json(small_run, tmp_path):
    page = tmp_path / "results.md"
    page.write_text(_page(tmp_path, "default view=eval", "other"))
    res = _run_script(page, "--table", "default", str(small_run), "--machine", "test machine")
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    ev = json.loads((small_run / "eval.json").read_text())
    preds = ev["predictors"]
    rows = _rows(text, "default")
    assert [r[0].strip("*") for r in rows] == ["model"] + [n for n in preds if n != "model"]
    for name, sees, loss, paired in rows:
        e = preds[name.strip("*")]
        mean, lo, hi = _numbers(loss)
        assert mean == pytest.approx(e["mse"], abs=5e-6)
        assert (lo, hi) == pytest.approx((e["ci_low"], e["ci_high"]), abs=5e-6)
        if name.strip("*") == "model":
            assert paired == "" and sees == ""
            continue
        assert sees == e["sees"]
        d, dlo, dhi = _numbers(paired)
        assert (d, dlo, dhi) == pytest.approx((e["paired_diff"], *e["paired_diff_ci"]), abs=5e-6)
        verdict = "model better" if dlo > 0 else ("baseline better" if dhi < 0 else "not significant")
        assert paired.endswith(verdict)
    # the footer names the command that regenerates the table, the eval command and the machine
    assert f"--table default {small_run}" in text
    assert f"selectlens eval --run {small_run} --sequences {ev['sequences']}" in text
    assert "Machine: device cpu; test machine." in text
    # the unnamed region and the text around the regions are left as they were
    assert "<!-- table: other -->\n*Not generated yet.*\n<!-- /table -->" in text
    assert text.startswith("# Page\n\nText before.\n\n") and text.count("Text between.") == 2
    # regenerating is idempotent, and --check agrees
    before = page.read_text()
    assert _run_script(page, "--check", "--table", "default", str(small_run), "--machine", "test machine").returncode == 0
    assert _run_script(page, "--table", "default", str(small_run), "--machine", "test machine").returncode == 0
    assert page.read_text() == before


def test_check_reports_a_stale_table(small_run, tmp_path):
    page = tmp_path / "results.md"
    page.write_text(_page(tmp_path, "default"))
    res = _run_script(page, "--check", "--table", "default", str(small_run))
    assert res.returncode == 1 and "out of date" in res.stderr
    assert "Not generated yet" in page.read_text()  # --check writes nothing


def test_unknown_region_and_missing_source_are_one_line_errors(small_run, tmp_path):
    page = tmp_path / "results.md"
    page.write_text(_page(tmp_path, "default"))
    for args in (["--table", "nope", str(small_run)], ["--table", "default", str(tmp_path / "absent")]):
        res = _run_script(page, *args)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1


def test_eval_rows_reads_the_raw_schema():
    """Raw runs' eval.json (evaluate_predictions, one schema for every family): the all-position summary, model first."""
    import torch

    from selectlens.baselines import suite_for
    from selectlens.config import load_config
    from selectlens.evaluate import evaluate_predictions
    from selectlens.tasks import make_generator, make_task

    cfg = load_config("mixed_noise_cpu")
    task = make_task(cfg)
    batch = task.sample(64, make_generator(0))
    suite = suite_for(task)  # eval fits the suite on training data (the best single-λ ridge) as here
    fitted = suite.predictors(suite.fit(cfg.seed, cfg.eval.temperature_sequences))
    preds = {"model": torch.zeros_like(batch.target), **{n: f(batch) for n, f in fitted.items()}}
    ev = json.loads(json.dumps(evaluate_predictions(task, batch, preds["model"], cfg)))
    rows = _script().eval_rows(ev)
    assert [r["predictor"] for r in rows] == list(preds)
    for r in rows:
        per_seq = ((preds[r["predictor"]].double() - batch.target.double()) ** 2).mean(1)
        assert r["loss"] == pytest.approx(float(per_seq.mean()), rel=1e-9)
        if r["predictor"] != "model":
            model = (batch.target.double() ** 2).mean(1)
            assert r["diff"] == pytest.approx(float((per_seq - model).mean()), rel=1e-9, abs=1e-12)
    with pytest.raises(Exception, match="no 'bce' table"):
        _script().eval_rows(ev, "bce")


def test_bench_table_names_the_command_that_made_each_row(tmp_path):
    res = run_cli("bench", "baselines", "--sequences", "64", "--reference-sequences", "4", "--json")
    assert res.returncode == 0, res.stderr
    src = tmp_path / "baselines.json"
    src.write_text(res.stdout)
    r = json.loads(res.stdout)
    page = tmp_path / "benchmarks.md"
    page.write_text(_page(tmp_path, "cpu"))
    assert _run_script(page, "--table", "cpu", str(src)).returncode == 0
    (cmd, device, ours, ref, ratio), = _rows(page.read_text(), "cpu")
    assert cmd.strip("`") == ("selectlens bench baselines --d 5 --N 20 --noise-levels 0.1,0.5 --sequences 64 "
                              "--reference-sequences 4 --threads 1 --json")
    assert device == "cpu, 1 torch thread"
    assert _numbers(ours)[0] == pytest.approx(r["ours_seq_per_s"], abs=0.5)
    assert _numbers(ref)[0] == pytest.approx(r["reference_seq_per_s"], abs=0.05)
    assert _numbers(ratio)[0] == pytest.approx(r["ratio"], abs=0.005)


def test_docs_pages_mark_every_table_with_a_known_view():
    mod = _script()
    for name in ("results.md", "benchmarks.md"):
        text = (ROOT / "docs" / name).read_text()
        regions = list(mod.REGION.finditer(text))
        assert regions, name
        for m in regions:
            opts = mod._opts(m.group("opts"))
            assert opts.get("view") in mod.VIEWS, (name, m.group("name"))
        outside = mod.REGION.sub("", text)
        assert "| model" not in outside and "seq/s |" not in outside, f"{name}: a results table outside the marked regions"


def _run_script(page, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(SCRIPT), str(page), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def _fake_ablation_run(run, seed: int, model_from: str, *overrides: str, data_seed: int | None = None):
    """A raw run directory as scripts/recipe_ablation.py leaves it, with eval.json made by the real evaluator from
    chosen model predictions: the Bayes mixture's own (a selecting model) or zeros (a model on the plateau)."""
    import torch

    from selectlens.baselines import suite_for
    from selectlens.config import load_config
    from selectlens.evaluate import evaluate_predictions
    from selectlens.tasks import make_generator, make_task

    cfg = load_config("mixed_noise_cpu", ["data.N=8", "data.d_d=3", "training.epochs=2", "data.train_samp_per_class=100",
                                          f"seed={seed}", *overrides])
    task = make_task(cfg)
    batch = task.sample(400, make_generator(seed if data_seed is None else data_seed))
    suite = suite_for(task)
    fitted = suite.predictors(suite.fit(cfg.seed, 400))
    bayes = fitted["bayes_posterior_mixture"](batch)
    model = {"bayes": bayes, "zeros": torch.zeros_like(batch.target)}.get(model_from)
    model = fitted[model_from](batch) if model is None else model
    ev = json.loads(json.dumps(evaluate_predictions(task, batch, model, cfg)))
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps(ev))
    (run / "config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    test_loss = float(((model.double() - batch.target.double()) ** 2).mean())
    bayes_loss = float(((bayes.double() - batch.target.double()) ** 2).mean())
    line = {"epoch": 2, "sequences": 100, "test_loss": test_loss, "baselines": {"bayes_posterior_mixture": bayes_loss}}
    (run / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    return ev, batch, bayes


def test_recipe_table_counts_plateaus_and_selection_per_arm(tmp_path):
    from scipy.stats import t

    src = tmp_path / "ablation"
    runs = [_fake_ablation_run(src / f"arm_s{s}", s, "bayes" if s < 2 else "zeros") for s in range(3)]
    book = {"device": "cpu", "command": "python scripts/recipe_ablation.py --out X --arms arm",
            "runs": [{"arm": "arm", "seed": s, "rc": 0} for s in range(3)]}
    (src / "ablation.json").write_text(json.dumps(book))
    page = tmp_path / "r.md"
    page.write_text(_page(tmp_path, "recipe"))
    res = _run_script(page, "--table", "recipe", str(src))
    assert res.returncode == 0, res.stderr
    [row] = _rows(page.read_text(), "recipe")
    assert row[0] == "arm" and row[1] == "— (the preset)"  # N and d are not recipe ingredients
    assert row[2] == "0.00M (0.00M; 3 of 3 capped, schedule unfinished)"  # 100 of the 2 × 90 sequences asked
    assert row[3] == "2/3"  # the zero predictor is far above 1.25 × Bayes, Bayes' own predictions are not
    # σ = 0.5: the worst excess at n ≥ 2d of each seed (0 for Bayes' predictions), mean and t-interval across seeds
    worst = []
    for ev, batch, bayes in runs:
        g = ev["groups"]["sigma=0.5"]
        worst.append(max(g["excess_risk_ratio"]["mean"][n] for n in range(2 * ev["d"], ev["N"])))
    mean = sum(worst) / 3
    sd = (sum((w - mean) ** 2 for w in worst) / 2) ** 0.5
    half = t.ppf(0.975, 2) * sd / 3 ** 0.5
    assert _numbers(row[4]) == pytest.approx([mean, mean - half, mean + half], abs=6e-4)
    assert worst[0] == 0 and worst[2] > 1
    # a model equal to the Bayes mixture is below the best single-λ ridge wherever that ridge is significantly worse
    shown = [all(ev["groups"]["sigma=0.1"]["selection_shown"][n] for n in range(ev["d"], 2 * ev["d"] + 1)) for ev, *_ in runs]
    assert row[7] == f"{sum(shown)}/3" and not shown[2]
    # σ = 0.1 at n = d and 2d: the excess ratio's mean over seeds (0 for Bayes' own predictions), and the ridge's
    for k, n in enumerate((3, 6)):
        ratios = []
        for seed, (ev, batch, bayes) in enumerate(runs):
            keep = batch.sigma == 0.1
            err = lambda p: float(((p[keep, n].double() - batch.y[keep, n].double()) ** 2).mean())  # noqa: E731
            model = bayes if seed < 2 else 0 * bayes  # as _fake_ablation_run made them
            ratios.append(err(model) / err(bayes) - 1)
        assert _numbers(row[5].split(" / ")[k])[0] == pytest.approx(sum(ratios) / 3, abs=6e-3)
        line = [ev["groups"]["sigma=0.1"]["non_selecting_excess"]["mean"][n] / ev["groups"]["sigma=0.1"]["predictors"][
            "bayes_posterior_mixture"]["mse"]["mean"][n] for ev, *_ in runs]
        assert _numbers(row[6].split(" / ")[k])[0] == pytest.approx(sum(line) / 3, abs=6e-3) and min(line) > 0
    for bad in ("positions=a,b", "positions=99"):
        page.write_text(_page(tmp_path, f"recipe-x view=excess {bad}"))
        res = _run_script(page, "--table", "recipe-x", str(src / "arm_s0"))
        assert res.returncode == 2 and res.stderr.startswith("error: positions=") or "n must be one of" in res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_recipe_table_reads_plain_runs_as_one_row_per_configuration(tmp_path):
    """Runs from `selectlens train` + `eval` (no ablation.json): NAME_s0, NAME_s1, … are one row, the same
    row the ablation book gives for those runs; a run with another configuration is a row of its own."""
    src = tmp_path / "ablation"
    before = ["training.target=observed", "training.position_weights=uniform"]  # what runs of then trained with
    for s in range(3):
        _fake_ablation_run(src / f"arm_s{s}", s, "bayes" if s != 1 else "zeros", *before)
    _fake_ablation_run(tmp_path / "other_s0", 0, "bayes", "training.lr=0.001", *before)
    old = json.loads((src / "arm_s1" / "config.json").read_text())  # written before training.target existed
    del old["training"]["target"]
    (src / "arm_s1" / "config.json").write_text(json.dumps(old))
    (src / "ablation.json").write_text(json.dumps({"device": "cpu", "runs": [{"arm": "arm", "seed": s, "rc": 0} for s in range(3)]}))
    page = tmp_path / "r.md"
    page.write_text(_page(tmp_path, "a view=recipe", "b view=recipe"))
    assert _run_script(page, "--table", "a", str(src)).returncode == 0
    res = _run_script(page, "--table", "b", *[str(src / f"arm_s{s}") for s in (2, 0, 1)], str(tmp_path / "other_s0"))
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    [book_row], plain = _rows(text, "a"), _rows(text, "b")
    assert [r[0] for r in plain] == ["arm", "other"] and plain[0][1:] == book_row[1:] and plain[0][3] == "2/3"
    assert plain[1][1] == "lr=0.001, target=observed, position_weights=uniform" and plain[1][3] == "1/1"
    _fake_ablation_run(tmp_path / "ridge_s0", 0, "ridge[0.5]", *before)  # one seed, not at Bayes
    single = tmp_path / "single.md"
    single.write_text(_page(tmp_path, "c view=recipe"))
    assert _run_script(single, "--table", "c", str(tmp_path / "ridge_s0")).returncode == 0
    [one] = _rows(single.read_text(), "c")
    ev = json.loads((tmp_path / "ridge_s0" / "eval.json").read_text())  # one seed: its own paired CIs, from eval.json
    d, sizes = ev["d"], ev["positions"]

    def cell(group: str, n: int, spec: str) -> str:
        r = ev["groups"][group]["excess_risk_ratio"]
        i = sizes.index(n)
        return f"{r['mean'][i]:{spec}} [{r['ci_low'][i]:{spec}}, {r['ci_high'][i]:{spec}}]"

    half = ev["groups"]["sigma=0.5"]["excess_risk_ratio"]["mean"]
    worst = max((n for n in sizes if n >= 2 * d), key=lambda n: half[sizes.index(n)])
    assert one[4] == cell("sigma=0.5", worst, "+.3f")
    assert one[5] == f"{cell('sigma=0.1', d, '+.2f')} / {cell('sigma=0.1', 2 * d, '+.2f')}"
    assert one[5] != "+0.00 [+0.00, +0.00] / +0.00 [+0.00, +0.00]" and "(n<2)" not in plain[0][4]  # three seeds: t
    assert "selectlens eval --run" in text.split("table: b")[1]
    res = _run_script(page, "--table", "b", str(src / "arm_s0"), str(src / "arm_s0"))  # one seed twice
    assert res.returncode == 2 and "seed 0" in res.stderr and res.stderr.count("\n") == 1


def test_vs_oracle_table_uses_each_groups_metric(tmp_path):
    run = tmp_path / "ll"
    import torch

    from selectlens.baselines import suite_for
    from selectlens.config import load_config
    from selectlens.evaluate import evaluate_predictions
    from selectlens.tasks import make_generator, make_task

    cfg = load_config("linear_or_logistic_cpu", ["data.N=8", "data.d_d=3"])
    task = make_task(cfg)
    batch = task.sample(300, make_generator(4))
    suite = suite_for(task)
    fitted = suite.predictors(suite.fit(cfg.seed, 300))
    model = fitted["ridge[0.5]"](batch)
    run.mkdir()
    (run / "eval.json").write_text(json.dumps(evaluate_predictions(task, batch, model, cfg)))
    page = tmp_path / "r.md"
    page.write_text(_page(tmp_path, "ll view=vs-oracle"))
    res = _run_script(page, "--table", "ll", str(run))
    assert res.returncode == 0, res.stderr
    rows = _rows(page.read_text(), "ll")
    oracle = fitted["type_oracle"](batch)
    for group, metric, n, m, o, ratio in rows:
        n = int(n)
        keep = {"classification": ~batch.is_regression, "regression": batch.is_regression}.get(group)
        keep = batch.is_regression & (batch.sigma == float(group[6:])) if keep is None else keep
        if metric == "sign_error":
            per_seq = lambda p: (torch.sign(p[keep, n]) != batch.y[keep, n]).double().numpy()  # noqa: E731
        else:
            per_seq = lambda p: ((p[keep, n].double() - batch.y[keep, n].double()) ** 2).numpy()  # noqa: E731
        err = lambda p: per_seq(p).mean()  # noqa: E731
        assert (metric == "sign_error") == (group == "classification")
        assert _numbers(m)[0] == pytest.approx(float(err(model)), abs=6e-5)
        assert _numbers(o)[0] == pytest.approx(float(err(oracle)), abs=6e-5)
        a, b = per_seq(model), per_seq(oracle)  # the paired delta-method CI of mean(a)/mean(b) − 1, by numpy
        r = a.mean() / b.mean()
        half = 1.959963984540054 * (a - r * b).std(ddof=1) / (np.sqrt(len(a)) * b.mean())
        assert _numbers(ratio) == pytest.approx([r - 1, r - 1 - half, r - 1 + half], abs=6e-4)
    assert {r[0] for r in rows} == {"sigma=0.1", "sigma=0.5", "regression", "classification"}
    assert {int(r[2]) for r in rows} == {6, 7}


def test_every_ablation_arm_is_a_valid_and_distinct_config():
    """Each arm of scripts/recipe_ablation.py loads as the script composes it (the pinned recipe, the arm's
    overrides, its epochs), and no two arms train the same configuration."""
    from selectlens.config import load_config

    spec = importlib.util.spec_from_file_location("recipe_ablation", ROOT / "scripts" / "recipe_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seen = {}
    for arm, (config, sets, factor) in mod.ARMS.items():
        epochs = round(mod.EARLIER_EPOCHS * factor)
        cfg = load_config(config, [*mod.earlier(config), *sets, f"training.epochs={epochs}"]).model_dump(mode="json")
        assert cfg["data"].get("p_regression", 0.5) == 0.5  # the task as the ablation posed it
        key = json.dumps({k: cfg[k] for k in ("data", "model", "training")}, sort_keys=True)
        assert key not in seen, f"{arm} trains the same configuration as {seen.get(key)}"
        seen[key] = arm
    base = load_config("mixed_noise_cpu", [*mod.EARLIER, "training.epochs=110"]).training
    assert (base.target, base.position_weights, base.epochs) == ("observed", "uniform", 110)


def test_recipe_ablation_script_runs_arms_and_feeds_the_recipe_table(tmp_path):
    """scripts/recipe_ablation.py end to end on a tiny budget: each arm × seed trained and evaluated by the CLI,
    ablation.json records them, and the recipe table reads them back; an unknown arm is a one-line error."""
    import subprocess
    import sys

    script = ROOT / "scripts" / "recipe_ablation.py"
    out = tmp_path / "abl"
    tiny = ["data.train_samp_per_class=200", "eval.sequences=300", "eval.temperature_sequences=200", "model.n_embd=16",
            "model.n_layer=1", "data.N=6", "data.d_d=2"]
    cmd = [sys.executable, str(script), "--out", str(out), "--arms", "base,batch64_interleaved", "--seeds", "0,1",
           "--scale", "0.02", *[a for s in tiny for a in ("--set", s)]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    book = json.loads((out / "ablation.json").read_text())
    assert [(r["arm"], r["seed"], r["rc"]) for r in book["runs"]] == [
        ("base", 0, 0), ("base", 1, 0), ("batch64_interleaved", 0, 0), ("batch64_interleaved", 1, 0)]
    cfg = json.loads((out / "batch64_interleaved_s1" / "config.json").read_text())
    assert (cfg["data"]["layout"], cfg["training"]["batch_size"], cfg["seed"]) == ("interleaved", 64, 1)
    assert json.loads((out / "base_s0" / "config.json").read_text())["training"]["batch_size"] == 512
    page = tmp_path / "r.md"
    earlier = "preset-set=training.target=observed,training.position_weights=uniform"  # the recipe the arms pin
    page.write_text(_page(tmp_path, f"recipe {earlier}", "today view=recipe"))
    res = _run_script(page, "--table", "recipe", str(out), "--table", "today", str(out))
    assert res.returncode == 0, res.stderr
    rows = _rows(page.read_text(), "recipe")
    assert [r[0] for r in rows] == ["base", "batch64_interleaved"]
    assert rows[1][1] == "layout=interleaved, n_embd=16, n_layer=1, batch_size=64, lr=0.001" and rows[0][3].endswith("/2")
    today = _rows(page.read_text(), "today")  # against the preset as it stands, the pinned recipe is a change
    assert today[0][1] == "n_embd=16, n_layer=1, target=observed, position_weights=uniform"
    res = subprocess.run([sys.executable, str(script), "--out", str(out), "--arms", "nope"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: unknown arm(s) nope") and res.stderr.count("\n") == 1
    # a second call into the same --out is refused and touches nothing; --skip-done trains only what is missing
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "already holds base_s0" in res.stderr
    again = [*cmd[:cmd.index("--arms")], "--arms", "base", "--seeds", "0,2", *cmd[cmd.index("--scale"):], "--skip-done"]
    res = subprocess.run(again, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items() if p.name != "ablation.json")
    book = json.loads((out / "ablation.json").read_text())
    assert sorted((r["arm"], r["seed"]) for r in book["runs"]) == [
        ("base", 0), ("base", 1), ("base", 2), ("batch64_interleaved", 0), ("batch64_interleaved", 1)]
    assert (out / "base_s2" / "eval.json").exists() and json.loads((out / "base_s2" / "config.json").read_text())["seed"] == 2
    assert book["command"].count("scripts/recipe_ablation.py") == 2  # both calls, the first one's arms credited to it
    # a run whose training finished but whose eval was stopped is evaluated again, not trained again
    (out / "base_s2" / "eval.json").unlink()
    model = (out / "base_s2" / "model.safetensors").stat().st_mtime_ns
    res = subprocess.run(again, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert (out / "base_s2" / "eval.json").exists() and (out / "base_s2" / "model.safetensors").stat().st_mtime_ns == model
    entry = [r for r in json.loads((out / "ablation.json").read_text())["runs"] if (r["arm"], r["seed"]) == ("base", 2)]
    assert len(entry) == 1 and entry[0]["rc"] == 0 and entry[0]["train_s"] is None
    # one stopped before its last epoch (its model is checkpointed on the way) is trained again
    metrics = out / "base_s2" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines()[0] + "\n")
    (out / "base_s2" / "eval.json").unlink()
    res = subprocess.run(again, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert (out / "base_s2" / "model.safetensors").stat().st_mtime_ns != model
    assert len(metrics.read_text().splitlines()) == json.loads((out / "base_s2" / "config.json").read_text())["training"]["epochs"]
    # a kept run trained at another --scale is not silently mixed with this call's budget
    res = subprocess.run([*again[:again.index("--scale")], "--scale", "0.5", *again[again.index("--scale") + 2:]],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "epochs" in res.stderr


def test_mixture_vs_single_table_pairs_seeds_per_sigma(tmp_path):
    """The three-model table: per σ and n, the mixture runs' model MSE over the single-σ runs', per seed pair."""
    from scipy.stats import t

    mix = [_fake_ablation_run(tmp_path / f"mix_s{s}", s, "ridge[0.1]")[0] for s in range(2)]
    low = [_fake_ablation_run(tmp_path / f"low_s{s}", s, "bayes", "data.noise_levels=[0.1]", data_seed=10 + s)[0]
           for s in range(2)]
    page = tmp_path / "r.md"
    page.write_text(_page(tmp_path, "tm view=mixture-vs-single"))
    runs = [tmp_path / f"{k}_s{s}" for k in ("mix", "low") for s in (1, 0)]  # pairs by the runs' seeds, not their order
    res = _run_script(page, "--table", "tm", *map(str, runs))
    assert res.returncode == 0, res.stderr
    rows = _rows(page.read_text(), "tm")
    assert [(r[0], int(r[1])) for r in rows] == [("0.1", 6), ("0.1", 7)]  # only σ = 0.1 has a single-σ model; n ≥ 2d
    for r in rows:
        i = mix[0]["positions"].index(int(r[1]))
        a = [e["groups"]["sigma=0.1"]["predictors"]["model"]["mse"]["mean"][i] for e in mix]
        b = [e["groups"]["sigma=0.1"]["predictors"]["model"]["mse"]["mean"][i] for e in low]
        ratios = [x / y - 1 for x, y in zip(a, b)]
        mean, half = sum(ratios) / 2, t.ppf(0.975, 1) * abs(ratios[0] - ratios[1]) / 2
        assert _numbers(r[2])[0] == pytest.approx(sum(a) / 2, abs=6e-5) and _numbers(r[3])[0] == pytest.approx(sum(b) / 2, abs=6e-5)
        assert _numbers(r[5]) == pytest.approx([mean, mean - half, mean + half], abs=6e-4) and r[6] == "0,1"
    res = _run_script(page, "--table", "tm", *map(str, runs[:2]))
    assert res.returncode == 2 and "needs runs trained on the σ mixture and runs trained on one σ" in res.stderr
    # one seed: the ratio's delta-method CI from each model's own CI (independent held-out sets)
    res = _run_script(page, "--table", "tm", str(runs[1]), str(runs[3]))
    assert res.returncode == 0, res.stderr
    assert "one seed: delta-method CI over sequences" in page.read_text()
    for r in _rows(page.read_text(), "tm"):
        i = mix[0]["positions"].index(int(r[1]))
        (a, a_lo, a_hi), (b, b_lo, b_hi) = ([e["groups"]["sigma=0.1"]["predictors"]["model"]["mse"][k][i]
                                             for k in ("mean", "ci_low", "ci_high")] for e in (mix[0], low[0]))
        rel_se = np.sqrt(((a_hi - a_lo) / 3.919928 / a) ** 2 + ((b_hi - b_lo) / 3.919928 / b) ** 2)
        half = 1.959964 * (a / b) * rel_se
        assert _numbers(r[5]) == pytest.approx([a / b - 1, a / b - 1 - half, a / b - 1 + half], abs=6e-4)
        assert r[6] == "0" and half > 0


def test_paired_table_differences_each_arm_from_the_reference_seed_by_seed(tmp_path):
    """view paired: per arm, the per-seed difference from the reference run of the same seed, recomputed here from
    the predictions the fake runs were scored on, with the t-interval across seeds; times from timing.jsonl, and
    the per-epoch excess at the faster run's training time."""
    from scipy.stats import t

    from selectlens.baselines import suite_for
    from selectlens.config import load_config
    from selectlens.tasks import make_task

    def sq(p, y, keep=None, n=None):  # mean squared error, over the sequences kept and one position or all
        e = (p - y).double() ** 2
        e = e[keep] if keep is not None else e
        return float((e[..., n] if n is not None else e).mean())

    def interval(xs):
        m, sd = sum(xs) / len(xs), (sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
        half = t.ppf(0.975, len(xs) - 1) * sd / len(xs) ** 0.5
        return [m, m - half, m + half]

    want = {k: [] for k in ("all", "d", "2d", "half", "arm_epoch")}
    for s in range(3):
        _, batch, bayes = _fake_ablation_run(tmp_path / f"ref_s{s}", s, "ridge[0.5]")
        _fake_ablation_run(tmp_path / f"arm_s{s}", s, "ridge[0.1]")  # the same seed: the same held-out sequences
        cfg = load_config("mixed_noise_cpu", ["data.N=8", "data.d_d=3", "training.epochs=2", "data.train_samp_per_class=100", f"seed={s}"])
        suite = suite_for(make_task(cfg))
        fitted = suite.predictors(suite.fit(s, 400))
        ref_p, arm_p, y = fitted["ridge[0.5]"](batch), fitted["ridge[0.1]"](batch), batch.y
        want["all"].append(sq(arm_p, y) / sq(bayes, y) - sq(ref_p, y) / sq(bayes, y))
        low = batch.sigma == 0.1
        for key, n in (("d", 3), ("2d", 6)):
            want[key].append((sq(arm_p, y, low, n) - sq(ref_p, y, low, n)) / sq(bayes, y, low, n))
        high = batch.sigma == 0.5
        worst = lambda p: max(sq(p, y, high, n) / sq(bayes, y, high, n) - 1 for n in range(6, 8))  # noqa: E731
        want["half"].append(worst(arm_p) - worst(ref_p))
        want["arm_epoch"].append(sq(arm_p, batch.target) / sq(bayes, batch.target) - 1)  # its metrics.jsonl line
        for name, secs in (("ref", 100.0 + s), ("arm", 50.0)):
            (tmp_path / f"{name}_s{s}" / "timing.jsonl").write_text(json.dumps({"epoch": 2, "elapsed_s": secs}) + "\n")
        # the reference's first epoch, done by 40 s (before the arm's 50 s), at an excess of 0.1 + 0.1 s
        ref = tmp_path / f"ref_s{s}"
        first = {"epoch": 1, "sequences": 50, "test_loss": 1.6 * (1.1 + 0.1 * s), "baselines": {"bayes_posterior_mixture": 1.6}}
        (ref / "metrics.jsonl").write_text(json.dumps(first) + "\n" + (ref / "metrics.jsonl").read_text())
        (ref / "timing.jsonl").write_text(json.dumps({"epoch": 1, "elapsed_s": 40.0}) + "\n" + (ref / "timing.jsonl").read_text())
    assert len(set(round(x, 6) for x in want["all"])) == 3  # the arm's differences depend on the seed
    page = tmp_path / "r.md"
    page.write_text(_page(tmp_path, "p view=paired reference=ref", "q view=paired reference=arm"))
    runs = [str(tmp_path / f"arm_s{s}") for s in (2, 0, 1)] + [str(tmp_path / f"ref_s{s}") for s in (1, 2, 0)]
    res = _run_script(page, "--table", "p", *runs, "--table", "q", *runs)  # pairs by seed, not by order
    assert res.returncode == 0, res.stderr
    [row], [back] = _rows(page.read_text(), "p"), _rows(page.read_text(), "q")
    assert row[:2] == ["arm", "0,1,2"] and back[:2] == ["ref", "0,1,2"]
    assert _numbers(row[2]) == pytest.approx(interval(want["all"]), abs=6e-4)
    assert _numbers(row[3]) == pytest.approx(want["all"], abs=6e-4)
    for cell, key, tol in ((4, "d", 6e-3), (5, "2d", 6e-3), (6, "half", 6e-4)):
        assert _numbers(row[cell]) == pytest.approx(interval(want[key]), abs=tol), key
    assert row[7] == "50 / 101"
    # at equal time (50 s, the arm's): the arm's last epoch against the reference's first; and the other way round
    same = [a - (0.1 + 0.1 * s) for s, a in enumerate(want["arm_epoch"])]
    assert _numbers(row[8]) == pytest.approx(interval(same) + same, abs=6e-4)
    assert _numbers(back[8]) == pytest.approx(interval([-x for x in same]) + [-x for x in same], abs=6e-4)
    (tmp_path / "ref_s0" / "timing.jsonl").write_text(json.dumps({"epoch": 2, "elapsed_s": 100.0}) + "\n")
    assert _run_script(page, "--table", "p", *runs).returncode == 0  # the reference had no epoch by 50 s
    assert _rows(page.read_text(), "p")[0][8] == "—"
    for bad in ('{"epoch": 2, "elap', ""):  # a cut line, a blank line: one error line naming the file
        (tmp_path / "ref_s0" / "timing.jsonl").write_text('{"epoch": 1, "elapsed_s": 40.0}\n' + bad + "\n")
        res = _run_script(page, "--table", "p", *runs)
        assert res.returncode == 2 and "ref_s0/timing.jsonl: line 2" in res.stderr and res.stderr.count("\n") == 1
    (tmp_path / "ref_s0" / "timing.jsonl").write_text(json.dumps({"epoch": 2, "elapsed_s": 100.0}) + "\n")
    res = _run_script(page, "--table", "p", *runs[:3])  # no reference run
    assert res.returncode == 2 and "reference=ARM" in res.stderr and res.stderr.count("\n") == 1
    res = _run_script(page, "--table", "p", runs[0], *runs[3:])  # the arm has one seed: no interval
    assert res.returncode == 2 and "shares 1 seed(s)" in res.stderr


KEEP = ROOT / "scripts" / "keep_run.py"


def _keep(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(KEEP), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_a_kept_record_rebuilds_its_config_and_makes_the_same_table(small_run, tmp_path):
    """scripts/keep_run.py: the record holds the run's files byte for byte; its command's flags load back to the
    run's config; a table made from the record equals the run's and names that command."""
    import shlex

    from selectlens.config import load_config

    res = _keep(small_run, "--to", tmp_path / "records")
    assert res.returncode == 0, res.stderr
    record = tmp_path / "records" / small_run.name
    for name in ("config.json", "eval.json", "metrics.jsonl", "timing.jsonl"):
        assert (record / name).read_bytes() == (small_run / name).read_bytes()
    assert not (record / "model.safetensors").exists()
    meta = json.loads((record / "record.json").read_text())
    command = meta["command"]
    assert f"{os.cpu_count()}-core" in meta["machine"] and torch.__version__ in meta["machine"]
    train = shlex.split(command.split(" && ")[0])
    assert train[:4] == ["selectlens", "train", "--config", "default"]
    sets = [train[i + 1] for i, a in enumerate(train) if a == "--set"]
    seed = train[train.index("--seed") + 1]
    rebuilt = load_config("default", sets + [f"seed={seed}"]).model_dump(mode="json")
    stored = json.loads((small_run / "config.json").read_text())
    for section in ("data", "model", "training", "eval"):
        assert rebuilt[section] == stored[section]
    assert int(seed) == stored["seed"] and len(sets) >= len(TINY_RUN) - 1  # epochs etc. differ from the preset
    tables = []
    for src in (small_run, record):
        page = tmp_path / f"{src.parent.name}.md"
        page.write_text(_page(tmp_path, "default view=eval"))
        res = _run_script(page, "--table", "default", str(src), "--machine", "m")
        assert res.returncode == 0, res.stderr
        tables.append(_rows(page.read_text(), "default"))
    assert tables[0] == tables[1]
    assert command in page.read_text()


def test_keep_run_refuses_without_eval_and_never_overwrites(small_run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((small_run / "config.json").read_bytes())
    res = _keep(bare, "--to", tmp_path / "records")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "eval.json" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "records" / "bare").exists()
    assert _keep(small_run, "--to", tmp_path / "records").returncode == 0
    kept = tmp_path / "records" / small_run.name / "eval.json"
    kept.write_text("{}")
    res = _keep(small_run, "--to", tmp_path / "records")
    assert res.returncode == 2 and "exists" in res.stderr and kept.read_text() == "{}"
    assert _keep(small_run, "--to", tmp_path / "records", "--force").returncode == 0
    assert kept.read_bytes() == (small_run / "eval.json").read_bytes()


def test_keep_run_checks_every_run_before_writing_any(small_run, tmp_path):
    """A run stopped before its last epoch is refused (its command would train them all), and with it every run
    of the same call; a --force record loses the files its new run lacks; record.json names the commit."""
    import shutil
    import subprocess

    whole, capped = tmp_path / "whole", tmp_path / "capped"
    shutil.copytree(small_run, whole)
    shutil.copytree(small_run, capped)
    lines = (capped / "metrics.jsonl").read_text().splitlines()
    (capped / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    res = _keep(whole, capped, "--to", tmp_path / "records")
    assert res.returncode == 2 and "stopped early" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "records").exists()  # the good run was not kept either
    assert _keep(whole, "--to", tmp_path / "records").returncode == 0
    (whole / "timing.jsonl").unlink()
    assert _keep(whole, "--to", tmp_path / "records", "--force").returncode == 0
    record = tmp_path / "records" / "whole"
    assert not (record / "timing.jsonl").exists() and (record / "eval.json").is_file()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert json.loads((record / "record.json").read_text())["code"].split("+")[0] == head


def test_keep_run_names_the_process_count_a_run_trained_on(small_run, tmp_path):
    """A run trained with --nproc logs its process count per epoch; its record's command says --nproc; a
    run with no count (kept before it was logged) is one process; a count that is not a positive integer
    is one error line."""
    import shlex
    import shutil

    from selectlens.config import load_config

    assert {json.loads(t)["processes"] for t in (small_run / "timing.jsonl").read_text().splitlines()} == {1}
    ddp, old, bad = tmp_path / "ddp", tmp_path / "old", tmp_path / "bad"
    for run, fill in ((ddp, 2), (old, None), (bad, "two")):
        shutil.copytree(small_run, run)
        rows = [json.loads(t) for t in (run / "timing.jsonl").read_text().splitlines()]
        for r in rows:
            r.pop("processes")
            if fill is not None:
                r["processes"] = fill
        (run / "timing.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _keep(ddp, old, "--to", tmp_path / "records").returncode == 0
    commands = {r: json.loads((tmp_path / "records" / r / "record.json").read_text())["command"] for r in ("ddp", "old")}
    train = shlex.split(commands["ddp"].split(" && ")[0])
    assert train[train.index("--nproc") + 1] == "2" and "--nproc" not in commands["old"]
    sets = [train[i + 1] for i, a in enumerate(train) if a == "--set"]
    rebuilt = load_config("default", sets + [f"seed={train[train.index('--seed') + 1]}"]).model_dump(mode="json")
    assert rebuilt["training"] == json.loads((small_run / "config.json").read_text())["training"]
    res = _keep(bad, "--to", tmp_path / "records")
    assert res.returncode == 2 and "processes" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "records" / "bad").exists()


@pytest.mark.parametrize("record", sorted(p.name for p in (ROOT / "records").iterdir()
                                           if (p / "record.json").is_file() and not (p / "sweep.json").is_file()))
def test_a_committed_record_command_rebuilds_its_config(record):
    """Each kept record's train command, loaded as `selectlens train` would, gives the record's config.json
    (every key that shapes a run), so the command under a docs table still makes the run it shows."""
    import shlex

    from selectlens.config import load_config

    meta = json.loads((ROOT / "records" / record / "record.json").read_text())
    train = shlex.split(meta["command"].split(" && ")[0])
    assert train[:4] == ["selectlens", "train", "--config", meta["preset"]]
    sets = [train[i + 1] for i, a in enumerate(train) if a == "--set"]
    flags = [f"{k}={train[train.index('--' + k) + 1]}" for k in ("seed", "device") if "--" + k in train]
    config = load_config(meta["preset"], sets + flags)
    rebuilt = config.model_dump(mode="json")
    stored = json.loads((ROOT / "records" / record / "config.json").read_text())
    for section in ("data", "model", "training", "eval"):
        # a key added after the record was made is not in its config.json: the run had its default's behaviour
        fields = type(getattr(config, section)).model_fields
        newer = {k: v for k, v in rebuilt[section].items() if k not in stored[section]}
        assert newer == {k: fields[k].default for k in newer}, section
        assert {k: v for k, v in rebuilt[section].items() if k in stored[section]} == stored[section], section
    assert rebuilt["seed"] == stored["seed"]


@pytest.mark.parametrize("record", sorted(p.name for p in (ROOT / "records").iterdir() if (p / "sweep.json").is_file()))
def test_a_committed_sweep_record_command_rebuilds_its_trials(record):
    """A kept sweep's command names a shipped spec that gives exactly the trials (names and configs) it holds."""
    import shlex

    from selectlens.sweeps import load_spec

    meta = json.loads((ROOT / "records" / record / "record.json").read_text())
    command = shlex.split(meta["command"])
    assert command[:2] == ["selectlens", "sweep"] and shlex.split(meta["resume"])[:2] == ["selectlens", "sweep"]
    rebuilt = load_spec(ROOT / command[2]).trials()
    saved = json.loads((ROOT / "records" / record / "sweep.json").read_text())["trials"]
    assert [(t.name, t.config.to_dict()) for t in rebuilt] == [(t["name"], t["config"]) for t in saved]


def test_a_train_bench_row_names_the_loss_it_measured():
    """bench train records the target and the position weights; the command a table prints rebuilds them
    (only where they differ from the preset) and the row says which loss it timed."""
    mod = _script()
    result = {"config": "mixed_noise_cpu", "device": "cpu", "compile": False, "fused_adam": False,
              "sequences_per_epoch": 20000, "batch_size": 512, "layout": "per_example", "n_embd": 128, "n_layer": 4,
              "reference_sequences": 0, "flops_per_sequence": 1.0, "target": "observed", "position_weights": "uniform"}
    cmd = mod.bench_command(result)
    assert "training.target=observed" in cmd and "training.position_weights=uniform" in cmd
    from selectlens.config import load_config

    preset = load_config("mixed_noise_cpu").training
    same = mod.bench_command(result | {"target": preset.target, "position_weights": preset.position_weights})
    assert "training.target" not in same and "training.position_weights" not in same


def _kept_regions():
    """(page, the footer's regenerate arguments) for every docs table made from committed sources only."""
    import shlex

    out = []
    for page in sorted((ROOT / "docs").glob("*.md")):
        for cmd in re.findall(r"Regenerate: `(python scripts/results_tables\.py [^`]*)`", page.read_text()):
            args = shlex.split(cmd)[2:]
            sources = args[3 : args.index("--machine") if "--machine" in args else len(args)]
            if sources and all(s.startswith("records/") for s in sources):
                out.append(args)
    return out


def test_every_table_made_from_records_is_what_its_records_give():
    """A table whose sources are committed records regenerates to itself on this clone (no hand edits, no
    record changed under it)."""
    regions = _kept_regions()
    assert any(a[0] == "docs/benchmarks.md" for a in regions)  # the preset's benchmark is made from records
    for args in regions:
        res = _run_script(args[0], *args[1:], "--check")
        assert res.returncode == 0, (args[:3], res.stderr)
