"""The alternated timing protocol (order, rounds, per-round ratios); no timing is asserted."""
import pytest

from snnlib.online.timing import matmul_gflops, round_ratios, time_alternating


def test_variants_alternate_and_ratios_are_taken_per_round():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "ABC"}
    res = time_alternating(fns, rounds=3, reps=2, warmup=1)
    assert calls[:3] == ["A", "B", "C"]                                  # warm-up
    timed = calls[3:]
    assert timed == ["A"] * 2 + ["B"] * 2 + ["C"] * 2 + ["C"] * 2 + ["B"] * 2 + ["A"] * 2 + ["A"] * 2 + ["B"] * 2 + ["C"] * 2
    assert len(res["rounds"]) == 3 and all(set(r) == set("ABC") for r in res["rounds"])
    assert res["probe_gflops_before"] > 0 and res["probe_gflops_after"] > 0
    fake = {"rounds": [{"A": 1.0, "B": 2.0}, {"A": 3.0, "B": 4.0}, {"A": 1.0, "B": 5.0}]}
    rows = round_ratios(fake, [("A/B", "A", "B")])
    assert [r["ratio"] for r in rows[:3]] == [0.5, 0.75, 0.2]
    assert rows[-1] == {"pair": "A/B", "round": "median", "ratio": 0.5, "min": 0.2, "max": 0.75}
    with pytest.raises(ValueError, match="rounds"):
        time_alternating(fns, rounds=0)
    assert matmul_gflops(n=32, reps=3) > 0
