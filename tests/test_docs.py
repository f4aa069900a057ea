"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import runpy
from pathlib import Path

import pytest

import fastloss._binary
import fastloss._cross_entropy
import fastloss._distill
import fastloss._encoding
import fastloss._entropy
import fastloss._kl
import fastloss._softmax

MODULES = [fastloss._softmax, fastloss._cross_entropy, fastloss._distill, fastloss._entropy,
           fastloss._encoding, fastloss._binary, fastloss._kl]


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
