"""Figures of a run, written as PNG files (atomically) with matplotlib's Agg backend."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from advlab.io import atomic_path  # noqa: E402


def _save(fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def _hwc(image: torch.Tensor) -> np.ndarray:
    image = image.float() / 255 if image.dtype == torch.uint8 else image
    return image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def image_grid(images: torch.Tensor, labels: Sequence[int], class_names: Sequence[str], path, columns: int = 8):
    """Images with their labels, `columns` per row (the study shows 64 random test images)."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(_hwc(image), interpolation="nearest")
        ax.set_title(class_names[int(label)], fontsize=8)
    return _save(fig, path)


def confusion_matrix(row_percent: Sequence[Sequence[float]], class_names: Sequence[str], path, title: str = ""):
    """Rows are true classes and sum to 100%."""
    m = np.asarray(row_percent)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > 50 else "black")
    fig.colorbar(im, ax=ax, label="% of the true class")
    ax.set_title(title or "Confusion matrix (rows sum to 100%)")
    return _save(fig, path)


def rate_curves(eps: Sequence[float], curves: dict[str, Sequence[dict]], path, ylabel: str, title: str):
    """One line per curve with its 95% interval as a band; x axis symlog so eps = 0 shows."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rates in curves.items():
        values = [100 * r["value"] for r in rates]
        low = [100 * r["ci95"][0] for r in rates]
        high = [100 * r["ci95"][1] for r in rates]
        ax.plot(eps, values, marker="o", label=name)
        ax.fill_between(eps, low, high, alpha=0.2)
    positive = [e for e in eps if e > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlabel("eps (L-inf, pixel units)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    n = next(iter(curves.values()))[0]["n"] if curves else 0
    ax.set_title(f"{title} (n = {n}, 95% CI bands)")
    return _save(fig, path)


def adversarial_examples(rows: Sequence[tuple], labels: Sequence[int], class_names: Sequence[str], path,
                         title: str):
    """Rows: one eps each (eps = 0 is the original); columns: images, titled with prediction and confidence."""
    columns = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.7 * len(rows)), squeeze=False)
    for r, (eps, images, preds, confs) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.imshow(_hwc(images[c]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            wrong = int(preds[c]) != int(labels[c])
            text = f"{class_names[int(preds[c])]} {100 * float(confs[c]):.0f}%"
            if r == 0:
                text = f"label: {class_names[int(labels[c])]}\n{text}"
            ax.set_title(text, fontsize=7, color="red" if wrong else "black")
            if c == 0:
                ax.set_ylabel("original" if eps == 0 else f"eps={eps:g}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)

