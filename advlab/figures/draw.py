"""Figures of a run, written as PNG files (atomically) with matplotlib's Agg backend."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from advlab.io import atomic_path  # noqa: E402
from advlab.stats import Rate  # noqa: E402


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
    """Rows are true classes and sum to 100%.

    Up to 20 classes every cell shows its value; beyond, the colours alone (a 100-class
    matrix has 10,000 cells), the figure grows with the classes and the tick labels shrink."""
    m = np.asarray(row_percent)
    n = len(class_names)
    side = min(max(6.0, 0.12 * n), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=100)
    small = {} if n <= 20 else {"fontsize": max(3.0, 8 - n / 25)}
    ax.set_xticks(range(n), class_names, rotation=45 if n <= 20 else 90, ha="right" if n <= 20 else "center", **small)
    ax.set_yticks(range(n), class_names, **small)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 20:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 50 else "black")
    fig.colorbar(im, ax=ax, label="% of the true class")
    ax.set_title(title or "Confusion matrix (rows sum to 100%)")
    return _save(fig, path)


def rate_curves(eps: Sequence[float], curves: dict[str, Sequence[Rate]], path, ylabel: str, title: str,
                norm: str = "linf"):
    """One line per curve with its 95% interval as a band; x axis symlog so eps = 0 shows."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rates in curves.items():
        values = [100 * r.value for r in rates]
        low = [100 * r.ci95[0] for r in rates]
        high = [100 * r.ci95[1] for r in rates]
        ax.plot(eps, values, marker="o", label=name)
        ax.fill_between(eps, low, high, alpha=0.2)
    positive = [e for e in eps if e > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xlabel(f"eps ({'L-inf' if norm == 'linf' else 'L2'}, pixel units)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    n = next(iter(curves.values()))[0].n if curves else 0
    ax.set_title(f"{title} (n = {n}, 95% CI bands)")
    return _save(fig, path)


def time_to_robustness(curves: dict[str, Sequence[dict]], path, title: str = "", eps: float | None = None):
    """Accuracy against training wall time, airbench-style: per curve (a label -> its points, each with
    `seconds`, `clean` and `robust` Rate dicts) robust accuracy as a solid line and clean as a dashed one
    in the same colour, each with its 95% interval as a band."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (label, points) in enumerate(curves.items()):
        minutes = [p["seconds"] / 60 for p in points]
        for key, style in (("robust", "-"), ("clean", "--")):
            rates = [Rate.from_dict(p[key]) for p in points]
            ax.plot(minutes, [100 * r.value for r in rates], style, marker="o", color=f"C{i}", label=f"{label}: {key}")
            ax.fill_between(minutes, [100 * r.ci95[0] for r in rates], [100 * r.ci95[1] for r in rates],
                            color=f"C{i}", alpha=0.15)
    ax.set_xlabel("training wall time (minutes)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    n = next((p["robust"]["n"] for points in curves.values() for p in points), 0)
    at = f" at eps {eps:.4g}" if eps is not None else ""
    ax.set_title(f"{title} time to robustness{at} (n = {n}, 95% CI bands)".strip())
    return _save(fig, path)


def _unit(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255 if image.dtype == torch.uint8 else image.float()


def _amplified(deltas: list[torch.Tensor]) -> tuple[list[np.ndarray], float]:
    """Perturbations as images around gray 0.5, scaled by k so the largest |delta| of the row maps to 0.5.

    One k per row (not per image) keeps the images of a row comparable; k is returned
    so the figure can say it. k = 0 when nothing moved (the panel stays gray).
    """
    peak = max(float(d.abs().max()) for d in deltas)
    k = 0.5 / peak if peak > 0 else 0.0
    return [(0.5 + k * d).clamp(0, 1).permute(1, 2, 0).cpu().numpy() for d in deltas], k


def adversarial_examples(rows: Sequence[tuple], labels: Sequence[int], class_names: Sequence[str], path,
                         title: str, originals: torch.Tensor | None = None):
    """Rows: (eps, x_adv, pred, confidence), one per eps; eps = 0 first is the original.

    Each image gets two columns: the (adversarial) image titled with its prediction and
    confidence (red = wrong), and, on attacked rows, its perturbation x_adv - x amplified
    for visibility (gray = unchanged; the row's amplification k is in the panel title).
    The originals are rows[0] when its eps is 0, else `originals`; without either, the
    perturbation columns are left out.
    """
    if originals is None and rows[0][0] == 0:
        originals = rows[0][1]
    columns = len(rows[0][1])
    pair = 2 if originals is not None else 1
    # A narrow spacer column between images keeps each image next to its own perturbation.
    ratios = ([1] * pair + [0.15]) * columns
    fig, axes = plt.subplots(len(rows), len(ratios), figsize=((1.2 * pair + 0.18) * columns, 1.6 * len(rows) + 0.4),
                             squeeze=False, gridspec_kw={"width_ratios": ratios, "wspace": 0.08})
    for ax in axes.flat:
        ax.axis("off")
    for r, (eps, images, preds, confs) in enumerate(rows):
        attacked = originals is not None and eps > 0
        if attacked:
            deltas, k = _amplified([_unit(images[c]) - _unit(originals[c]) for c in range(columns)])
        for c in range(columns):
            ax = axes[r, c * (pair + 1)]
            ax.axis("on")
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
            if attacked:
                ax = axes[r, c * (pair + 1) + 1]
                ax.imshow(deltas[c], interpolation="nearest")
                ax.set_title(f"perturbation ×{k:.3g}" if k else "no change", fontsize=6.5)
    if originals is not None:
        title = f"{title}\nperturbation = 0.5 + k (x_adv - x), k per row so the largest |x_adv - x| maps to 0.5"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def heatmap(panels: dict[str, Sequence[Sequence[float]]], row_labels: Sequence[str], col_labels: Sequence[str],
            path, title: str, xlabel: str, ylabel: str, value_label: str = "accuracy (%)", vmax: float = 100.0):
    """One panel per key (e.g. per attack), all on one colour scale [0, vmax]; each cell shows its value.

    Panels wrap onto several rows when side by side they would be wider than a page
    (the figure is read at about 12 inches). NaN cells (a combination that was not
    run) are left blank and marked "-".
    """
    rows, cols = len(row_labels), len(col_labels)
    label_width = 0.09 * max(map(len, row_labels)) + 0.6
    panel_width = 0.6 * cols + 0.3
    per_line = max(1, min(len(panels), int((12 - label_width) // panel_width)))
    lines = -(-len(panels) // per_line)
    fig, axes = plt.subplots(lines, per_line, squeeze=False, layout="constrained",
                             figsize=(label_width + panel_width * per_line + 1.0, (1.0 + 0.4 * rows) * lines + 0.4))
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    image = None
    for n, (ax, (name, values)) in enumerate(zip(axes.flat, panels.items())):
        m = np.asarray(values, dtype=float).reshape(rows, cols)
        image = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(cols), col_labels, rotation=45 if cols > 6 else 0)
        first = n % per_line == 0  # row labels only on the left of each line of panels
        ax.set_yticks(range(rows), row_labels if first else [""] * rows)
        if first:
            ax.set_ylabel(ylabel)
        ax.set_xlabel(xlabel)
        ax.set_title(name, fontsize=10)
        for i in range(rows):
            for j in range(cols):
                ok = np.isfinite(m[i, j])
                ax.text(j, i, f"{m[i, j]:.1f}" if ok else "-", ha="center", va="center", fontsize=8,
                        color="black" if ok and m[i, j] > 0.6 * vmax else "white" if ok else "gray")
    fig.colorbar(image, ax=axes.ravel().tolist(), label=value_label, fraction=0.05, pad=0.02)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def convergence(trace: dict, path, title: str = ""):
    """Loss and margin against the iteration for each traced attack (median, quartile band, a few single
    images thin), and one image's path through the eps-ball in the plane of two directions."""
    attacks = list(trace["attacks"])
    fig, axes = plt.subplots(2, len(attacks) + 1, figsize=(4.2 * (len(attacks) + 1), 6.4), squeeze=False)
    for col, name in enumerate(attacks):
        a = trace["attacks"][name]
        for row, (key, label) in enumerate((("loss", "cross-entropy (attack loss)"),
                                            ("margin", "margin: true - best other logit"))):
            ax, s = axes[row, col], a[key]
            steps = range(len(s["median"]))
            for single in s["singles"]:
                ax.plot(steps, single, lw=0.6, alpha=0.5, color="grey")
            ax.fill_between(steps, s["q25"], s["q75"], alpha=0.25, label="quartiles")
            ax.plot(steps, s["median"], lw=2, label="median")
            if key == "margin":
                ax.axhline(0, color="red", lw=0.8, ls="--")
            ax.set_xlabel("iteration")
            ax.set_ylabel(label)
            note = " (still falling: more steps)" if a["still_falling"] and key == "margin" else ""
            ax.set_title(f"{name.upper()}{note}", fontsize=9)
            ax.grid(alpha=0.3)
        axes[0, col].legend(fontsize=7)
    p = trace["path"]
    ax = axes[0, -1]
    ax.plot(p["boundary_u"], p["boundary_v"], color="black", lw=1, label=f"{trace['norm']} ball, eps={trace['eps']:.3g}")
    ax.plot(p["u"], p["v"], marker=".", ms=4, lw=1, label="PGD iterates")
    ax.plot(p["u"][:1], p["v"][:1], "go", label="start")
    ax.plot(p["u"][-1:], p["v"][-1:], "rs", label="end")
    ax.set_aspect("equal")
    ax.set_xlabel("along the final perturbation")
    ax.set_ylabel("along the first step (orthogonal part)")
    ax.set_title("one image's path through the ball", fontsize=9)
    ax.legend(fontsize=7)
    axes[1, -1].axis("off")
    fig.suptitle(f"{title} attack convergence at eps={trace['eps']:.3g}, n = {trace['n']} images".strip())
    fig.tight_layout()
    return _save(fig, path)


def class_bars(per_eps: dict[float, Sequence[float]], class_names: Sequence[str], path, title: str = ""):
    """Robust accuracy (%) per class, one panel per eps, the classes on the x axis."""
    n = len(class_names)
    fig, axes = plt.subplots(len(per_eps), 1, squeeze=False, figsize=(max(6.0, 0.32 * n + 1.5), 2.2 * len(per_eps) + 0.6))
    for ax, (eps, values) in zip(axes[:, 0], per_eps.items()):
        ax.bar(range(n), values, color="C0")
        ax.set_xticks(range(n), class_names if n <= 30 else [""] * n, rotation=45 if n <= 30 else 0, ha="right",
                      fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"eps={eps:g}\n% robust", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "Robust accuracy per class (worst case over every attack)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def captioned_grid(images: Sequence[torch.Tensor], captions: Sequence[str], path, title: str = "",
                   columns: int = 8, colors: Sequence[str] | None = None):
    """Images with a caption each (a colour each, when given), `columns` per row."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.45 * columns, 1.75 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image, caption) in enumerate(zip(axes.flat, images, captions)):
        ax.imshow(_hwc(image), interpolation="nearest")
        ax.set_title(caption, fontsize=6.5, color=(colors[i] if colors else "black"))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def distance_histogram(distances: dict[str, np.ndarray], path, norm: str = "linf", title: str = ""):
    """The distribution of each minimum-norm attack's distances to the decision boundary (finite ones; 0 =
    misclassified, none found = not drawn)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, d in distances.items():
        d = np.asarray(d, dtype=float)
        ax.hist(d[np.isfinite(d) & (d > 0)], bins=40, alpha=0.6, label=f"{name} (n = {int((np.isfinite(d) & (d > 0)).sum())})")
    ax.set_xlabel(f"distance to the boundary ({'L-inf' if norm == 'linf' else 'L2'}, pixel units)")
    ax.set_ylabel("images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Minimum-norm distances to the decision boundary")
    return _save(fig, path)
