"""The ``fastloss`` command: ``eval`` against the NumPy reference across chunk boundaries,
every bad file as a one-line error with exit code 2, the progress bar only on a terminal,
and memory bounded by the chunk on a 1 GB file."""

from __future__ import annotations

import argparse
import doctest
import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastloss
import fastloss._eval
from fastloss import _cli, reference
from fastloss._eval import EvalError, evaluate_files

try:                                    # pseudo-terminals: POSIX only
    import fcntl
    import pty
    import termios
except ImportError:
    pty = None

N, C = 53, 7
CHUNKS = [None, 1, 7, 53, 1000]          # default, one row, not dividing N, N, more than N
CHUNK_IDS = ["default", "1", "7", "53", "1000"]


def rtol(dtype) -> float:
    # float32 row losses within a few ulps; chunk sums are carried in float64.
    return 2e-7 if np.dtype(dtype) == np.float32 else 1e-12


def save(tmp_path: Path, name: str, array: np.ndarray) -> str:
    path = tmp_path / name
    np.save(path, array)
    return str(path)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = _cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(argv: list[str], capsys) -> dict:
    code, out, err = run([*argv, "--json"], capsys)
    assert (code, err) == (0, ""), err
    return json.loads(out)


def files(tmp_path, logits, targets) -> list[str]:
    return ["eval", "--logits", save(tmp_path, "logits.npy", logits),
            "--targets", save(tmp_path, "targets.npy", targets)]


