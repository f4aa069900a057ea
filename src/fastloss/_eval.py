"""``fastloss eval``: a loss over .npy files of any size, read in chunks of rows.

Each file is opened once and read with ``readinto`` into one buffer that is reused for
every chunk, so the memory used is bounded by the chunk, whatever the size of the file:
pages of a memory map would stay in the process's resident set once touched, a reused
buffer does not grow. The .npy header is parsed from the open file (NumPy's
``np.lib.format``), and the data it announces must be there before anything is read.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np

import fastloss
from fastloss._binary import _BCE, _BCE_WITH_LOGITS
from fastloss._common import log_base, run_elementwise
from fastloss._cross_entropy import _cross_entropy
from fastloss._distill import _kl_div_with_logits

__all__ = ["LOSSES", "EvalError", "EvalResult", "evaluate_files"]

LOSSES = ("cross_entropy", "bce", "kl")
REDUCTIONS = ("mean", "sum")
TEACHER_KINDS = ("probs", "log_probs", "logits")

#: The default chunk: about this many bytes of the two files together.
CHUNK_BYTES = 64 << 20

_NPY_MAGIC = b"\x93NUMPY"

#: The losses each option of evaluate_files applies to.
_OPTION_LOSSES = {"ignore_index": ("cross_entropy",), "label_smoothing": ("cross_entropy", "bce"),
                  "teacher": ("kl",), "temperature": ("kl",)}
_IGNORE_INDEX = inspect.signature(fastloss.cross_entropy).parameters["ignore_index"].default

#: The dtype of the chunks' loss sums, whatever the files' dtype: a float16 sum would
#: overflow at 65504, and float32 sums would make the total depend on the chunking.
_TOTAL = np.dtype(np.float64)


class EvalError(ValueError):
    """A file or an option that ``evaluate_files`` cannot use; the message is one line."""


class _NpyReader:
    """A C-ordered .npy file seen as ``rows`` rows of ``row_size`` elements, read a range
    of rows at a time into one reusable buffer.

    The file is opened once, and only if it is a regular file: a FIFO or a device cannot
    seek, and reading one would block or consume it. Its header is parsed from that open
    file, and the data it announces must be there before anything is read.
    """

    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        try:
            status = os.stat(path)
        except OSError as exc:
            raise EvalError(f"cannot read the {what} file: {exc.strerror or exc}: "
                            f"{path!r}") from None
        if not stat.S_ISREG(status.st_mode):
            kind = ("a directory" if stat.S_ISDIR(status.st_mode)
                    else "a FIFO" if stat.S_ISFIFO(status.st_mode)
                    else "a device" if stat.S_ISCHR(status.st_mode) or stat.S_ISBLK(status.st_mode)
                    else "a socket" if stat.S_ISSOCK(status.st_mode) else "not a file")
            raise EvalError(f"the {what} file {path!r} is not a regular file ({kind}); "
                            "fastloss eval reads .npy files from disk")
        try:
            self._file: Any = open(path, "rb", buffering=0)     # closed by close()
        except OSError as exc:
            raise EvalError(f"cannot read the {what} file: {exc.strerror or exc}: "
                            f"{path!r}") from None
        try:
            self.shape, self.dtype, self.offset = self._header(os.fstat(self._file.fileno()))
        except BaseException:
            self.close()
            raise
        self.row_size = 0
        self._buffer = np.empty(0, dtype=self.dtype)

    def _header(self, status: os.stat_result) -> tuple[tuple[int, ...], np.dtype, int]:
        """The shape, dtype and data offset of the open file, after checking that the data
        is all there."""
        path, what, f = self.path, self.what, self._file
        if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            hint = (" (a .npz archive: np.load it and np.save each array)"
                    if path.endswith(".npz") else "")
            raise EvalError(f"the {what} file is not a .npy file (np.save's format){hint}: "
                            f"{path!r}")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not "
                                 "read here (1.0 and 2.0 are)")
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            # NumPy's messages can span lines (a header over 10 kB): keep the first.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EvalError(f"cannot load the {what} file {path!r}: {reason}") from None
        if dtype.hasobject:
            raise EvalError(f"the {what} file {path!r} holds Python objects (dtype "
                            f"{dtype}); save numbers instead, e.g. np.save(path, "
                            "a.astype(np.float32))")
        if fortran and len(shape) > 1:
            raise EvalError(
                f"the {what} file {path!r} is stored in Fortran order; save it C-ordered, "
                "e.g. np.save(path, np.ascontiguousarray(a))"
            )
        offset = f.tell()
        needed = math.prod(shape) * dtype.itemsize          # Python ints: no overflow
        if offset + needed > status.st_size:
            raise EvalError(f"the {what} file {path!r} is truncated: its header announces "
                            f"shape {shape} of {dtype} ({needed} bytes of data), but it "
                            f"holds {max(status.st_size - offset, 0)}")
        return shape, dtype, offset

    def describe(self) -> str:
        return f"shape {self.shape} and dtype {self.dtype}"

    def set_rows(self, rows: int) -> None:
        """Read the file as ``rows`` rows (of size / rows elements each)."""
        self.row_size = math.prod(self.shape) // rows if rows else 0

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a flat view of the buffer (valid until the next read)."""
        count = (stop - start) * self.row_size
        if self._buffer.size < count:
            self._buffer = np.empty(count, dtype=self.dtype)
        chunk = self._buffer[:count]
        view = chunk.view(np.uint8).data          # a memoryview of the chunk's bytes
        filled = 0
        try:
            self._file.seek(self.offset + start * self.row_size * self.dtype.itemsize)
            while filled < view.nbytes:
                got = self._file.readinto(view[filled:])
                if not got:
                    break
                filled += got
        except OSError as exc:
            raise EvalError(f"cannot read the {self.what} file: {exc.strerror or exc}: "
                            f"{self.path!r}") from None
        if filled < view.nbytes:
            raise EvalError(f"the {self.what} file {self.path!r} ended early (was it changed "
                            "while being read?)")
        return chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> _NpyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate_files` found.

    ``loss`` is the mean over ``n`` or the sum (``reduction``), in units of ``base``
    (None: nats). ``n`` is what a mean divides by: the rows not ignored
    (cross_entropy with class indices), the rows (cross_entropy with probabilities, kl)
    or the elements (bce); ``rows`` counts every row read. ``accuracy`` and
    ``perplexity`` are None for kl.
    """

    loss_name: str
    reduction: str
    loss: float
    n: int
    rows: int
    ignored: int
    classes: int | None
    dtype: str
    base: float | None
    accuracy: float | None
    perplexity: float | None
    seconds: float
    bytes_read: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _layouts(loss_name: str, logits: _NpyReader, targets: _NpyReader,
             probabilities: bool) -> tuple[int, int | None]:
    """Check that the two files fit together; (rows, classes). The rows are the positions
    of the class axis (last) for cross_entropy and kl, the first axis for bce."""
    shape = logits.shape
    what = "probabilities" if probabilities else "logits"
    if logits.dtype.kind != "f":
        raise EvalError(f"the {what} must be floating-point (float32 or float64), got "
                        f"{logits.dtype} in {logits.path!r}")
    if loss_name == "bce":
        if not shape:
            raise EvalError(f"the {what} must have at least one dimension, got a 0-d array")
        if targets.shape != shape or targets.dtype.kind not in "biuf":
            raise EvalError(f"bce needs targets of the {what}' shape {shape} (real numbers "
                            f"in [0, 1]), got {targets.describe()}")
        return shape[0], None
    if len(shape) < 2:
        raise EvalError(f"the logits must have shape (N, C), classes along the last axis, "
                        f"got shape {shape}")
    if shape[-1] == 0:
        raise EvalError(f"the logits must have at least one class, got shape {shape}")
    rows = math.prod(shape[:-1])
    if loss_name == "kl":
        if targets.shape != shape or targets.dtype.kind != "f":
            raise EvalError(f"kl needs a teacher file of floats of the logits' shape {shape}, "
                            f"got {targets.describe()}")
    elif not ((targets.dtype.kind in "iu" and targets.shape == shape[:-1])
              or (targets.dtype.kind == "f" and targets.shape == shape)):
        raise EvalError(f"the targets must be integer class indices of shape {shape[:-1]} or "
                        f"float probabilities of shape {shape}, got {targets.describe()}")
    return rows, shape[-1]


def _default_chunk_rows(*readers: _NpyReader) -> int:
    row_bytes = sum(reader.row_size * reader.dtype.itemsize for reader in readers)
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def evaluate_files(
    logits_path: str,
    targets_path: str,
    *,
    loss: str = "cross_entropy",
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float | None = None,
    probabilities: bool = False,
    teacher: str | None = None,
    temperature: float | None = None,
    base: float | None = None,
    chunk_rows: int | None = None,
    n_threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """A loss over two .npy files, read chunk by chunk, in memory bounded by the chunk.

    The files are read as they are stored, in C order. ``loss`` is

    - ``"cross_entropy"``: logits of shape (N, C) (or (..., C): classes along the last
      axis) against integer class indices of shape (N,) or class probabilities of shape
      (N, C), through :func:`fastloss.cross_entropy`; accuracy is the share of counted
      rows whose largest logit is at the target class (for probabilities: at the largest
      target probability);
    - ``"bce"``: :func:`fastloss.binary_cross_entropy_with_logits`, or with
      ``probabilities`` :func:`fastloss.binary_cross_entropy`, elementwise over files
      of the same shape (any, rows along the first axis); accuracy is the share of
      elements with the prediction (p >= 0.5, i.e. logit >= 0) on the target's side of
      0.5;
    - ``"kl"``: :func:`fastloss.kl_div_with_logits` of student logits (N, C) against
      the teacher in the targets file, given as ``teacher`` ("probs", "log_probs" or
      "logits"), at ``temperature``.

    "mean" divides the sum of the losses by the counted rows (cross_entropy: rows whose
    target is not ``ignore_index``, as PyTorch; kl: rows, PyTorch's "batchmean") or by
    the elements (bce, as PyTorch). The sum is formed in float64 from the chunks' sums in
    file order, so it does not depend on the thread count. The perplexity is
    ``exp`` of the mean loss in nats (``base ** loss`` for the mean in units of
    ``base``); with ``label_smoothing`` it is that of the smoothed loss. No rows give a
    "mean" of NaN and a "sum" of 0, as the loss functions do.

    Parameters
    ----------
    logits_path, targets_path : str
        .npy files (``np.save``), C-ordered. Logits float32 or float64 (other float
        dtypes are computed as the loss functions do).
    loss : {"cross_entropy", "bce", "kl"}
    reduction : {"mean", "sum"}
    ignore_index, label_smoothing : optional
        As in :func:`fastloss.cross_entropy` (label_smoothing: also bce with logits).
        None: the function's default. An option given for a loss it does not apply to
        is an error.
    probabilities : bool
        bce only: the first file holds probabilities, not logits.
    teacher, temperature : optional
        kl only: ``teacher_kind`` and ``temperature`` of
        :func:`fastloss.kl_div_with_logits`.
    base : float, optional
        Unit of the loss: None for nats, 2 for bits.
    chunk_rows : int, optional
        Rows per chunk; by default as many as make about 64 MiB of the two files.
    n_threads : int, optional
        Threads of the loss functions (None: OpenMP's default).
    progress : callable, optional
        Called after each chunk with the rows done so far and the rows in all.

    Returns
    -------
    EvalResult

    Raises
    ------
    EvalError
        A file that is missing, unreadable, not a .npy file, truncated, in Fortran
        order, of a wrong dtype or shape; or a value a loss function rejects (a class
        index out of range, a probability outside [0, 1], an invalid option): the message
        names the file or the chunk of rows.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from fastloss._eval import evaluate_files
    >>> folder = tempfile.TemporaryDirectory()
    >>> x, y = os.path.join(folder.name, "x.npy"), os.path.join(folder.name, "y.npy")
    >>> np.save(x, np.array([[2.3, -1.2], [0.0, 1.0], [1.0, 0.0]]))
    >>> np.save(y, np.array([1, 1, 0]))
    >>> result = evaluate_files(x, y, chunk_rows=2)      # two chunks: 2 rows, then 1
    >>> round(result.loss, 5), result.n, round(result.accuracy, 4)
    (1.38542, 3, 0.6667)
    >>> folder.cleanup()
    """
    if loss not in LOSSES:
        raise EvalError(f"loss must be one of {LOSSES}, got {loss!r}")
    if reduction not in REDUCTIONS:
        raise EvalError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if chunk_rows is not None and chunk_rows < 1:
        raise EvalError(f"chunk_rows must be a positive int, got {chunk_rows}")
    given: dict[str, Any] = {"ignore_index": ignore_index, "label_smoothing": label_smoothing,
             "teacher": teacher, "temperature": temperature}
    options = {name: value for name, value in given.items() if value is not None}
    if probabilities and loss != "bce":
        raise EvalError("probabilities applies to bce only")
    if probabilities and label_smoothing is not None:
        raise EvalError("label_smoothing applies to bce with logits, not probabilities")
    for name in options:
        if loss not in _OPTION_LOSSES[name]:
            raise EvalError(f"{name} applies to {' and '.join(_OPTION_LOSSES[name])} only")
    if "teacher" in options:
        options["teacher_kind"] = options.pop("teacher")
    try:
        unit = log_base(base)
    except (TypeError, ValueError) as exc:
        raise EvalError(str(exc)) from None
    with contextlib.ExitStack() as files:    # each file closed whatever happens
        logits = files.enter_context(
            _NpyReader(logits_path, "probabilities" if probabilities else "logits"))
        targets = files.enter_context(
            _NpyReader(targets_path, "teacher" if loss == "kl" else "targets"))
        rows, classes = _layouts(loss, logits, targets, probabilities)
        logits.set_rows(rows)
        targets.set_rows(rows)
        soft = loss == "cross_entropy" and targets.dtype.kind == "f"
        ignored_class = options.get("ignore_index", _IGNORE_INDEX)
        step = chunk_rows or _default_chunk_rows(logits, targets)

        def chunk_loss(x: np.ndarray, t: np.ndarray) -> tuple[float, int, int]:
            """(loss sum, terms a mean counts, correct predictions) of one chunk."""
            correct: int | np.integer[Any]
            if loss == "cross_entropy":
                x = x.reshape(-1, cast(int, classes))      # an int for cross_entropy and kl
                if soft:
                    t = t.reshape(x.shape)
                    counted = len(x)
                    correct = np.count_nonzero(np.argmax(x, axis=1) == np.argmax(t, axis=1))
                else:
                    kept = t != ignored_class
                    counted = int(np.count_nonzero(kept))
                    correct = np.count_nonzero((np.argmax(x, axis=1) == t) & kept)
                total = _cross_entropy(
                    x, t, None, options.get("ignore_index", _IGNORE_INDEX), options.get(
                        "label_smoothing", 0.0), None, 0.0, "sum", -1, n_threads, False, None,
                    False, base, total_dtype=_TOTAL)
            elif loss == "bce":
                # p >= 0.5 exactly where the logit is >= 0.
                correct = np.count_nonzero((x >= (0.5 if probabilities else 0.0)) == (t >= 0.5))
                counted = x.size
                total = run_elementwise(
                    _BCE if probabilities else _BCE_WITH_LOGITS, x, t,
                    label_smoothing=options.get("label_smoothing", 0.0), reduction="sum",
                    base=base, n_threads=n_threads, return_grad=False, grad_out=None,
                    total_dtype=_TOTAL)
            else:
                x = x.reshape(-1, cast(int, classes))
                counted, correct = len(x), 0
                total = _kl_div_with_logits(
                    x, t.reshape(x.shape), options.get("teacher_kind", "probs"),
                    options.get("temperature", 1.0), True, "sum", -1, base, n_threads, False,
                    None, total_dtype=_TOTAL)
            return float(total), counted, int(correct)

        try:    # the options, by the loss function itself, on no rows
            chunk_loss(np.empty(0, logits.dtype), np.empty(0, targets.dtype))
        except (TypeError, ValueError, IndexError) as exc:
            raise EvalError(str(exc)) from None

        total, counted, correct, bytes_read = 0.0, 0, 0, 0
        began = time.perf_counter()
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            x, t = logits.read(start, stop), targets.read(start, stop)
            bytes_read += x.nbytes + t.nbytes
            try:
                part, part_counted, part_correct = chunk_loss(x, t)
            except (TypeError, ValueError, IndexError) as exc:
                raise EvalError(f"{exc} (in the chunk of rows {start}:{stop})") from None
            total += part
            counted += part_counted
            correct += part_correct
            if progress is not None:
                progress(stop, rows)
    seconds = time.perf_counter() - began

    mean = _ratio(total, counted)
    classification = loss != "kl"
    with np.errstate(over="ignore"):
        perplexity = float(np.exp(mean * unit)) if classification else None
    return EvalResult(
        loss_name=loss, reduction=reduction,
        loss=mean if reduction == "mean" else total,
        n=counted, rows=rows,
        ignored=rows - counted if loss == "cross_entropy" and not soft else 0,
        classes=classes, dtype=str(logits.dtype), base=base,
        accuracy=_ratio(correct, counted) if classification else None,
        perplexity=perplexity, seconds=seconds, bytes_read=bytes_read,
    )
