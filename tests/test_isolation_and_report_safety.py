import os
import subprocess
import sys

from selectlens.config import load_config
from selectlens.interpret.report import interpret_run
from selectlens.train import train

TINY = ["data.train_samp_per_class=300", "training.epochs=2", "training.batch_size=50", "eval.temperature_sequences=100",
        "eval.sequences=500", "model.n_embd=16", "model.n_layer=2"]


def test_concurrent_runs_do_not_interfere(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    args = [a for o in TINY for a in ("--set", o)]
    procs = [subprocess.Popen([sys.executable, "-m", "selectlens.cli", "train", "--out", str(tmp_path / name), "--quiet", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    train(load_config("default", TINY), tmp_path / "sequential", progress=False)
    ref = (tmp_path / "sequential" / "metrics.jsonl").read_text()
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == ref == (tmp_path / "b" / "metrics.jsonl").read_text()
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert set(a) == set(b) and all(a[k].equal(b[k]) for k in a)


PAYLOADS = [
    "<script>window.__pwned = (window.__pwned || 0) + 1</script>",
    '<img src=x onerror="window.__pwned = (window.__pwned || 0) + 1">',
    '"><svg onload="window.__pwned=1">',
    "</script><script>window.__pwned=1</script>",
]


def test_report_escapes_user_strings(tmp_path, browser):
    name, notes = PAYLOADS[0] + PAYLOADS[1], PAYLOADS[2] + PAYLOADS[3]
    cfg = load_config("default", TINY + ["wandb.project=null"])
    cfg = cfg.model_copy(update={"wandb": cfg.wandb.model_copy(update={"name": name, "notes": notes}),
                                 "out_dir": "runs/" + PAYLOADS[1]})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    paths = interpret_run(run, sequences=64)
    html_text = paths["html"].read_text()
    for p in PAYLOADS:
        assert p not in html_text
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(paths["html"].as_uri())
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert not dialogs
    # the payloads are shown as text
    assert page.locator("#run-name").inner_text() == name
    assert page.locator("#run-notes").inner_text() == notes
    assert page.locator("script").count() == 2  # the report's own two
    page.close()
