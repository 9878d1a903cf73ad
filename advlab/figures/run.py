"""The figures of one evaluated run, drawn from its Results (and a few attacked images)."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.evaluation.record import col
from advlab.evaluation.robustness import adversarial_examples
from advlab.figures import draw
from advlab.results import Results


def write_figures(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, results: Results, attacks: dict,
                  run_dir: Path, class_names, num_examples: int, title: str = "") -> dict[str, str]:
    """PNG files in run_dir; returns {figure key: file name}."""
    figures = {}
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:64]
    figures["test_images"] = draw.image_grid(images[pick], labels[pick], class_names, run_dir / "test_images.png")
    figures["confusion_matrix"] = draw.confusion_matrix(
        results.row_percent(), class_names, run_dir / "confusion_matrix.png",
        title=f"{title} confusion matrix, test (rows sum to 100%)".strip())
    if attacks:
        figures["accuracy_vs_eps"] = draw.rate_curves(
            results.eps, results.robustness.rates, run_dir / "accuracy_vs_eps.png",
            ylabel="accuracy (%)", title=f"{title} accuracy under attack".strip(), norm=results.norm)
        x, y = images[:num_examples], labels[:num_examples]
        for name, rows in adversarial_examples(model, x, y, results.eps, attacks).items():
            figures[f"examples_{name}"] = draw.adversarial_examples(
                rows, y, class_names, run_dir / f"examples_{name}.png",
                title=f"{title} {name.upper()}: prediction and confidence per eps (red = wrong)".strip())
    if results.per_image is not None:
        figures.update(_per_image_figures(images, results, run_dir, class_names, title))
    if results.convergence:
        figures["convergence"] = draw.convergence(results.convergence, run_dir / "convergence.png", title=title)
    curve = (results.training or {}).get("curve")
    if curve and curve["points"]:
        figures["time_to_robustness"] = draw.time_to_robustness(
            {"advlab": curve["points"]}, run_dir / "time_to_robustness.png", title=title, eps=curve["eps"])
    if results.targeted:
        t = results.targeted
        figures["targeted_success_vs_eps"] = draw.rate_curves(
            t.success.eps, t.success.rates, run_dir / "targeted_success_vs_eps.png", ylabel="success rate (%)",
            title=f"{title} targeted -> {t.target_name}".strip(), norm=results.norm)
    return {key: Path(path).name for key, path in figures.items()}


def _per_image_figures(images: torch.Tensor, results: Results, run_dir: Path, class_names, title: str) -> dict:
    """What only the per-image record shows: robust accuracy per class (one panel per eps), a gallery of the
    images no attack broke and of those only the last (strongest) attack broke, with the attack that did, and the
    distribution of the minimum-norm attacks' distances to the boundary when one ran."""
    record, figures = results.per_image, {}
    label = record.columns["label"]
    eps = [e for e in record.eps if e > 0]
    if eps and len(class_names) == len(results.confusion):
        per_eps = {e: [100 * record.worst(e)[label == c].mean() if (label == c).any() else 0.0
                       for c in range(len(class_names))] for e in eps}
        figures["robust_by_class"] = draw.class_bars(per_eps, class_names, run_dir / "robust_by_class.png",
                                                     title=f"{title} robust accuracy per class".strip())
    if eps:
        e = eps[-1]
        index, worst, broken = record.columns["index"], record.worst(e), record.columns[col("broken_by", None, e)]
        strongest = record.attacks[-1]
        robust = np.nonzero(worst)[0][:8]
        only = [i for i in np.nonzero(broken == strongest)[0]
                if all(record.survived(a, e)[i] == 1 for a in record.attacks[:-1] if a in record.complete)][:8]
        rows = [*robust, *only]
        if rows:
            captions = [f"{class_names[int(label[i])]}\nrobust" for i in robust]
            captions += [f"{class_names[int(label[i])]}\nbroken by {strongest}" for i in only]
            figures["gallery"] = draw.captioned_grid(
                [images[int(index[i])] for i in rows], captions, run_dir / "gallery.png",
                title=f"{title} at eps={e:g}: images no attack broke, and images only {strongest} broke".strip(),
                colors=["green"] * len(robust) + ["red"] * len(only))
    distances = {a: record.columns[col("min_norm", a)] for a in record.min_norm_attacks()}
    if distances:
        figures["min_norm_distances"] = draw.distance_histogram(distances, run_dir / "min_norm_distances.png",
                                                                results.norm, title=title)
    return figures

