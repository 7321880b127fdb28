"""What a training run leaves behind for people: test metrics and pictures worth looking at."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digitserve.contract import NUM_CLASSES  # noqa: E402

LIBRARIES = ("digitserve", "tensorflow", "keras", "numpy")


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """Test accuracy and loss, per-class precision and recall, and the confusion matrix."""
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion)
    predicted_counts, actual_counts = confusion.sum(axis=0), confusion.sum(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "test_accuracy": round(float((predicted == labels).mean()), 6),
        "test_loss": round(float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()), 6),
        "test_images": int(len(labels)),
        "per_class": {
            str(digit): {
                "precision": round(float(true_positives[digit] / max(predicted_counts[digit], 1)), 6),
                "recall": round(float(true_positives[digit] / max(actual_counts[digit], 1)), 6),
                "support": int(actual_counts[digit]),
            }
            for digit in range(NUM_CLASSES)
        },
        "confusion_matrix": confusion.tolist(),
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def plot_learning_curves(history: dict[str, list[float]], path: Path) -> None:
    """Loss and accuracy per epoch, training against validation when there is one."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = range(1, len(history[metric]) + 1)
        axis.plot(epochs, history[metric], marker="o", label="training")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        axis.set(xlabel="epoch", ylabel=metric, title=metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion_matrix(confusion: list[list[int]], path: Path) -> None:
    """Counts of true (rows) against predicted (columns) digits on the test set."""
    matrix = np.asarray(confusion)
    figure, axis = plt.subplots(figsize=(7, 6))
    # Log colour scale: the diagonal dwarfs the mistakes, which are what one looks for.
    shade = np.log1p(matrix)
    image = axis.imshow(shade, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shade[row, column] > shade.max() * 0.6 else "black"
        axis.text(column, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    axis.set(xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES),
             xlabel="predicted", ylabel="true", title="confusion matrix (test set)")
    figure.colorbar(image, ax=axis, label="log(1 + count)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_misclassified(
    images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: Path, limit: int = 36
) -> None:
    """The most confidently wrong test digits, each titled predicted/true and its confidence."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:limit]
    columns = 6
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, wrong, strict=False):
        axis.imshow(images[index], cmap="gray")
        axis.set_title(
            f"{predicted[index]}/{labels[index]} ({probabilities[index, predicted[index]]:.0%})",
            fontsize=9,
        )
    figure.suptitle(f"misclassified test digits, predicted/true ({len(wrong)} shown)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
