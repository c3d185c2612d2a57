"""Shared pieces of every HTML report page (the run report and the sweep report): figures as
embedded PNGs, numbers as JSON that no value can break out of, the page frame and its style.

Every user-provided string (run name, notes, config values) is HTML-escaped; numbers go into the
page as JSON inside a ``<script type="application/json">`` block with ``<``, ``>`` and ``&``
escaped, so no value can close the tag. Pages need no network access and work from ``file://``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from selectlens.fileio import atomic_write

STYLE = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.8em; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left; } tr.ref td { background: #f3f3f8; }
img { max-width: 100%; } section { margin-bottom: 2em; }"""

CSP = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
       "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">")


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def jsonable(obj: Any) -> Any:
    """Dataclasses, numpy arrays and scalars as plain JSON values (non-finite floats as null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(vars(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


def write_figures_and_numbers(out: Path, pngs: dict[str, bytes], numbers: dict[str, Any]) -> dict[str, Path]:
    """Write each figure as ``out/NAME.png`` and the numbers as ``out/interpret.json`` (atomically); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, data in pngs.items():
        paths[name] = out / f"{name}.png"
        atomic_write(paths[name], data)
    paths["json"] = out / "interpret.json"
    atomic_write(paths["json"], json.dumps(jsonable(numbers)).encode())
    return paths


def img(pngs: dict[str, bytes], name: str, alt: str) -> str:
    if name not in pngs:
        return f"<p class='missing'>{html.escape(alt)}: not available</p>"
    data = base64.b64encode(pngs[name]).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def script_json(obj: Any) -> str:
    text = json.dumps(jsonable(obj))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def config_table(cfg) -> str:
    """The resolved config as an HTML table, every value escaped."""
    esc = html.escape
    return "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(json.dumps(v))}</code></td></tr>" for k, v in cfg.to_dict().items())


def page(title: str, body: str, *, style: str = STYLE) -> str:
    """A self-contained HTML page: the strict content-security policy, the style, ``body``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{CSP}
<title>{html.escape(title)}</title><style>{style}</style></head><body>
{body}
</body></html>
"""
