"""W&B offline: a sweep's runs are named by their overrides, grouped by the sweep, and the offline
run directory holds the accuracy-vs-eps table with the numbers of results.json, and the figures."""

import json

from test_cli import SMOKE, advlab_cli


def test_offline_wandb_run_holds_the_table_and_figures(cifar_root, tmp_path):
    proc = advlab_cli("-m", "+experiment=fgsm_defense", *SMOKE, "logger=wandb", "eps=0.01", "alpha=0.5",
                      f"hydra.sweep.dir={tmp_path}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = tmp_path / "0"
    results = json.loads((job / "results.json").read_text())
    (run,) = (job / "wandb").glob("offline-run-*")
    (table_file,) = (run / "files" / "media" / "table" / "eval").glob("accuracy_vs_eps_[0-9]*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["attack", "eps", "accuracy", "ci95_low", "ci95_high", "n"]
    logged = {(attack, eps): (value, n) for attack, eps, value, _, _, n in table["data"]}
    rob = results["robustness"]
    for attack, rates in rob["accuracy"].items():
        for eps, rate in zip(rob["eps"], rates):
            assert logged[(attack, eps)] == (rate["value"], rate["n"])
    images = {p.name.split("_1_")[0] for p in (run / "files" / "media" / "images" / "figures").glob("*.png")}
    assert {"accuracy_vs_eps", "confusion_matrix", "test_images", "examples_fgsm", "examples_pgd"} <= images
    # the run's name carries its overrides and its group is the sweep folder (both in the run record)
    record = next(run.glob("run-*.wandb")).read_bytes()
    assert b"fgsm_defense eps=0.01 alpha=0.5" in record
    assert tmp_path.name.encode() in record
