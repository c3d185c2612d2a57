import html
import json
import os
import re
import subprocess
import sys

import pytest

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


@pytest.fixture(scope="module")
def payload_report(tmp_path_factory):
    """A tiny run whose name, notes and output directory are script-injection payloads, and its report."""
    name, notes = PAYLOADS[0] + PAYLOADS[1], PAYLOADS[2] + PAYLOADS[3]
    cfg = load_config("default", TINY + ["wandb.project=null"])
    cfg = cfg.model_copy(update={"wandb": cfg.wandb.model_copy(update={"name": name, "notes": notes}),
                                 "out_dir": "runs/" + PAYLOADS[1]})
    run = tmp_path_factory.mktemp("payload") / "run"
    train(cfg, run, progress=False)
    paths = interpret_run(run, sequences=64)
    return name, notes, paths


def test_report_html_text_escapes_user_strings_without_a_browser(payload_report):
    name, notes, paths = payload_report
    text = paths["html"].read_text()
    for p in PAYLOADS:
        assert p not in text
    assert html.escape(name) in text and html.escape(notes) in text
    # only the report's own two <script> elements, and no value closes them early
    assert text.count("<script") == 2 and text.count("</script>") == 2
    data = text.split('<script type="application/json" id="attn-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data
    json.loads(data)
    # the findings section opens the page and every finding links to a panel that exists
    findings = [m.start() for m in re.finditer(r"""id=["']findings["']""", text)]
    assert len(findings) == 1 and findings[0] < text.index('id="training"')
    for anchor in re.findall(r"<a href='#([\w-]+)'>", text):
        assert re.search(rf"""id=["']{anchor}["']""", text), anchor


def test_report_escapes_user_strings(payload_report, browser):
    name, notes, paths = payload_report
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
