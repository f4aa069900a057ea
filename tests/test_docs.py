"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import runpy
import shlex
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # Python 3.10
    import tomli as tomllib

import pytest

import fastloss._binary
import fastloss._cross_entropy
import fastloss._distill
import fastloss._encoding
import fastloss._entropy
import fastloss._kl
import fastloss._softmax
from fastloss import _cli

MODULES = [fastloss._softmax, fastloss._cross_entropy, fastloss._distill, fastloss._entropy,
           fastloss._encoding, fastloss._binary, fastloss._kl, fastloss._focal]


@pytest.mark.parametrize("module", MODULES,
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.skipif(not (EXAMPLES / "typed_usage.py").exists(),
                    reason="examples/ is not beside these tests")
def test_typed_usage_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "typed_usage.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "cross-entropy" in out and "accuracy" in out and "bits" in out


# --- the code blocks of the README and docs/ -----------------------------------------

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """(first line, language, text) of each fenced block of a Markdown file."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            if language is None:
                language, start, lines = line[3:].strip() or "text", number + 1, []
            else:
                blocks.append((start, language, "\n".join(lines) + "\n"))
                language = None
        elif language is not None:
            lines.append(line)
    assert language is None, f"{path.name}: a code block is never closed"
    return blocks


def _cases(language: str) -> list:
    cases = []
    for path in DOCUMENTS:
        if not path.exists():
            continue
        cases += [pytest.param(path, line, text, id=f"{path.name}:{line}")
                  for line, kind, text in code_blocks(path) if kind == language]
    return cases


needs_docs = pytest.mark.skipif(not (ROOT / "README.md").exists(),
                                reason="the README is not beside these tests")


@needs_docs
@pytest.mark.parametrize("path, line, text", _cases("python"))
def test_python_blocks_run(path, line, text, tmp_path, monkeypatch):
    # Each block runs as written, in an empty folder: a script in a fresh namespace; a
    # session (>>>) as doctest examples, after the sessions before it on the same page
    # (they share a namespace, as a reader's interpreter would). A block that needs an
    # optional package (PyTorch, threadpoolctl) is skipped where it is absent.
    monkeypatch.chdir(tmp_path)
    try:
        if ">>> " not in text:
            exec(compile(text, f"{path.name}:{line}", "exec"), {"__name__": "__main__"})
            return
        namespace: dict = {}
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        for start, kind, block in code_blocks(path):
            if kind != "python" or ">>> " not in block or start > line:
                continue
            test = doctest.DocTestParser().get_doctest(block, namespace, path.name,
                                                       str(path), start)
            runner.run(test, clear_globs=False)
            namespace = test.globs              # (a DocTest copies the names it is given)
            assert runner.failures == 0, f"{path.name}:{start}: an example failed"
    except ModuleNotFoundError as exc:
        if exc.name in ("torch", "threadpoolctl"):
            pytest.skip(f"{path.name}:{line} needs {exc.name}")
        raise


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell block, continuation lines joined and comments dropped,
    each split into words (``a && b`` gives two commands)."""
    joined = text.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1:]
    return commands


@needs_docs
@pytest.mark.parametrize("path, line, text", _cases("bash"))
def test_shell_blocks_name_what_exists(path, line, text):
    # Commands of fastloss parse as written (the same parser as the command itself), the
    # files and extras they name exist; installs and builds are not run here (CI runs
    # them), but what they install must be in pyproject.toml.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for words in shell_commands(text):
        if words[:3] == ["python", "-m", "fastloss"] or words[:1] == ["fastloss"]:
            argv = words[3:] if words[0] == "python" else words[1:]
            _cli.build_parser().parse_args(argv)
        elif words[:4] == ["python", "-m", "pip", "install"]:
            for spec in words[4:]:
                if spec.startswith(".["):
                    assert set(spec[2:-1].split(",")) <= set(extras), (spec, line)
        elif words[:3] == ["python", "-m", "pytest"]:
            for word in words[3:]:
                if (not word.startswith("-") and "/" in word) or word == "benchmarks":
                    assert (ROOT / word.split("::")[0]).exists(), (word, line)
