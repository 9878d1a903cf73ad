"""The seed study end to end, in one run, with one report.

    python -m advlab +experiment=seed_study

1. train the basic CNN on clean images (clean accuracy, confusion matrix, 64 images);
2. attack it with untargeted FGSM and PGD at each eps;
3. attack it with targeted FGSM and PGD toward one class (deer);
4. train it adversarially with FGSM at each training eps (alpha-mixed loss) and
   evaluate each defended model with FGSM *and* PGD.
Each model has its own folder (model.pt, results.json, figures); report.md puts our
numbers, with 95% intervals, beside the study's.
"""

import json
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from advlab.attacks.registry import build_attacks
from advlab.build import plain
from advlab.experiment import train_and_evaluate
from advlab.io import write_json, write_text
from advlab.results import CHECK_NAMES, WORST_CASE, Results

# The study's published figures, in percent.
STUDY = {
    "clean": 62.8,
    "fgsm": {0.0: 62.8, 0.001: 56.4, 0.01: 20.1, 0.1: 0.1},
    "pgd": {0.0: 62.8, 0.001: 56.4, 0.01: 12.6, 0.1: 0.0},
    "targeted": {"fgsm": {0.001: 8, 0.01: 23, 0.1: 59}, "pgd": {0.001: 8, 0.01: 33, 0.1: 100}},
    # training eps -> (natural accuracy, accuracy on FGSM-perturbed test images)
    "defense": {0.001: (62.3, 60.1), 0.01: (54.0, 81.8), 0.1: (24.9, 96.0)},
}


def defense_config(cfg: DictConfig, eps: float) -> DictConfig:
    """The study's defense at one training eps: the configured perturbation, weight alpha on clean loss."""
    variant = OmegaConf.merge(cfg, {"eps": float(eps), "alpha": cfg.study.defense_alpha})
    variant.perturbation = variant.study.defense_perturbation  # its ${eps} now reads the variant's eps
    variant.evaluation.target = None
    variant.evaluation.eps = sorted({*cfg.evaluation.eps, float(eps)})
    return variant


_DATA_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}


def run_seed_study(cfg: DictConfig, datamodule, run_dir: Path) -> dict:
    start = time.perf_counter()
    baseline = train_and_evaluate(cfg, datamodule, run_dir / "baseline", name="baseline", group=cfg.name)
    defenses = {}
    for eps in cfg.study.defense_eps:
        defenses[float(eps)] = train_and_evaluate(
            defense_config(cfg, eps), datamodule, run_dir / f"defense_eps{eps:g}", name=f"fgsm_defense_eps{eps:g}",
            group=cfg.name)
    seconds = time.perf_counter() - start
    summary = {
        "seconds": round(seconds, 1),
        "baseline": "baseline/results.json",
        "defenses": {f"{e:g}": f"defense_eps{e:g}/results.json" for e in defenses},
    }
    write_json(run_dir / "study.json", summary)
    report = render_report(cfg, baseline, defenses, seconds)
    write_text(run_dir / "report.md", report)
    print(report)
    print(f"report: {run_dir / 'report.md'}")
    return summary


def _pgd_steps(cfg: DictConfig) -> int:
    return build_attacks(plain(cfg.evaluation.attacks), norm=cfg.evaluation.norm)["pgd"].setting("steps")


def _study(value) -> str:
    return "-" if value is None else f"{value:g}%"


