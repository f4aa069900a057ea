"""fastloss: fast CPU classification losses and their gradients for NumPy arrays.

Typed Cython kernels, parallel with OpenMP, behind a validated Python API. Functions
accept float32 and float64 arrays, compute in the input's dtype with double accumulators,
and follow ``torch.nn.functional`` where PyTorch has the same function.
"""

from fastloss._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from fastloss._cross_entropy import cross_entropy
from fastloss._distill import kl_div_with_logits
from fastloss._encoding import one_hot
from fastloss._entropy import entropy, entropy_from_logits
from fastloss._focal import focal_loss, sigmoid_focal_loss
from fastloss._kernels._kernels import build_info, openmp_enabled
from fastloss._kl import kl_div
from fastloss._softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "build_info",
    "cross_entropy",
    "entropy",
    "entropy_from_logits",
    "focal_loss",
    "kl_div",
    "kl_div_with_logits",
    "log_softmax",
    "logsumexp",
    "one_hot",
    "openmp_enabled",
    "sigmoid_focal_loss",
    "softmax",
]
