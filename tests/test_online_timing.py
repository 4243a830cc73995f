"""The one alternated timing protocol (``snnlib.metrics.timing``): order, rounds, per-round ratios;
no timing is asserted."""
import pytest

from snnlib.metrics.timing import alternate, gflops_probe, ratio_summary, round_order, round_ratios


def test_order_is_reversed_on_odd_rounds():
    assert round_order("ABC", 0) == ["A", "B", "C"]
    assert round_order("ABC", 1) == ["C", "B", "A"]
    assert round_order("ABC", 2) == ["A", "B", "C"]


def test_variants_alternate_and_every_round_keeps_wall_and_cpu_medians():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "ABC"}
    res = alternate(fns, rounds=3, reps=2, warmup=1)
    assert calls[:3] == ["A", "B", "C"]                                  # warm-up
    assert calls[3:] == list("AABBCC" "CCBBAA" "AABBCC")
    assert len(res["rounds"]) == 3 and all(list(r) == list("ABC") for r in res["rounds"])
    assert all(set(v) == {"wall_s", "cpu_s", "wall_all"} and len(v["wall_all"]) == 2 for r in res["rounds"] for v in r.values())
    assert res["gflops_before"] > 0 and res["gflops_after"] > 0
    with pytest.raises(ValueError, match="rounds"):
        alternate(fns, rounds=0, reps=1)


def test_ratios_are_taken_per_round_and_summarised_by_their_median():
    fake = {"rounds": [{"A": {"wall_s": 1.0}, "B": {"wall_s": 2.0}}, {"A": {"wall_s": 3.0}, "B": {"wall_s": 4.0}},
                       {"A": {"wall_s": 1.0}, "B": {"wall_s": 5.0}}, {"A": {"wall_s": 1.0}}]}
    ratios = round_ratios(fake, "A", "B")
    assert ratios == [0.5, 0.75, 0.2]                                    # the round without B is skipped
    assert round_ratios(fake, "A", "B", scale=2.0) == [0.25, 0.375, 0.1]
    assert ratio_summary(ratios) == {"median": 0.5, "min": 0.2, "max": 0.75, "n": 3}
    assert ratio_summary([]) is None
    assert gflops_probe(n=32, repeats=3) > 0