def render_report(cfg: DictConfig, baseline: Results, defenses: dict[float, Results], seconds: float) -> str:
    n = baseline.n_images
    rob = baseline.robustness
    fgsm, pgd, worst = (rob.by_eps(k) for k in ("fgsm", "pgd", WORST_CASE))
    lines = [
        "# Seed study: reproduction report",
        "",
        f"Test images: {n} (every accuracy is shown with its 95% Wilson interval). "
        f"Total time: {seconds / 60:.1f} min. Seed {cfg.seed}.",
        f"Training: {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size}, "
        f"{cfg.optimizer._target_.split('.')[-1]} lr {cfg.optimizer.lr}, {cfg.lr_schedule} schedule; "
        f"{cfg.data.val_size} training images held out for validation; "
        f"normalisation by the {_DATA_NAMES.get(cfg.data.get('dataset'), cfg.data.get('dataset') or 'CIFAR-10')} "
        "training set's mean/std inside the model, eps in [0, 1] pixel units.",
        "",
        "## 1. Basic model",
        "",
        "| | study | advlab |",
        "|---|---|---|",
        f"| clean test accuracy | {STUDY['clean']}% | {baseline.clean} |",
        "",
        "![64 test images](baseline/test_images.png)",
        "",
        "![confusion matrix](baseline/confusion_matrix.png)",
        "",
        "## 2-3. Untargeted attacks on the basic model: accuracy vs eps",
        "",
        f"PGD: {_pgd_steps(cfg)} steps of eps/4. 'worst case' counts an image as robust only if it "
        f"survives every evaluated attack ({', '.join(baseline.attacks)}).",
        "",
        "| eps | FGSM study | FGSM advlab | PGD study | PGD advlab | worst case advlab |",
        "|---|---|---|---|---|---|",
    ]
    for e in rob.eps:
        lines.append(f"| {e:g} | {_study(STUDY['fgsm'].get(e))} | {fgsm[e]} | "
                     f"{_study(STUDY['pgd'].get(e))} | {pgd[e]} | {worst[e]} |")
    lines += [
        "",
        "![accuracy vs eps](baseline/accuracy_vs_eps.png)",
        "",
        "![FGSM examples](baseline/examples_fgsm.png)",
        "",
        "![PGD examples](baseline/examples_pgd.png)",
        "",
    ]
    if baseline.targeted:
        tgt = baseline.targeted
        lines += [
            f"## 4. Targeted attacks toward '{tgt.target_name}': success rate vs eps",
            "",
            f"Success: the prediction becomes '{tgt.target_name}', counted over the "
            f"{tgt.success.rates['fgsm'][0].n} test images whose true class is another.",
            "",
            "| eps | FGSM study | FGSM advlab | PGD study | PGD advlab |",
            "|---|---|---|---|---|",
        ]
        tf, tp = tgt.success.by_eps("fgsm"), tgt.success.by_eps("pgd")
        for e in tgt.success.eps:
            lines.append(f"| {e:g} | {_study(STUDY['targeted']['fgsm'].get(e))} | {tf[e]} | "
                         f"{_study(STUDY['targeted']['pgd'].get(e))} | {tp[e]} |")
        lines += ["", "![targeted success](baseline/targeted_success_vs_eps.png)", ""]
    lines += [
        f"## 5. FGSM adversarial training (alpha = {cfg.study.defense_alpha:g})",
        "",
        "Each model is evaluated at its training eps. 'Perturbed' is the study's measure: accuracy on the test "
        "set after FGSM is applied to every image. It can exceed natural accuracy, and when it does the model "
        "has learned to read the label from the perturbation (label leaking, Kurakin et al. 2017) - a flag, "
        "not robustness. Robust accuracy counts an image only if it is correct clean and no attack fools it; "
        "the worst case over every evaluated attack (FGSM, PGD and, by default, AutoAttack-strength "
        "autoattack-fast; the full autoattack where a gradient-masking check warned) is the number that counts.",
        "",
        "| train eps | natural study | natural advlab | perturbed study | perturbed advlab | robust FGSM "
        "| robust PGD | robust worst case | flag |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e, res in defenses.items():
        f_e, p_e, w_e = res.robust("fgsm", e), res.robust("pgd", e), res.worst_case(e)
        pert = res.perturbed.at("fgsm", e)
        nat_s, pert_s = STUDY["defense"].get(e, (None, None))
        flag = "label leaking: perturbed > natural" if pert.value > res.clean.value else ""
        lines.append(f"| {e:g} | {_study(nat_s)} | {res.clean} | {_study(pert_s)} | "
                     f"{pert} | {f_e} | {p_e} | {w_e} | {flag} |")
    lines += ["", "Full accuracy-vs-eps curves of each defended model:", ""]
    lines += [f"![defense eps {e:g}](defense_eps{e:g}/accuracy_vs_eps.png)" for e in defenses]
    lines += ["", *checks_section({"baseline": baseline, **{f"FGSM-trained, eps {e:g}": r for e, r in defenses.items()}})]
    return "\n".join(lines)


def checks_section(models: dict[str, Results]) -> list[str]:
    """A PASS/WARN table of the evaluation checks per model, then the details of every WARN."""
    names = CHECK_NAMES
    lines = ["## Evaluation checks", "",
             "After Carlini et al. 2019 (docs/evaluation.md, 'Reading the evaluation'). A WARN means the robust "
             "accuracy above may come from the attack failing, not from robustness.", "",
             "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    details = []
    for model, res in models.items():
        by_name = {c.name: c.status for c in res.checks}
        lines.append(f"| {model} | " + " | ".join(by_name.get(n, "-") for n in names) + " |")
        details += [f"- {model}, {c.name}: {c.detail}" for c in res.checks if c.status == "WARN"]
    return lines + ([""] + details if details else []) + [""]


def rerender(run_dir: Path) -> Path:
    """Rebuild report.md of a finished study from its results files."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "study.json").read_text())
    baseline = Results.load(run_dir / summary["baseline"])
    defenses = {float(e): Results.load(run_dir / p) for e, p in summary["defenses"].items()}
    cfg = OmegaConf.create(baseline.config)
    return write_text(run_dir / "report.md", render_report(cfg, baseline, defenses, summary["seconds"]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m advlab.seed_study RUN_DIR   (rebuilds RUN_DIR/report.md)")
    print(rerender(Path(sys.argv[1])))
