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
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advlab.attacks.registry import build_attacks
from advlab.build import plain
from advlab.data import DATASETS
from advlab.experiment import train_and_evaluate
from advlab.io import write_json, write_text
from advlab.results import CHECK_NAMES, OPTIONAL_CHECKS, WORST_CASE, Results

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


def study_jobs(cfg: DictConfig) -> int:
    """How many of the study's four runs go side by side: study.jobs, or "auto": one per core on a CPU (up to
    the four; each run then gets cores // jobs torch threads), one at a time on a GPU. The seed CNN is too
    small for a second thread to speed it up much, so two runs on two cores take about half the time of two
    in a row."""
    jobs = cfg.study.jobs
    if jobs != "auto":
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"study.jobs must be an integer >= 1 or auto, got {jobs!r}")
        return jobs
    if torch.cuda.is_available() or cfg.trainer.accelerator not in ("auto", "cpu"):
        return 1
    return max(1, min(1 + len(cfg.study.defense_eps), _cores()))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_in_worker(cfg: dict, run_dir: str, name: str, group: str, threads: int) -> str:
    """One run of the study in a worker process: its own data module, threads and quiet output."""
    torch.set_num_threads(threads)
    os.environ["ADVLAB_QUIET"] = "1"  # progress bars of runs side by side would overwrite each other
    cfg = OmegaConf.create(cfg)
    cfg.trainer.enable_progress_bar = False
    start = time.perf_counter()
    train_and_evaluate(cfg, instantiate(cfg.data), Path(run_dir), name=name, group=group)
    print(f"seed study: {name} done in {time.perf_counter() - start:.0f} s ({threads} thread(s))", flush=True)
    return run_dir


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """A worker's initializer: a daemon thread that ends the worker when its parent is gone (killed, say), so a
    stopped study leaves no orphans training on. The parent's death re-parents the worker: getppid() changes."""
    def watch():
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def run_all(runs: list[tuple[DictConfig, Path, str]], datamodule, group: str, jobs: int) -> list[Results]:
    """Each (config, folder, name) trained and evaluated; with jobs > 1 in that many worker processes at once
    (spawned: a fresh interpreter each), the longest runs first."""
    if jobs <= 1:
        return [train_and_evaluate(cfg, datamodule, run_dir, name=name, group=group) for cfg, run_dir, name in runs]
    threads = max(1, _cores() // jobs)
    # Longest first, so the last ones fill the gaps: measured on 2 cores, the larger the eps the longer the run
    # (eps 0.1: 563 s, as its masking checks send it to the full AutoAttack; 0.01: 367; 0.001: 355; clean: 224).
    order = sorted(range(len(runs)), key=lambda i: -float(runs[i][0].eps or 0))
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {i: pool.submit(_run_in_worker, OmegaConf.to_container(runs[i][0], resolve=True),
                                  str(runs[i][1]), runs[i][2], group, threads) for i in order}
        return [Results.load(Path(futures[i].result()) / "results.json") for i in range(len(runs))]


def run_seed_study(cfg: DictConfig, datamodule, run_dir: Path) -> dict:
    start = time.perf_counter()
    runs = [(cfg, run_dir / "baseline", "baseline")]
    runs += [(defense_config(cfg, eps), run_dir / f"defense_eps{eps:g}", f"fgsm_defense_eps{eps:g}")
             for eps in cfg.study.defense_eps]
    baseline, *defended = run_all(runs, datamodule, group=cfg.name, jobs=study_jobs(cfg))
    defenses = {float(eps): res for eps, res in zip(cfg.study.defense_eps, defended)}
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


def _title(dataset: str | None) -> str:
    """The dataset as the report names it (its DatasetInfo's display name)."""
    return DATASETS[dataset].title if dataset in DATASETS else dataset or DATASETS["cifar10"].title


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
        f"normalisation by the {_title(cfg.data.get('dataset'))} "
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
    names = [n for n in CHECK_NAMES + OPTIONAL_CHECKS if any(c.name == n for res in models.values() for c in res.checks)]
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
