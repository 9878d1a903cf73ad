"""The figures of one evaluated run, drawn from its Results (and a few attacked images)."""

from pathlib import Path

import torch
from torch import nn

from advlab.figures import draw
from advlab.evaluation.robustness import adversarial_examples
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
