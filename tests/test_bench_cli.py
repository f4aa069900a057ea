"""``python -m fastloss bench`` (fastloss._bench): cases, peers, JSON and the ratio gate.

Nothing here asserts a speed: the runs are tiny (32x10, a few rounds) and only their
structure, exit statuses and messages are checked.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

import fastloss
from fastloss import _bench, _dispatch

TINY = "cross_entropy-float32-32x10-t1"
FAST_RUN = ["--cases", TINY, "--threads", "1", "--rounds", "3", "--no-torch"]


@pytest.fixture
def saved_run(tmp_path, capsys):
    """A real tiny run saved with --json: its path, its contents and what it printed."""
    path = tmp_path / "base.json"
    assert _bench.main([*FAST_RUN, "--quick", "--json", str(path)]) == 0
    return path, json.loads(path.read_text()), capsys.readouterr().out


def _doctored(tmp_path, data, factor, name):
    """The saved run with every ratio multiplied by factor."""
    for case in data["cases"]:
        case["ratios"] = {p: r * factor for p, r in case["ratios"].items()}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_json_has_the_documented_keys(saved_run):
    _, data, out = saved_run
    assert data["schema"] == _bench.JSON_SCHEMA
    assert data["version"] == fastloss.__version__
    assert data["build"]["simd"] == _dispatch.isa()
    assert data["build"]["compiled_simd"] == fastloss.build_info()["simd"]
    assert {"cpu", "cpus", "platform", "python"} <= set(data["machine"])
    assert data["torch"] is None                      # --no-torch
    [case] = data["cases"]
    assert case["key"] == TINY
    assert (case["kernel"], case["dtype"], case["shape"], case["threads"]) == (
        "cross_entropy", "float32", [32, 10], 1)
    assert case["bytes"] == 2 * 32 * 10 * 4
    assert case["rounds"] == 3
    assert set(case["ratios"]) == {"copy", "numpy"}
    assert set(case["ms"]) == {"fastloss", "copy", "numpy"}
    assert all(v > 0 for v in [*case["ratios"].values(), *case["ms"].values(), case["gbps"]])
    # the table names the case and its columns
    assert "vs copy" in out and "vs numpy" in out and "cross_entropy" in out


def test_compare_fails_against_a_much_better_saved_run(saved_run, tmp_path, capsys):
    _, data, _ = saved_run
    better = _doctored(tmp_path, data, 1e6, "better.json")
    # Without --cases, --compare measures the saved run's cases.
    status = _bench.main(["--compare", str(better), "--rounds", "3", "--no-torch"])
    out = capsys.readouterr().out
    assert status == 1
    assert f"REGRESSION:    {TINY} vs copy" in out
    assert f"REGRESSION:    {TINY} vs numpy" in out
    assert "2 ratio(s) fell by more than 15%" in out


def test_compare_passes_against_a_worse_saved_run(saved_run, tmp_path, capsys):
    _, data, _ = saved_run
    # a million times worse: no noise on a loaded machine makes up for that
    worse = _doctored(tmp_path, data, 1e-6, "worse.json")
    status = _bench.main(["--compare", str(worse), *FAST_RUN])
    out = capsys.readouterr().out
    assert status == 0
    assert "REGRESSION" not in out
    assert "no ratio fell by more than the tolerance" in out


def test_compare_with_itself(saved_run):
    _, data, _ = saved_run
    lines, failed = _bench.compare(data, data["cases"], 0.15)
    assert not failed
    assert lines == [f"ok:            {TINY} {title}: {r:.3g} -> {r:.3g} (+0.0%)"
                     for title, r in (("vs copy", data["cases"][0]["ratios"]["copy"]),
                                      ("vs numpy", data["cases"][0]["ratios"]["numpy"]))]


def test_compare_reports_cases_on_one_side_only():
    saved = {"cases": [{"key": "a", "ratios": {"copy": 0.5, "numpy": 4.0}},
                       {"key": "gone", "ratios": {"copy": 1.0}}]}
    now = [{"key": "a", "ratios": {"copy": 0.5}}, {"key": "new", "ratios": {"copy": 1.0}}]
    lines, failed = _bench.compare(saved, now, 0.15)
    assert not failed
    assert lines == ["ok:            a vs copy: 0.5 -> 0.5 (+0.0%)",
                     "missing now:   a vs numpy",
                     "missing now:   gone (in the saved run, not measured now)",
                     "not in saved:  new"]


@pytest.mark.parametrize(("after", "failed"), [(0.85, False), (0.8499, True), (2.0, False)])
def test_compare_tolerance_boundary(after, failed):
    saved = {"cases": [{"key": "a", "ratios": {"numpy": 1.0}}]}
    lines, result = _bench.compare(saved, [{"key": "a", "ratios": {"numpy": after}}], 0.15)
    assert result is failed
    assert lines[0].startswith("REGRESSION:" if failed else "ok:")


@pytest.mark.parametrize(("text", "value"), [("0.15", 0.15), ("15%", 0.15), ("0", 0.0),
                                             ("2.5%", 0.025)])
def test_tolerance_parsing(text, value):
    assert _bench._tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1", "1.5", "-0.1", "abc", "150%", "nan", ""])
def test_tolerance_rejects(text, capsys):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a fraction in"):
        _bench._tolerance(text)
    assert _bench.main(["--tolerance", text, "--list"]) == 2
    assert "argument --tolerance: expected a fraction in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0", "1,x", "", "-1"])
def test_threads_rejects(text, capsys):
    assert _bench.main(["--threads", text, "--list"]) == 2
    assert "argument --threads: expected positive thread counts" in capsys.readouterr().err


def test_rounds_rejects(capsys):
    assert _bench.main(["--rounds", "0", "--list"]) == 2
    assert "argument --rounds: expected a positive integer, got '0'" in capsys.readouterr().err


def test_missing_compare_file_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert _bench.main(["--compare", str(missing), *FAST_RUN]) == 2
    err = capsys.readouterr().err
    assert f"fastloss bench: error: --compare: cannot read {missing}" in err


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "is not JSON"),
    ('{"cases": [{"key": "a"}]}', "is not a saved 'fastloss bench --json' run"),
    ("[1, 2]", "is not a saved 'fastloss bench --json' run"),
])
def test_invalid_compare_file_is_a_usage_error(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert _bench.main(["--compare", str(path), *FAST_RUN]) == 2
    assert message in capsys.readouterr().err


def test_no_matching_case_is_a_usage_error(capsys):
    assert _bench.main(["--cases", "no-such-kernel", "--list"]) == 2
    assert "no case matches 'no-such-kernel'" in capsys.readouterr().err


def test_case_patterns(capsys):
    def listed(*argv):
        assert _bench.main([*argv, "--list"]) == 0
        return capsys.readouterr().out.split()

    # substring, over the headline cases of the mode
    assert listed("--quick", "--cases", "_softmax-") == [
        "log_softmax-float32-4096x1000-t1", "log_softmax-float32-4096x1000-t2"]
    assert listed("--quick", "--cases", "softmax-*") == [
        "softmax-float32-4096x1000-t1", "softmax-float32-4096x1000-t2"]
    # glob on the whole key, and a thread list
    assert listed("--cases", "cross_entropy-float64-*x10-*", "--threads", "2") == [
        "cross_entropy-float64-32x10-t2", "cross_entropy-float64-1000000x10-t2"]
    # a pattern matching no headline case selects from the suite's cases
    assert listed("--cases", "binary_cross_entropy-float64-4096x1000-t1") == [
        "binary_cross_entropy-float64-4096x1000-t1"]
    assert listed("--cases", "logsumexp-float32-4096x1000-t1,softmax-float32-4096x1000-t1"
                  ) == ["softmax-float32-4096x1000-t1", "logsumexp-float32-4096x1000-t1"]


def test_headline_cases_cover_the_issue_table():
    full = {c.key for c in _bench.headline_cases(quick=False)}
    for dtype in ("float32", "float64"):
        for n, c in [(32, 10), (4096, 1000), (1024, 32000), (256, 128256),
                     (1_000_000, 10), (4_000_000, 2)]:
            assert {f"cross_entropy-{dtype}-{n}x{c}-t{t}" for t in (1, 2)} <= full
    for kernel in ("softmax", "log_softmax", "logsumexp", "cross_entropy_soft",
                   "binary_cross_entropy_with_logits", "kl_div_with_logits",
                   "entropy_from_logits"):
        assert f"{kernel}-float32-4096x1000-t1" in full
    quick = {c.key for c in _bench.headline_cases(quick=True)}
    assert quick < full
    assert not any("256x128256" in key for key in quick)


def test_suite_covers_every_public_kernel():
    covered = {c.kernel for c in _bench.suite_cases()}
    not_kernels = {"__version__", "build_info", "openmp_enabled", "one_hot"}
    assert set(fastloss.__all__) - not_kernels <= covered
    cases = _bench.suite_cases()
    assert {c.shape for c in cases} == set(_bench.SHAPES)
    assert {(c.dtype, c.threads) for c in cases} == {
        (d, t) for d in ("float32", "float64") for t in (1, 2)}
    assert len({c.key for c in cases}) == len(cases)


@pytest.mark.parametrize("kernel", list(_bench.KERNELS))
def test_copy_moves_the_kernels_bytes(kernel):
    case = _bench.Case(kernel, "float64", (32, 10), 1)
    arrays = _bench.make_arrays(_bench.KERNELS[kernel].inputs, "float64", (32, 10))
    src, dst = arrays.copy_pair(_bench.traffic_bytes(case))
    assert src.nbytes + dst.nbytes == _bench.traffic_bytes(case)
    assert not np.shares_memory(src, dst)
    _bench.make_peer(case, "copy", arrays)()
    np.testing.assert_array_equal(dst, src)


@pytest.mark.parametrize("kernel", list(_bench.KERNELS))
def test_fastloss_and_numpy_peers_compute_the_same(kernel):
    # The peers of a case must time the same computation on the same inputs.
    case = _bench.Case(kernel, "float64", (32, 10), 1)
    arrays = _bench.make_arrays(_bench.KERNELS[kernel].inputs, "float64", (32, 10))
    mine = _bench.make_peer(case, "fastloss", arrays)()
    theirs = _bench.make_peer(case, "numpy", arrays)()
    if isinstance(theirs, tuple):            # (loss, gradient)
        assert mine[1] is arrays.out         # the gradient went to the preallocated buffer
        np.testing.assert_allclose(mine[1], theirs[1], rtol=1e-10, atol=1e-15)
        mine, theirs = mine[0], theirs[0]
    np.testing.assert_allclose(mine, theirs, rtol=1e-10)


def test_option_variants_time_plain_cross_entropy_as_peer():
    case = _bench.Case("cross_entropy_options", "float64", (32, 10), 1)
    arrays = _bench.make_arrays("options", "float64", (32, 10))
    assert (arrays.target == -100).any() and (arrays.extra["plain_target"] >= 0).all()
    loss, _ = _bench.make_peer(case, "plain", arrays)()
    expected = fastloss.reference.cross_entropy(arrays.x, arrays.extra["plain_target"])
    assert loss == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="no peer 'plain' for cross_entropy"):
        _bench.make_peer(_bench.Case("cross_entropy", "float64", (32, 10), 1), "plain",
                         arrays)


def test_per_round_ratio_median():
    peer = _bench._Entry("numpy", None, lambda: None, samples={0: 2.0, 2: 9.0, 4: 4.0})
    base = _bench._Entry("fastloss", 1, lambda: None,
                         samples={0: 1.0, 1: 5.0, 2: 3.0, 3: 5.0, 4: 1.0})
    # rounds 0, 2, 4 (where both ran): ratios 2, 3, 4
    assert _bench._median_ratio(peer, base) == 3.0


def test_plan_keeps_the_reference_to_its_budget():
    fast = _bench._Entry("fastloss", 1, lambda: None, estimate=0.05)
    slow = _bench._Entry("numpy", None, lambda: None, estimate=0.2)
    rounds = _bench._plan([fast, slow], "quick", None)
    assert rounds == int(_bench.BUDGET_S["quick"] * 0.6 / 0.05)
    samples = len(range(0, rounds, slow.every))
    assert _bench.MIN_NUMPY_SAMPLES["quick"] <= samples <= _bench.BUDGET_S["quick"] * 0.4 / 0.2 + 1
    assert _bench._plan([fast, slow], "quick", 2) == 2 and slow.every == 1


def test_calibration_keeps_a_slow_first_call_as_round_0():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(_bench.SLOW_CALL_S)

    entry = _bench._Entry("numpy", None, slow)
    _bench._calibrate(entry, None)
    assert len(calls) == 1 and list(entry.samples) == [0] and entry.inner == 1
    _bench._time_rounds([entry], 3, None)     # round 0 is not run again
    assert len(calls) == 3 and sorted(entry.samples) == [0, 1, 2]

    fast = _bench._Entry("copy", None, lambda: calls.append(1))
    calls.clear()
    _bench._calibrate(fast, None)               # a warm-up call, then the estimate
    assert len(calls) == 2 and not fast.samples
    assert fast.inner == min(10_000, math.ceil(_bench.MIN_SAMPLE_S / fast.estimate))


def test_threaded_samples_start_warm():
    """A peer on 2 threads gets untimed calls for WARM_S before each timed sample (the
    OpenMP team and the second core awake); a single-threaded peer gets none."""
    calls: list[tuple[int, float]] = []     # (the round, as samples taken so far; time)
    two = _bench._Entry("fastloss", 2, lambda: calls.append((len(two.samples),
                                                             time.perf_counter())), inner=1)
    one_calls: list[int] = []
    one = _bench._Entry("fastloss", 1, lambda: one_calls.append(1), inner=1)
    _bench._time_rounds([one, two], 3, None)
    assert len(one_calls) == 3 and sorted(two.samples) == [0, 1, 2]
    for r in range(3):
        times = [t for k, t in calls if k == r]
        assert len(times) >= 2                       # warm calls, then the timed one
        assert times[-1] - times[0] >= 0.9 * _bench.WARM_S


def test_torch_peers_run():
    torch = pytest.importorskip("torch")
    for kernel in _bench.KERNELS:
        case = _bench.Case(kernel, "float32", (32, 10), 2)
        arrays = _bench.make_arrays(_bench.KERNELS[kernel].inputs, "float32", (32, 10))
        for peer in _bench.peer_names(case, have_torch=True):
            if peer.startswith("torch"):
                with _bench.torch_threads(torch, 2):
                    _bench.make_peer(case, peer, arrays, torch)()
    assert "torch_fwd" in _bench.peer_names(_bench.Case("cross_entropy", "float32",
                                                        (32, 10), 1), True)
    assert "torch" not in _bench.peer_names(
        _bench.Case("cross_entropy_all_options", "float32", (32, 10), 1), True)


def test_torch_threads_are_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with _bench.torch_threads(torch, 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_torch_columns_in_a_run(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "t.json"
    assert _bench.main(["--cases", TINY, "--rounds", "3", "--json", str(path)]) == 0
    [case] = json.loads(path.read_text())["cases"]
    assert set(case["ratios"]) == {"copy", "numpy", "torch", "torch_fwd"}


def test_module_command_has_bench():
    result = subprocess.run([sys.executable, "-m", "fastloss", "bench", "--quick", "--list"],
                            capture_output=True, text=True, check=True)
    keys = result.stdout.split()
    assert keys == [c.key for c in _bench.headline_cases(quick=True)]
