"""The report's findings are generated from the numbers and never overstate them."""

from selectlens.interpret.findings import attention_findings, eval_findings, rule_findings


def _table(diff_ci, gap_ci, significant):
    e = {"paired_diff": sum(diff_ci) / 2, "paired_diff_ci": list(diff_ci)}
    return {"metric_name": "squared error", "best_honest": "context_stacking",
            "predictors": {"model": {}, "context_stacking": e, "context_validation_select": e},
            "gap_closed": {"best_honest": "context_stacking", "bound": "bayes_full_information",
                           "value": sum(gap_ci) / 2, "ci": list(gap_ci), "significant": significant}}


def test_eval_findings_follow_the_confidence_intervals():
    text = " ".join(t for t, _ in eval_findings({"tables": {"mse": _table((-0.001, 0.004), (-0.1, 0.5), False)}}))
    assert "not significant" in text and "not significantly different from 0" in text and "model is better" not in text
    text = " ".join(t for t, _ in eval_findings({"tables": {"mse": _table((0.002, 0.004), (0.1, 0.3), True)}}))
    assert "the model is better" in text and "0.200 [0.1, 0.3]" in text and "not significant" not in text
    text = " ".join(t for t, _ in eval_findings({"tables": {"mse": _table((-0.004, -0.002), (-0.6, -0.2), True)}}))
    assert "context_stacking is better" in text and "worse than that baseline" in text
    no_bound = _table((0.002, 0.004), (0, 0), True) | {"gap_closed": None}
    assert any("No closed-form information bound" in t for t, _ in eval_findings({"tables": {"mse": no_bound}}))


def test_rule_and_attention_findings():
    agreement = {"context_stacking": {"all": [0.01, 0.009, 0.011]}, "context_validation_select": {"all": [0.02, 0.018, 0.022]}}
    rule = {"outside_share": [0.25, 0.2, 0.3], "outside_distance": [0.05, 0.04, 0.06], "outside_relative": [0.5, 0.4, 0.6],
            "defined_share": 0.587, "threshold": 0.05, "outside_share_all": [0.71, 0.7, 0.72],
            "agreement": agreement, "closest_honest": "context_stacking", "runner_up": "context_validation_select",
            "closest_margin": [0.01, -0.001, 0.02], "closest_any": "context_stacking"}
    (hull, a1), (agree, a2) = rule_findings(rule)
    assert a1 == "selection-rule" and a2 == "agreement"
    # the headline share is among the sequences where the weight is defined, and says so
    assert hull.startswith("Among the 58.7% of sequences where the candidates differ by more than 0.05")
    assert "outside the candidates' hull in 25.0% [20.0, 30.0] of them" in hull and "0.50× the candidates' spread" in hull
    # the all-sequence share comes after it, labelled as secondary
    assert hull.index("25.0%") < hull.index("Secondary, over all sequences") < hull.index("71.0% [70.0, 72.0]")
    assert "not significantly closer than to context_validation_select" in agree
    heads = [{"layer": 0, "head": h, "carried_by": "position: content alone is not above the null",
              "scores": {"content": {"above_null": False}}} for h in range(2)]
    (text, anchor), = attention_findings(heads)
    assert "position in 2/2 heads" in text and "Content alone is above its null in 0/2 heads" in text and anchor == "clusters"
    heads[0]["scores"]["content"]["all_majority"] = True
    for h in heads:
        h["test_sequences"] = 288
    (text, _), = attention_findings(heads)
    assert "Each accuracy is over 288 held-out sequences, with a Wilson 95% interval over sequences." in text
    assert "In 1/2 heads (L0H0) the content classifier predicts the majority class for every row." in text
