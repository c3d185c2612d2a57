"""The report's opening findings, generated from the numbers (no hand-written claims).

Each finding is ``(text, anchor)``: one sentence and the id of the report panel it comes from. The
wording follows the confidence intervals: a difference whose CI includes 0 is called "not
significant", never a win.
"""

from __future__ import annotations

from typing import Any


def _ci(v) -> str:
    return f"[{v[0]:.3g}, {v[1]:.3g}]"


def _versus(name: str, e: dict[str, Any], metric: str) -> str:
    lo, hi = e["paired_diff_ci"]
    if lo > 0:
        verdict = "the model is better"
    elif hi < 0:
        verdict = f"{name} is better"
    else:
        verdict = "not significant"
    return (f"model vs {name} ({metric}): {name} − model = {e['paired_diff']:+.4g}, paired 95% CI "
            f"[{lo:+.4g}, {hi:+.4g}] — {verdict}")


def eval_findings(ev: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the model stands: against the best honest baseline (chosen on training data) and, where
    there is one, as a share of the gap to the information bound."""
    out = []
    for t in ev["tables"].values():
        best, preds = t["best_honest"], t["predictors"]
        text = _versus(best, preds[best], t["metric_name"]) + f" (best honest baseline on training data: {best})"
        if "context_validation_select" != best:
            text += "; " + _versus("context_validation_select", preds["context_validation_select"], t["metric_name"])
        out.append((text + ".", "eval"))
        g = t.get("gap_closed")
        if g:
            sig = "" if g["significant"] else " — not significantly different from 0"
            if g["significant"] and g["ci"][1] < 0:
                sig = " — negative: the model is worse than that baseline"
            out.append((f"Gap closed between the best honest baseline ({best}) and the full-information bound: "
                        f"{g['value']:.3f} {_ci(g['ci'])} (paired bootstrap){sig}. The bound sees x and is not a "
                        f"competitor; 1 would mean the model reaches it.", "eval"))
        else:
            out.append(("No closed-form information bound exists for this task, so no gap closed is reported.", "eval"))
    return out


def _pct(v) -> str:
    return f"{100 * v[0]:.1f}% [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def hull_finding(rule: dict[str, Any]) -> str:
    """How often and how far the prediction leaves the candidates' hull, among the sequences where the
    effective weight is defined (the candidates differ by more than the threshold); the share over all
    sequences follows as a labelled secondary number (there "outside" an interval of width ~0 is nearly free)."""
    share, dist, rel = rule["outside_share"], rule["outside_distance"], rule["outside_relative"]
    text = (f"Among the {100 * rule['defined_share']:.1f}% of sequences where the candidates differ by more than "
            f"{rule['threshold']:g} (where the effective weight is defined), the model's prediction lies outside the "
            f"candidates' hull in {_pct(share)} of them")
    text += (f", by {dist[0]:.3g} {_ci(dist[1:])} on average when outside ({rel[0]:.2f}× the candidates' spread)"
             if share[0] > 0 else "")
    every = rule.get("outside_share_all")
    if every:
        text += (f". Secondary, over all sequences (including those where the candidates nearly agree, where almost "
                 f"any prediction is outside): {_pct(every)}")
    return text + "."


def rule_findings(rule: dict[str, Any]) -> list[tuple[str, str]]:
    hull = hull_finding(rule)
    a = rule["agreement"]
    first, second, m = rule["closest_honest"], rule["runner_up"], rule["closest_margin"]
    agree = (f"Of the honest rules it agrees most with {first} (mean squared distance between predictions "
             f"{a[first]['all'][0]:.3g} {_ci(a[first]['all'][1:])})")
    if second:
        sig = "significantly" if m[1] > 0 else "not significantly"
        agree += f", {sig} closer than to {second} ({a[second]['all'][0]:.3g}; paired difference CI {_ci(m[1:])})"
    if rule["closest_any"] != first:
        agree += f"; of all predictors (including latent and bound) it is closest to {rule['closest_any']}"
    return [(hull, "selection-rule"), (agree + ".", "agreement")]


def ablation_findings(ablation: dict[str, Any], top: int = 2) -> list[tuple[str, str]]:
    import numpy as np

    loss = np.asarray(ablation["mean_loss"])
    H = loss.shape[1]
    order = np.argsort(-loss, axis=None)[:top]
    parts = [f"L{i // H}H{i % H} ({loss.flat[i]:+.4g})" for i in order]
    return [("Mean-ablating these heads raises the loss most: " + ", ".join(parts) + ".", "ablation")]


def attention_findings(heads: list[dict[str, Any]]) -> list[tuple[str, str]]:
    if not heads:
        return []
    verdicts: dict[str, list[str]] = {}
    for h in heads:
        verdicts.setdefault(h["carried_by"].split(":")[0], []).append(f"L{h['layer']}H{h['head']}")
    parts = [f"{v} in {len(hs)}/{len(heads)} heads ({', '.join(hs)})" for v, hs in verdicts.items()]
    content_sig = sum(h["scores"]["content"]["above_null"] for h in heads)
    text = ("The attention clusters (held-out sequences, beside majority-class and permutation nulls) are carried by "
            + "; ".join(parts) + f". Content alone is above its null in {content_sig}/{len(heads)} heads.")
    tested = [h["test_sequences"] for h in heads if "test_sequences" in h]
    if tested:
        text += (f" Each accuracy is over {min(tested)}" + (f"–{max(tested)}" if max(tested) != min(tested) else "")
                 + " held-out sequences, with a Wilson 95% interval over sequences.")
    majority_only = [f"L{h['layer']}H{h['head']}" for h in heads if h["scores"]["content"].get("all_majority")]
    if majority_only:
        text += (f" In {len(majority_only)}/{len(heads)} heads ({', '.join(majority_only)}) the content classifier "
                 "predicts the majority class for every row.")
    return [(text, "clusters")]


def findings(ev: dict[str, Any], numbers: dict[str, Any]) -> list[tuple[str, str]]:
    """Every finding, in the report's order."""
    out = eval_findings(ev)
    if "selection_rule" in numbers:
        out += rule_findings(numbers["selection_rule"])
    if "ablation" in numbers:
        out += ablation_findings(numbers["ablation"])
    out += attention_findings(numbers.get("attention_heads", []))
    return out