def env_with_fastloss() -> dict[str, str]:
    """The environment for a child Python that imports this very fastloss."""
    here = str(Path(fastloss.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastloss", *args]


def error_line(err: str, message: str) -> None:
    """``err`` is exactly one line, fastloss eval's error with ``message`` in it."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("fastloss eval: error: "), err
    assert message in err, err
    assert "Traceback" not in err


# --- the numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", CHUNKS, ids=CHUNK_IDS)
def test_cross_entropy_matches_reference(tmp_path, capsys, rng, dtype, chunk):
    x = (rng.standard_normal((N, C)) * 3).astype(dtype)
    y = rng.integers(0, C, N)
    argv = files(tmp_path, x, y) + ([] if chunk is None else ["--chunk-rows", str(chunk)])
    result = run_json(argv, capsys)
    expected = reference.cross_entropy(x, y)
    assert result["loss"] == pytest.approx(expected, rel=rtol(dtype))
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=rtol(dtype))
    assert result["accuracy"] == np.mean(np.argmax(x, axis=1) == y)
    assert (result["n"], result["rows"], result["ignored"], result["classes"]) == (N, N, 0, C)
    assert (result["loss_name"], result["reduction"], result["dtype"]) == (
        "cross_entropy", "mean", str(np.dtype(dtype)))
    assert result["bytes_read"] == x.nbytes + y.nbytes
    assert result["seconds"] >= 0

    total = run_json([*argv, "--reduction", "sum"], capsys)["loss"]
    assert total == pytest.approx(reference.cross_entropy(x, y, reduction="sum"),
                                  rel=rtol(dtype))


@pytest.mark.parametrize("ignore_index", [-100, 2], ids=["default", "a-class"])
def test_ignored_rows_count_nowhere(tmp_path, capsys, rng, ignore_index):
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, N)
    y[::3] = ignore_index
    argv = [*files(tmp_path, x, y), "--chunk-rows", "5"]
    if ignore_index != -100:
        argv += ["--ignore-index", str(ignore_index)]
    result = run_json(argv, capsys)
    kept = y != ignore_index
    assert result["loss"] == pytest.approx(
        reference.cross_entropy(x, y, ignore_index=ignore_index), rel=1e-12)
    assert (result["n"], result["ignored"]) == (kept.sum(), N - kept.sum())
    assert result["accuracy"] == np.mean(np.argmax(x, axis=1)[kept] == y[kept])


def test_label_smoothing_and_bits(tmp_path, capsys, rng):
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, N)
    argv = [*files(tmp_path, x, y), "--chunk-rows", "10", "--label-smoothing", "0.1"]
    nats = run_json(argv, capsys)
    bits = run_json([*argv, "--base", "2"], capsys)
    expected = reference.cross_entropy(x, y, label_smoothing=0.1)
    assert nats["loss"] == pytest.approx(expected, rel=1e-12)
    assert bits["loss"] == pytest.approx(expected / math.log(2), rel=1e-12)
    assert bits["base"] == 2
    # The same perplexity in either unit: 2 ** bits = e ** nats.
    assert bits["perplexity"] == pytest.approx(nats["perplexity"], rel=1e-12)


def test_probability_targets(tmp_path, capsys, rng, dtype):
    x = rng.standard_normal((N, C)).astype(dtype)
    p = rng.dirichlet(np.ones(C), N).astype(dtype)
    result = run_json([*files(tmp_path, x, p), "--chunk-rows", "6"], capsys)
    assert result["loss"] == pytest.approx(reference.cross_entropy(x, p), rel=rtol(dtype))
    assert result["accuracy"] == np.mean(np.argmax(x, axis=1) == np.argmax(p, axis=1))
    assert (result["n"], result["ignored"]) == (N, 0)


def test_leading_axes_are_rows(tmp_path, capsys, rng):
    # (B, T, C) logits: B * T rows of C classes; the chunks cut across B.
    x = rng.standard_normal((5, 9, C))
    y = rng.integers(0, C, (5, 9))
    result = run_json([*files(tmp_path, x, y), "--chunk-rows", "4"], capsys)
    assert result["loss"] == pytest.approx(reference.cross_entropy(x, y), rel=1e-12)
    assert (result["n"], result["rows"]) == (45, 45)


@pytest.mark.parametrize("chunk", ["1", "4", "100"])
def test_bce_with_logits(tmp_path, capsys, rng, dtype, chunk):
    x = (rng.standard_normal((N, 3)) * 2).astype(dtype)
    y = (rng.random((N, 3)) < 0.4).astype(dtype)
    argv = [*files(tmp_path, x, y), "--loss", "bce", "--chunk-rows", chunk]
    result = run_json(argv, capsys)
    expected = reference.binary_cross_entropy_with_logits(x, y)
    assert result["loss"] == pytest.approx(expected, rel=rtol(dtype))
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=rtol(dtype))
    assert result["accuracy"] == np.mean((x >= 0) == (y >= 0.5))
    assert (result["n"], result["rows"], result["classes"]) == (3 * N, N, None)
    smoothed = run_json([*argv, "--label-smoothing", "0.2"], capsys)["loss"]
    assert smoothed == pytest.approx(
        reference.binary_cross_entropy_with_logits(x, y, label_smoothing=0.2),
        rel=rtol(dtype))


def test_bce_on_probabilities(tmp_path, capsys, rng):
    p = rng.random(N)
    y = rng.random(N)                                      # soft labels, 1-D files
    argv = [*files(tmp_path, p, y), "--loss", "bce", "--probabilities", "--chunk-rows", "8"]
    result = run_json(argv, capsys)
    assert result["loss"] == pytest.approx(reference.binary_cross_entropy(p, y), rel=1e-12)
    assert result["accuracy"] == np.mean((p >= 0.5) == (y >= 0.5))


@pytest.mark.parametrize("teacher", ["probs", "log_probs", "logits"])
def test_kl(tmp_path, capsys, rng, dtype, teacher):
    s = rng.standard_normal((N, C)).astype(dtype)
    t_logits = rng.standard_normal((N, C))
    t = {"probs": reference.softmax(t_logits), "log_probs": reference.log_softmax(t_logits),
         "logits": t_logits}[teacher].astype(dtype)
    argv = [*files(tmp_path, s, t), "--loss", "kl", "--teacher", teacher,
            "--temperature", "2.5", "--chunk-rows", "9"]
    result = run_json(argv, capsys)
    expected = reference.kl_div_with_logits(s, t, teacher_kind=teacher, temperature=2.5)
    assert result["loss"] == pytest.approx(expected, rel=rtol(dtype))
    assert result["n"] == N
    assert "accuracy" in result and result["accuracy"] is None
    assert result["perplexity"] is None


def test_the_sum_does_not_depend_on_the_thread_count(tmp_path, capsys, rng):
    x = rng.standard_normal((4000, 50)).astype(np.float32)
    y = rng.integers(0, 50, 4000)
    argv = [*files(tmp_path, x, y), "--chunk-rows", "1500"]
    losses = {run_json([*argv, "--n-threads", n], capsys)["loss"] for n in ("1", "2", "-1")}
    assert len(losses) == 1


@pytest.mark.parametrize("reduction, loss", [("mean", None), ("sum", 0.0)])
def test_no_rows(tmp_path, capsys, reduction, loss):
    # As the loss functions: a mean over nothing is NaN (null in JSON), a sum 0.
    x = np.zeros((0, C), dtype=np.float32)
    argv = [*files(tmp_path, x, np.zeros(0, dtype=np.int64)), "--reduction", reduction]
    result = run_json(argv, capsys)
    assert (result["loss"], result["n"], result["rows"]) == (loss, 0, 0)
    assert result["accuracy"] is None and result["perplexity"] is None
    code, out, _ = run(argv, capsys)
    assert code == 0 and out.startswith(f"loss        {'nan' if loss is None else '0'} ")


def test_text_report(tmp_path, capsys, rng):
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, N)
    y[0] = -100
    code, out, err = run(files(tmp_path, x, y), capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    expected = reference.cross_entropy(x, y)
    assert lines[0] == (f"loss        {expected:.8g} (cross_entropy, mean over {N - 1} rows, "
                        "nats)")
    accuracy = np.mean(np.argmax(x[1:], axis=1) == y[1:])
    assert lines[1] == f"accuracy    {accuracy:.6f}"
    assert lines[2] == f"perplexity  {math.exp(expected):.8g}"
    assert lines[3:6] == [f"rows        {N} (1 ignored)", f"classes     {C}",
                          "dtype       float64"]
    assert lines[6].startswith("time        ") and "MB/s" in lines[6]


def test_evaluate_files_api(tmp_path, rng):
    x = save(tmp_path, "x.npy", rng.standard_normal((10, 3)))
    y = save(tmp_path, "y.npy", rng.integers(0, 3, 10))
    seen = []
    result = evaluate_files(x, y, chunk_rows=4, progress=lambda done, total:
                            seen.append((done, total)))
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert result.as_dict()["rows"] == 10
    assert issubclass(EvalError, ValueError)
    with pytest.raises(EvalError, match=r"^loss must be one of \('cross_entropy', 'bce', "
                                        r"'kl'\), got 'hinge'$"):
        evaluate_files(x, y, loss="hinge")
    with pytest.raises(EvalError, match=r"^reduction must be one of \('mean', 'sum'\), "
                                        "got 'none'$"):
        evaluate_files(x, y, reduction="none")
    with pytest.raises(EvalError, match=r"^chunk_rows must be a positive int, got 0$"):
        evaluate_files(x, y, chunk_rows=0)


def test_a_file_cut_short_while_being_read(tmp_path, rng):
    x = save(tmp_path, "x.npy", rng.standard_normal((10, 3)))
    y = save(tmp_path, "y.npy", rng.integers(0, 3, 10))

    def cut(done, total):          # after the first chunk, the file loses its last row
        os.truncate(x, os.path.getsize(x) - 3 * 8)

    with pytest.raises(EvalError, match=r"^the logits file '.*x\.npy' ended early \(was it "
                                        r"changed while being read\?\)$"):
        evaluate_files(x, y, chunk_rows=4, progress=cut)


def test_evaluate_files_docstring_example():
    result = doctest.testmod(fastloss._eval, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_float16_logits_sum_in_float64(tmp_path, capsys, rng):
    # Row losses of ~40 over 2000 rows: a float16 sum (the logits' dtype) would overflow
    # at 65504; chunk sums are carried in float64.
    x = np.zeros((2000, 4), dtype=np.float16)
    x[:, 0] = 40.0
    y = np.full(2000, 3)
    for chunk in ("7", "2000"):
        result = run_json([*files(tmp_path, x, y), "--reduction", "sum", "--chunk-rows",
                           chunk], capsys)
        expected = float(fastloss.cross_entropy(x.astype(np.float32), y,
                                                reduction="none").astype(np.float64).sum())
        assert result["loss"] == pytest.approx(expected, rel=1e-12)
        assert math.isfinite(result["loss"]) and result["loss"] > 65504


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "kl"])
def test_the_chunking_moves_no_digit(tmp_path, capsys, rng, loss):
    # float32 files: each chunk's sum stays in float64, so the chunk size only moves the
    # last bits of a float64 total (it moved the 8th digit when sums were rounded to float32).
    x = (rng.standard_normal((3001, 37)) * 4).astype(np.float32)
    y = {"cross_entropy": rng.integers(0, 37, 3001),
         "bce": (rng.random((3001, 37)) < 0.5).astype(np.float32),
         "kl": reference.softmax(rng.standard_normal((3001, 37))).astype(np.float32)}[loss]
    totals = [run_json([*files(tmp_path, x, y), "--loss", loss, "--reduction", "sum",
                        "--chunk-rows", chunk], capsys)["loss"]
              for chunk in ("1", "7", "1000", "3001")]
    assert max(totals) - min(totals) <= 1e-13 * abs(totals[0]), totals


def test_thread_counts_beyond_the_cpus(tmp_path, capsys, rng):
    argv = files(tmp_path, rng.standard_normal((N, C)), rng.integers(0, C, N))
    many = run_json([*argv, "--n-threads", "1000000"], capsys)
    assert many["loss"] == run_json([*argv, "--n-threads", "1"], capsys)["loss"]


# --- bad files and values: one line, exit code 2 ----------------------------------------

def bad_file_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Name: (path of a bad logits file, what the error says)."""
    good = np.zeros((N, C), dtype=np.float32)
    cases = {"missing": (str(tmp_path / "missing.npy"),
                         "cannot read the logits file: No such file or directory"),
             "directory": (str(tmp_path), "is not a regular file (a directory)")}
    raw = (tmp_path / "good.npy")
    np.save(raw, good)
    data = raw.read_bytes()
    for name, content, message in [
        ("empty", b"", "the logits file is not a .npy file"),
        ("text", b"1.0, 2.0\n3.0, 4.0\n", "the logits file is not a .npy file"),
        ("truncated-header", data[:30], "cannot load the logits file"),
        ("truncated-data", data[:-4], "is truncated: its header announces shape (53, 7) of "
                                      "float32 (1484 bytes of data), but it holds 1480"),
        ("huge-header", _npy_with_header(data, 20000), "cannot load the logits file"),
        ("absurd-shape", _npy_with_shape((2**62, 2**62)), "is truncated: its header announces "
                                                           "shape (4611686018427387904, "),
    ]:
        path = tmp_path / f"{name}.npy"
        path.write_bytes(content)
        cases[name] = (str(path), message)
    np.savez(tmp_path / "archive.npz", logits=good)
    cases["npz"] = (str(tmp_path / "archive.npz"), "not a .npy file (np.save's format) (a .npz "
                                                   "archive: np.load it and np.save each array)")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.npy")
        cases["fifo"] = (str(tmp_path / "fifo.npy"), "is not a regular file (a FIFO)")
    for name, array, message in [
        ("object", np.array([None, 1], dtype=object), "holds Python objects (dtype object); "
                                                      "save numbers instead"),
        ("int", good.astype(np.int32), "the logits must be floating-point (float32 or "
                                       "float64), got int32"),
        ("fortran", np.asfortranarray(good), "is stored in Fortran order; save it C-ordered"),
        ("1-d", good[:, 0], "the logits must have shape (N, C), classes along the last "
                            "axis, got shape (53,)"),
        ("0-d", np.float32(1), "got shape ()"),
        ("no-classes", good[:, :0], "the logits must have at least one class, got shape "
                                    "(53, 0)"),
    ]:
        cases[name] = (save(tmp_path, f"{name}.npy", array), message)
    return cases


def _npy_with_header(data: bytes, size: int) -> bytes:
    """A version 2.0 .npy file of ``data``'s array whose header is padded to ``size``
    bytes (NumPy refuses headers over 10 kB as unsafe, with a message of several lines)."""
    magic, header_len = 8, struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + header_len].rstrip(b"\n").ljust(size - 1) + b"\n"
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header + data[
        magic + 2 + header_len:]


def _npy_with_shape(shape: tuple[int, ...]) -> bytes:
    """A float32 .npy header announcing ``shape``, and no data."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header = header.ljust(118) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


BAD_FILES = ["missing", "directory", "empty", "text", "truncated-header", "truncated-data",
             "huge-header", "absurd-shape", "npz", "fifo", "object", "int", "fortran", "1-d",
             "0-d", "no-classes"]


@pytest.mark.filterwarnings("error")          # no stray warning before the error line
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_logits_file(tmp_path, capsys, case):
    cases = bad_file_cases(tmp_path)
    if case not in cases:
        pytest.skip(f"no {case} on this OS")
    path, message = cases[case]
    targets = save(tmp_path, "y.npy", np.zeros(N, dtype=np.int64))
    code, out, err = run(["eval", "--logits", path, "--targets", targets], capsys)
    assert (code, out) == (2, "")
    error_line(err, message)


@pytest.mark.parametrize("loss, targets, message", [
    ("cross_entropy", np.zeros(N - 1, dtype=np.int64),
     f"the targets must be integer class indices of shape ({N},) or float probabilities of "
     f"shape ({N}, {C}), got shape ({N - 1},) and dtype int64"),
    ("cross_entropy", np.zeros(N, dtype=bool), "got shape (53,) and dtype bool"),
    ("cross_entropy", np.zeros((N, C + 1)), "got shape (53, 8) and dtype float64"),
    ("bce", np.zeros(N), "bce needs targets of the logits' shape (53, 7) (real numbers in "
                         "[0, 1]), got shape (53,)"),
    ("kl", np.zeros((N, C), dtype=np.int64), "kl needs a teacher file of floats of the "
                                             "logits' shape (53, 7), got shape (53, 7) "
                                             "and dtype int64"),
])
def test_targets_that_do_not_fit(tmp_path, capsys, loss, targets, message):
    argv = [*files(tmp_path, np.zeros((N, C)), targets), "--loss", loss]
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    error_line(err, message)


def test_bad_targets_file(tmp_path, capsys):
    argv = ["eval", "--logits", save(tmp_path, "x.npy", np.zeros((N, C))),
            "--targets", str(tmp_path / "nothing.npy")]
    code, _, err = run(argv, capsys)
    assert code == 2
    error_line(err, "cannot read the targets file: No such file or directory")


@pytest.mark.parametrize("loss, targets, options, message", [
    ("cross_entropy", "class", ["--chunk-rows", "10"],
     "target must hold class indices in [0, 7) or ignore_index (-100), got 7 at index (1,) "
     "(in the chunk of rows 40:50)"),
    ("bce", "probs", [], "target must be in [0, 1] (probabilities), got values from 0.0 to "
                         "7.0 (in the chunk of rows 0:53)"),
    ("bce", "probs", ["--probabilities", "--label-smoothing", "0.1"],
     "label_smoothing applies to bce with logits, not probabilities"),
    ("kl", "probs", ["--temperature", "0"],
     "temperature must be a finite number in (0, 1e+100], got 0.0"),
    ("kl", "probs", ["--label-smoothing", "0.1"],
     "label_smoothing applies to cross_entropy and bce only"),
    ("cross_entropy", "class", ["--temperature", "2"], "temperature applies to kl only"),
    ("cross_entropy", "class", ["--probabilities"], "probabilities applies to bce only"),
    ("cross_entropy", "probs", ["--ignore-index", "3"],
     "ignore_index applies to integer class targets only"),
    ("cross_entropy", "class", ["--label-smoothing", "1.5"],
     "label_smoothing must be a finite number in [0, 1], got 1.5"),
    ("cross_entropy", "class", ["--base", "1"],
     "base must be a finite positive number other than 1, got 1.0"),
    ("cross_entropy", "class", ["--n-threads", "0"], "n_threads must be a non-zero int"),
    ("cross_entropy", "class", ["--n-threads", str(2**40)], "n_threads must be within "),
    ("cross_entropy", "class", ["--ignore-index", str(2**64)],
     "ignore_index must be within int64's range [-9223372036854775808, 9223372036854775807], "
     "got 18446744073709551616"),
])
def test_bad_values(tmp_path, capsys, loss, targets, options, message):
    y = np.zeros(N, dtype=np.int64)
    y[41] = C
    p = np.zeros((N, C))
    p[5, 3] = 7.0
    argv = files(tmp_path, np.zeros((N, C)), y if targets == "class" else p)
    code, out, err = run([*argv, "--loss", loss, *options], capsys)
    assert (code, out) == (2, "")
    error_line(err, message)


@pytest.mark.parametrize("argv, message", [
    (["eval", "--logits", "x.npy"], "the following arguments are required: --targets"),
    (["eval", "--logits", "x.npy", "--targets", "y.npy", "--chunk-rows", "0"],
     "argument --chunk-rows: expected a positive integer, got '0'"),
    (["eval", "--logits", "x.npy", "--targets", "y.npy", "--loss", "hinge"],
     "argument --loss: invalid choice: 'hinge'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors(capsys, argv, message):
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("usage: fastloss") and message in err


@pytest.mark.parametrize("text", ["0", "-3", "abc", "1.5", ""])
def test_positive_int_rejects(text):
    # One helper for every count option (eval's --chunk-rows, bench's --rounds).
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        _cli.positive_int(text)
    assert str(caught.value) == f"expected a positive integer, got {text!r}"
    assert _cli.positive_int(" 7 ") == 7


def test_help(capsys):
    code, out, _ = run(["eval", "--help"], capsys)
    assert code == 0 and "--chunk-rows" in out and "bounded by the chunk" in out


def test_info_in_process(capsys):
    code, out, _ = run(["info"], capsys)
    assert code == 0 and out == _cli.info() + "\n"
    assert out.startswith(f"fastloss {fastloss.__version__}\n")


def test_errors_from_the_command_line(tmp_path):
    # The real entry point: exit code 2 and one line on stderr, for a file and a value.
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((N, C), dtype=np.float32))
    x.write_bytes(x.read_bytes()[:-1])
    y = save(tmp_path, "y.npy", np.full(N, C))
    for logits, message in [(str(x), "is truncated: its header announces shape (53, 7)"),
                            (save(tmp_path, "ok.npy", np.zeros((N, C))),
                             "target must hold class indices in [0, 7)")]:
        done = subprocess.run(command("eval", "--logits", logits, "--targets", y),
                              capture_output=True, text=True, env=env_with_fastloss())
        assert (done.returncode, done.stdout) == (2, "")
        error_line(done.stderr, message)


# --- the progress bar -------------------------------------------------------------------

def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, rng):
    argv = files(tmp_path, rng.standard_normal((N, C)), rng.integers(0, C, N))
    done = subprocess.run(command(*argv[0:], "--chunk-rows", "5"), capture_output=True,
                          text=True, env=env_with_fastloss())
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("loss ")


def stderr_on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal: (exit code, stdout, stderr)."""
    leader, follower = pty.openpty()
    # 24 x 80 characters, as a terminal window has (tqdm draws nothing 0 columns wide).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        done = subprocess.run(command(*argv), stdout=subprocess.PIPE, stderr=follower,
                              stdin=subprocess.DEVNULL, env=env_with_fastloss(), timeout=60)
    finally:
        os.close(follower)
    seen = b""
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:            # EIO: nothing more once the other side is closed
            break
        if not data:
            break
        seen += data
    os.close(leader)
    return done.returncode, done.stdout.decode(), seen.decode(errors="replace")


