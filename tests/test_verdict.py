"""The verdict rule: a claim holds, does not hold, or is inconclusive at this budget, by its interval."""
import math

import pytest

from snnlib.experiments.verdict import (FAILS, HOLDS, INCONCLUSIVE, decide_all, decide_comparison, decide_parity,
                                        decide_threshold, decide_value, difference_interval, mean_interval)


def test_mean_interval_is_the_t_interval():
    m, (lo, hi) = mean_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653
    half = 4.3026527297 / math.sqrt(3)
    assert m == 2.0 and lo == pytest.approx(2 - half, abs=1e-9) and hi == pytest.approx(2 + half, abs=1e-9)


def test_one_seed_gives_no_interval_and_no_decision():
    v = decide_threshold([0.95], 0.9)
    assert v.interval is None and v.verdict == INCONCLUSIVE and v.n == 1


def test_threshold_holds_fails_or_is_inconclusive_by_the_interval_of_the_mean():
    assert decide_threshold([0.91, 0.92, 0.93], 0.85).verdict == HOLDS
    assert decide_threshold([0.80, 0.81, 0.82], 0.85).verdict == FAILS
    assert decide_threshold([0.84, 0.86, 0.88], 0.85).verdict == INCONCLUSIVE


def test_a_difference_of_half_its_spread_is_inconclusive_with_3_seeds_and_decided_with_10():
    # Paired differences with mean 0.5 and sd about 0.5: the 3-seed interval contains 0, the 10-seed one does not.
    base = [80.0, 81.0, 79.5, 80.2, 80.8, 79.9, 80.4, 81.1, 79.7, 80.3]
    diffs = [0.0, 1.0, 0.5, 0.2, 0.9, 0.1, 0.6, 1.1, 0.4, 0.2]
    a = [b + d for b, d in zip(base, diffs)]
    three = decide_comparison(a[:3], base[:3])
    ten = decide_comparison(a, base)
    assert three.verdict == INCONCLUSIVE and three.interval[0] < 0 < three.interval[1]
    assert ten.verdict == HOLDS and ten.interval[0] > 0 and ten.n == 10
    assert decide_comparison(base, a).verdict == FAILS        # B better than A is decided the other way


def test_pairing_removes_the_seed_to_seed_spread():
    base = [70.0, 75.0, 80.0, 85.0]
    a = [x + 0.5 for x in base]          # the same gain on every seed
    assert decide_comparison(a, base, paired=True).verdict == HOLDS
    assert decide_comparison(a, base, paired=False).verdict == INCONCLUSIVE
    with pytest.raises(ValueError, match="one B per A seed"):
        difference_interval([1.0, 2.0], [1.0], paired=True)


def test_parity_holds_inside_the_margin_fails_outside_and_is_inconclusive_across_it():
    b = [85.0, 86.0, 85.5, 85.2, 85.8]
    assert decide_parity([x + 0.1 for x in b], b, margin=1.0).verdict == HOLDS
    assert decide_parity([x - 3.0 for x in b], b, margin=1.0).verdict == FAILS
    wide = [x + d for x, d in zip(b, [-0.5, 2.5, 0.0, 1.8, -0.2])]
    assert decide_parity(wide, b, margin=1.0).verdict == INCONCLUSIVE


def test_a_deterministic_measurement_is_decided_by_its_value_and_says_so():
    v = decide_value(0.5, 0.55, "<=")
    assert v.verdict == HOLDS and v.statistic == "deterministic" and v.interval is None
    assert decide_value(4.72, 10.0, ">=").verdict == FAILS


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="non-finite"):
        decide_threshold([0.9, float("nan")], 0.5)
    with pytest.raises(ValueError, match="direction"):
        decide_threshold([0.9, 0.8], 0.5, "=>")
    with pytest.raises(ValueError, match="margin"):
        decide_parity([1.0, 2.0], [1.0, 2.0], margin=-1)


def test_the_ledger_keeps_interval_seeds_and_budget_and_the_report_counts_three_verdicts(tmp_path, monkeypatch):
    from snnlib.experiments.claims import Ledger
    from snnlib.pipeline.report import claims_markdown

    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    ledger = Ledger("01_x", "smoke")
    ledger.record("mpis.correct", "a correctness check", 1.0, "== 1", True, "derived", kind="correctness")
    entry = ledger.judge("mpis.streams", "two streams beat one", decide_comparison([0.9, 0.8, 0.85], [0.7, 0.9, 0.6]),
                         "A - B > 0", "paper-abstract", budget="60k x 1 epoch")
    ledger.judge("mpis.acc", "accuracy >= 0.5", decide_threshold([0.6, 0.61, 0.62], 0.5), ">= 0.5",
                 "derived", budget="60k x 1 epoch")
    assert entry["verdict"] == INCONCLUSIVE and entry["n_seeds"] == 3 and entry["budget"] == "60k x 1 epoch"
    assert entry["interval"][0] < 0 < entry["interval"][1] and entry["holds"] is False
    text = claims_markdown(list(ledger.entries.values()))
    assert "2 of 3 claims hold here (1 inconclusive at this budget)." in text
    assert "**inconclusive at this budget** (paired difference" in text and "3 seeds; 60k x 1 epoch" in text
    with pytest.raises(TypeError, match="Verdict"):
        ledger.judge("mpis.bad", "s", True, "t", "s", budget="b")


