"""Train a small softmax classifier with fastloss, then distil it into a smaller one.

A complete, typed program over the public API (``mypy --strict examples/typed_usage.py``
passes; CI checks it): the cross-entropy's gradient written in place into a reused buffer,
softmax for predictions, a multi-label head with binary cross-entropy on logits,
distillation with ``kl_div_with_logits``, the predictive entropy, and ``n_threads``.
Run it with ``python examples/typed_usage.py`` (about a second).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

import fastloss

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.intp]


@dataclass
class Linear:
    """scores = x @ w + b."""

    w: Floats
    b: Floats

    @classmethod
    def zeros(cls, n_features: int, n_outputs: int) -> Linear:
        return cls(np.zeros((n_features, n_outputs), np.float32),
                   np.zeros(n_outputs, np.float32))

    def __call__(self, x: Floats) -> Floats:
        return x @ self.w + self.b

    def step(self, x: Floats, grad_scores: Floats, lr: float) -> None:
        """One gradient step given d(loss)/d(scores)."""
        self.w -= np.float32(lr) * (x.T @ grad_scores)
        self.b -= np.float32(lr) * grad_scores.sum(axis=0)


def make_data(n: int, n_features: int, n_classes: int, seed: int) -> tuple[Floats, Labels]:
    """Gaussian blobs, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, size=(n_classes, n_features)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=n).astype(np.intp)
    x = centres[labels] + rng.normal(size=(n, n_features)).astype(np.float32)
    return x, labels


def accuracy(model: Linear, x: Floats, labels: Labels, n_threads: int | None) -> float:
    probs = fastloss.softmax(model(x), n_threads=n_threads)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def train_classifier(x: Floats, labels: Labels, n_classes: int, *, steps: int,
                     lr: float, n_threads: int | None) -> tuple[Linear, list[float]]:
    """Full-batch gradient descent on the label-smoothed cross-entropy."""
    model = Linear.zeros(x.shape[1], n_classes)
    grad = np.empty((len(x), n_classes), np.float32)    # reused: no N x C allocation
    history: list[float] = []
    for _ in range(steps):
        loss, _ = fastloss.cross_entropy(model(x), labels, label_smoothing=0.05,
                                         grad_out=grad, n_threads=n_threads)
        model.step(x, grad, lr)
        history.append(float(loss))
    return model, history


def train_multilabel(x: Floats, labels: Labels, n_classes: int, *, steps: int,
                     lr: float) -> float:
    """One sigmoid per class (the one-hot labels as independent targets); returns the
    final loss in bits."""
    model = Linear.zeros(x.shape[1], n_classes)
    targets = fastloss.one_hot(labels, n_classes, dtype=np.float32)
    pos_weight = np.full(n_classes, n_classes - 1.0, np.float32)   # balance 1 vs C-1
    loss = np.inf
    for _ in range(steps):
        loss, grad = fastloss.binary_cross_entropy_with_logits(
            model(x), targets, pos_weight=pos_weight, return_grad=True, base=2)
        model.step(x, grad, lr)
    return float(loss)


def distil(teacher: Linear, x: Floats, *, temperature: float, steps: int,
           lr: float) -> Linear:
    """Fit a student on the teacher's softened logits, through 4 features of the input."""
    teacher_logits = teacher(x)
    x_small = np.ascontiguousarray(x[:, :4])
    student = Linear.zeros(4, teacher_logits.shape[1])
    for _ in range(steps):
        _, grad = fastloss.kl_div_with_logits(
            student(x_small), teacher_logits, teacher_kind="logits",
            temperature=temperature, return_grad=True)
        student.step(x_small, grad, lr)
    return student


def main() -> None:
    n_classes = 5
    x, labels = make_data(4096, 8, n_classes, seed=0)
    threads = 2 if fastloss.openmp_enabled() else None
    info = fastloss.build_info()
    print(f"fastloss {fastloss.__version__}: OpenMP {info['openmp']}, SIMD {info['simd']}")

    model, history = train_classifier(x, labels, n_classes, steps=60, lr=0.5,
                                      n_threads=threads)
    print(f"cross-entropy {history[0]:.3f} -> {history[-1]:.3f} nats, "
          f"accuracy {accuracy(model, x, labels, n_threads=1):.3f}")
    assert history[-1] < history[0]

    bits = train_multilabel(x, labels, n_classes, steps=60, lr=0.5)
    print(f"multi-label BCE with logits: {bits:.3f} bits")

    student = distil(model, x, temperature=2.0, steps=60, lr=0.5)
    student_acc = accuracy(student, np.ascontiguousarray(x[:, :4]), labels, n_threads=None)
    print(f"student (4 of 8 features): accuracy {student_acc:.3f}")

    entropy: Floats = fastloss.entropy_from_logits(model(x), base=2)
    print(f"mean predictive entropy {float(entropy.mean()):.3f} bits "
          f"(at most {np.log2(n_classes):.3f})")


if __name__ == "__main__":
    main()