@pytest.mark.skipif(pty is None, reason="needs a pseudo-terminal (POSIX)")
def test_progress_bar_on_a_terminal(tmp_path, rng):
    argv = files(tmp_path, rng.standard_normal((N, C)), rng.integers(0, C, N))
    code, out, err = stderr_on_a_terminal([*argv, "--chunk-rows", "10", "--json"])
    assert code == 0 and json.loads(out)["rows"] == N
    assert "100%" in err and "fastloss eval" in err
    code, out, err = stderr_on_a_terminal([*argv, "--chunk-rows", "10", "--no-progress"])
    assert code == 0 and out.startswith("loss ") and err == ""


# --- memory: bounded by the chunk, not the file ------------------------------------------

# The command, with its peak resident set written to a file when it ends. The child's own
# VmHWM, not getrusage: Linux carries the peak of the process that spawned it (pytest's,
# shared through vfork) into the rusage of the child across exec, not into its VmHWM.
PEAK_RSS = """
import runpy, sys
report, sys.argv = sys.argv[1], ["fastloss", *sys.argv[2:]]
try:
    runpy.run_module("fastloss", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmHWM")
def test_peak_memory_on_a_1gb_file(tmp_path):
    # 262144 x 1000 float32 logits, 1.05 GB: a block of 4096 random rows written 64 times
    # (so the expected loss is the block's), without ever holding the file in memory.
    rows, classes, block_rows = 262144, 1000, 4096
    rng = np.random.default_rng(7)
    block = (rng.standard_normal((block_rows, classes)) * 3).astype(np.float32)
    block_targets = rng.integers(0, classes, block_rows)
    logits, targets = tmp_path / "big.npy", tmp_path / "big-targets.npy"
    header = np.lib.format.open_memmap(logits, mode="w+", dtype=np.float32,
                                       shape=(rows, classes))
    offset = header.offset
    del header
    report = tmp_path / "peak"
    try:
        with open(logits, "r+b") as f:
            f.seek(offset)
            for _ in range(rows // block_rows):
                f.write(block.data)
        np.save(targets, np.tile(block_targets, rows // block_rows))
        assert logits.stat().st_size > 1e9
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(report), "eval", "--logits", str(logits),
             "--targets", str(targets), "--json"],
            capture_output=True, text=True, env=env_with_fastloss())
        seconds = time.perf_counter() - began
    finally:
        logits.unlink(missing_ok=True)
    assert (done.returncode, done.stderr) == (0, "")
    field, kilobytes, unit = report.read_text().split()
    assert (field, unit) == ("VmHWM:", "kB")
    peak = int(kilobytes) * 1024
    result = json.loads(done.stdout)
    print(f"1 GB eval: peak RSS {peak / 1e6:.0f} MB, {seconds:.2f} s in all, "
          f"{result['bytes_read'] / result['seconds'] / 1e6:.0f} MB/s in the loop")
    assert peak < 300e6
    assert result["rows"] == rows
    assert result["loss"] == pytest.approx(reference.cross_entropy(block, block_targets),
                                           rel=1e-6)
    assert result["accuracy"] == np.mean(np.argmax(block, axis=1) == block_targets)