def test_the_counts_read_as_english_one_does_not_hold_two_do_not():
    from snnlib.pipeline.report import verdict_counts

    claims = [{"verdict": v} for v in (HOLDS, FAILS, INCONCLUSIVE, INCONCLUSIVE)]
    assert verdict_counts(claims) == "1 of 4 claims hold here (1 does not hold, 2 inconclusive at this budget)."
    claims.append({"verdict": FAILS})
    assert verdict_counts(claims) == "1 of 5 claims hold here (2 do not hold, 2 inconclusive at this budget)."


def test_a_claim_of_several_parts_holds_only_when_every_part_holds():
    yes, no, maybe = decide_value(1.0, 0.0, ">="), decide_value(-1.0, 0.0, ">="), decide_threshold([0.5], 0.6, "<=")
    assert decide_all({"a": yes, "b": yes}).verdict == HOLDS
    assert decide_all({"a": yes, "b": no}).verdict == FAILS
    assert decide_all({"a": yes, "b": maybe}).verdict == INCONCLUSIVE            # one seed: no interval
    assert decide_all({"a": maybe, "b": no}).verdict == FAILS                    # any failing part decides
    both = decide_all([decide_value(1e-9, 1e-3, "<"), decide_value(0.5, 1e-2, ">")])
    assert both.holds and both.estimate == 1e-9 and set(both.extra["parts"]) == {"1", "2"}
    with pytest.raises(ValueError, match="at least one part"):
        decide_all([])
    with pytest.raises(TypeError, match="not a Verdict"):
        decide_all({"a": 0.5})


def test_the_readme_table_counts_each_papers_verdicts_at_cpu_and_full_side_by_side():
    from snnlib.pipeline.report import paper_counts, verdict_table

    claims = [{"id": "mpis.a", "verdict": HOLDS}, {"id": "mpis.b", "verdict": INCONCLUSIVE},
              {"id": "saf.c", "verdict": FAILS}, {"id": "saf.d", "holds": True}]      # d: recorded before judge
    counts = paper_counts(claims)
    assert counts["mpis"] == {HOLDS: 1, FAILS: 0, INCONCLUSIVE: 1} and counts["saf"] == {HOLDS: 1, FAILS: 1, INCONCLUSIVE: 0}
    table = verdict_table({"cpu": {"papers": counts, "date": "2026-12-06", "commit": "abc"}})
    assert "| cpu: holds / does not hold / inconclusive | full: holds / does not hold / inconclusive |" in table
    assert "| 1 / 0 / 1 | – |" in table and "| 1 / 1 / 0 | – |" in table
    assert "cpu: 2026-12-06, commit `abc`; full: not run yet" in table


def test_an_inconclusive_cpu_verdict_points_to_the_scale_made_to_decide_it(tmp_path, monkeypatch):
    from snnlib.experiments.claims import Ledger
    from snnlib.pipeline.report import claims_markdown

    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    for scale, says in (("cpu", True), ("full", False)):
        ledger = Ledger("01_x", scale)
        ledger.judge("mpis.acc", "accuracy >= 0.5", decide_threshold([0.6], 0.5), ">= 0.5", "derived", budget="b")
        assert ("the `full` scale (5 seeds, the whole split) is made to decide it" in
                claims_markdown(list(ledger.entries.values()))) is says


def test_the_ledgers_value_is_the_verdicts_estimate_and_another_headline_number_keeps_its_own_key(tmp_path, monkeypatch):
    from snnlib.experiments.claims import Ledger

    monkeypatch.setenv("SNNLIB_RESULTS", str(tmp_path))
    v = decide_comparison([0.9, 0.8, 0.85], [0.7, 0.9, 0.6])
    entry = Ledger("01_x", "cpu").judge("mpis.streams", "s", v, "t", "src", budget="b", measured={"value": 42.0, "n": 3})
    assert entry["measured"]["value"] == v.estimate and entry["measured"]["reported_value"] == 42.0
    same = Ledger("01_x", "cpu").judge("mpis.same", "s", v, "t", "src", budget="b", measured={"value": v.estimate})
    assert "reported_value" not in same["measured"]


def test_the_report_says_which_runs_were_still_learning_when_they_stopped():
    import pandas as pd
    from snnlib.pipeline.report import training_length_markdown

    def rows(nb, name, accs_per_seed):
        return [{"notebook": nb, "name": name, "seed": s, "epoch": e + 1, "metric": "test_acc", "value": a}
                for s, accs in enumerate(accs_per_seed) for e, a in enumerate(accs)]
    runs = pd.DataFrame(rows("01_x", "rising", [[0.80, 0.85], [0.81, 0.85]])      # +4.5 points
                        + rows("01_x", "flat", [[0.880, 0.882], [0.880, 0.884]])  # +0.3 points
                        + rows("01_x", "worse", [[0.86, 0.85]])                   # -1.0 point
                        + rows("03_y", "short", [[0.9], [0.91], [0.92]]))
    text = training_length_markdown(runs)
    assert "| `01_x` | `rising` | 2 | 2 | 85.00 | +4.50 (still rising) |" in text
    assert "| `01_x` | `flat` | 2 | 2 | 88.30 | +0.30 (near a plateau) |" in text
    assert "| `03_y` | `short` | 1 | 3 | 91.00 | n/a (one epoch) |" in text
    assert "| `01_x` | `worse` | 2 | 1 | 85.00 | -1.00 (falling) |" in text
    assert "3 of 4 groups trained more than one epoch, 1 of those ended near a plateau" in text
    assert training_length_markdown(pd.DataFrame(columns=["notebook", "name", "seed", "epoch", "metric", "value"])) == ""
