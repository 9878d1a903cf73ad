"""W&B: log_results renders a Results object (tables with intervals, the summary numbers, the figures); offline,
a sweep's runs are named by their overrides, grouped by the sweep, and the offline run directory holds the
accuracy-vs-eps table with the numbers of results.json, the figures, and model.pt and report.html as artifacts.
The logger and callbacks groups: CSV curves, several loggers at once, any _target_ callback, the best checkpoint."""

import base64
import csv
import hashlib
import json
import re
import struct
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from helpers import SMOKE, advlab_cli, config

from advlab import tracking
from advlab.figures import draw as plots
from advlab.results import Curves, Results, Targeted
from advlab.stats import Rate

EPS = [0.0, 0.01, 0.03]
COLUMNS = ["attack", "eps", "accuracy", "ci95_low", "ci95_high", "n"]


class FakeRun:
    """What log_results uses of a wandb run: log() and summary."""

    def __init__(self):
        self.logged, self.summary = [], {}

    def log(self, payload):
        self.logged.append(payload)


class FakeLogger(WandbLogger):
    """A WandbLogger (log_results picks those among the run's loggers) whose run is a FakeRun."""

    def __init__(self):
        self._fake_run = FakeRun()

    @property
    def experiment(self):
        return self._fake_run


def synthetic_results() -> Results:
    return Results(n_images=50, clean=Rate(40, 50), confusion=[[1, 0], [0, 1]],
                   robustness=Curves(EPS, {"fgsm": [Rate(k, 50) for k in (40, 33, 20)],
                                           "worst_case": [Rate(k, 50) for k in (40, 30, 10)]}),
                   targeted=Targeted(4, "deer", Curves(EPS, {"pgd": [Rate(k, 45) for k in (0, 5, 20)]})))


def test_log_results_renders_the_results_object(tmp_path):
    results = synthetic_results()
    figure = plots.rate_curves(EPS, results.robustness.rates, tmp_path / "accuracy_vs_eps.png", "accuracy (%)", "t")
    logger = FakeLogger()
    tracking.log_results([CSVLogger(tmp_path), logger], results, {"accuracy_vs_eps": figure})
    (payload,) = logger.experiment.logged
    table = payload["eval/accuracy_vs_eps"]
    assert table.columns == COLUMNS
    assert table.data == [[name, e, r.value, *r.ci95, r.n] for name, rates in results.robustness.rates.items()
                          for e, r in zip(EPS, rates)]
    targeted = payload["eval/targeted_success"]
    assert targeted.columns == ["attack", "eps", "success_rate", "ci95_low", "ci95_high", "n"]
    assert [row[2] for row in targeted.data] == [0.0, 5 / 45, 20 / 45] and {row[5] for row in targeted.data} == {45}
    assert {"eval/accuracy_vs_eps_plot", "figures/accuracy_vs_eps"} <= set(payload)
    summary = logger.experiment.summary
    assert summary["eval/clean_acc"] == 0.8 and summary["eval/n_images"] == 50
    assert summary["eval/fgsm_acc@0.01"] == 33 / 50 and summary["eval/worst_case_acc@0.03"] == 10 / 50
    assert len(summary) == 2 + 2 * len(EPS)
    tracking.log_results(None, results, {})  # logger=none: nothing to do


def test_log_results_writes_the_objective_under_a_stable_key():
    """A run with optimized_metric set: its value is summary["optimized_metric"], the metric a W&B sweep
    (sweeps/wandb.yaml) reads; without one, no such key."""
    logger = FakeLogger()
    tracking.log_results(logger, synthetic_results(), {}, objective=0.42)
    assert tracking.OBJECTIVE == "optimized_metric" and logger.experiment.summary[tracking.OBJECTIVE] == 0.42
    logger = FakeLogger()
    tracking.log_results(logger, synthetic_results(), {})
    assert tracking.OBJECTIVE not in logger.experiment.summary


def _wandb_records(path):
    """The protobuf records of an offline run file (run-*.wandb): W&B's LevelDB-style log of 32 KiB blocks,
    after a 7-byte header; each chunk is crc (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, records = path.read_bytes(), 32768, 7, [], []
    assert data.startswith(b":W&B")
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # a block's zero padding
            pos += left
            continue
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


def _md5_b64(path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.mark.slow  # trains, evaluates and logs to W&B (22 s)
def test_offline_wandb_run_holds_the_table_and_figures(cifar_root, tmp_path):
    proc = advlab_cli("-m", "+experiment=fgsm_defense", *SMOKE, "logger=wandb", "eps=0.01", "alpha=0.5",
                      "optimized_metric={clean:0.5,worst_case@0.01:0.5}",
                      f"hydra.sweep.dir={tmp_path}", env_extra={"ADVLAB_DATA": str(cifar_root),
                                                              "WANDB_DATA_DIR": str(tmp_path / "wandb_data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = tmp_path / "0"
    results = Results.load(job / "results.json")
    (run,) = (job / "wandb").glob("offline-run-*")
    (table_file,) = (run / "files" / "media" / "table" / "eval").glob("accuracy_vs_eps_[0-9]*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == COLUMNS
    logged = {(attack, eps): (value, low, high, n) for attack, eps, value, low, high, n in table["data"]}
    for attack, rates in results.robustness.rates.items():
        for eps, rate in zip(results.eps, rates):
            assert logged[(attack, eps)] == pytest.approx((rate.value, *rate.ci95, rate.n))
            assert logged[(attack, eps)][0] == rate.value and logged[(attack, eps)][3] == rate.n
    # W&B names a logged image KEY_STEP_HASH.png
    images = {re.sub(r"_\d+_[0-9a-f]+\.png$", "", p.name)
              for p in (run / "files" / "media" / "images" / "figures").glob("*.png")}
    assert {"accuracy_vs_eps", "confusion_matrix", "test_images", "examples_fgsm", "examples_pgd"} <= images
    # the run's objective is in its summary under the key a W&B sweep's metric names (sweeps/wandb.yaml)
    summary = {item.key: json.loads(item.value_json) for r in _wandb_records(next(run.glob("run-*.wandb")))
               if r.WhichOneof("record_type") == "summary" for item in r.summary.update if item.key}
    objective = 0.5 * results.clean.value + 0.5 * results.worst_case(0.01).value
    assert summary[tracking.OBJECTIVE] == pytest.approx(objective)
    assert summary["eval/clean_acc"] == results.clean.value
    # the run's name carries its overrides and its group is the sweep folder (both in the run record)
    record = next(run.glob("run-*.wandb")).read_bytes()
    assert b"fgsm_defense eps=0.01 alpha=0.5" in record
    assert tmp_path.name.encode() in record
    # model.pt and report.html are artifacts of the run: their manifests name the files with their md5 digests
    artifacts = {r.artifact.type: r.artifact for r in _wandb_records(next(run.glob("run-*.wandb")))
                 if r.WhichOneof("record_type") == "artifact"}
    assert {"model", "report"} <= set(artifacts)  # beside the run_table artifacts of the wandb.Tables
    run_id = run.name.rsplit("-", 1)[1]
    for kind, filename in (("model", "model.pt"), ("report", "report.html")):
        artifact = artifacts[kind]
        assert artifact.name == f"{kind}-{run_id}"
        assert json.loads(artifact.metadata)["clean"] == results.clean.value
        (entry,) = artifact.manifest.contents
        assert (entry.path, entry.size, entry.digest) == (filename, (job / filename).stat().st_size,
                                                          _md5_b64(job / filename))
        assert _md5_b64(Path(entry.local_path)) == entry.digest  # the file W&B uploads on `wandb sync`


@pytest.mark.parametrize("choice, loggers", [("logger=none", ["csv"]), ("logger=csv", ["csv"]),
                                             ("logger=many", ["csv", "wandb"]), ("logger=[csv,wandb]", ["csv", "wandb"]),
                                             ("~logger", [])])
def test_logger_group(choice, loggers, tmp_path):
    made = tracking.make_logger(config("+experiment=fgsm_defense", choice), tmp_path, "run")
    assert [type(lg).__name__ for lg in made] == [{"csv": "CSVLogger", "wandb": "WandbLogger"}[k] for k in loggers]
    assert all(lg.save_dir == str(tmp_path) for lg in made)


@pytest.mark.skipif(bool(find_spec("tensorboard") or find_spec("tensorboardX")), reason="tensorboard is installed")
def test_tensorboard_without_the_package_is_refused_up_front():
    from advlab.build import check_config
    from advlab.errors import UserError

    with pytest.raises(UserError, match=r"logger.tensorboard: TensorBoard is not installed \(pip install tensorboard\)"):
        check_config(config("+experiment=fgsm_defense", "logger=[csv,tensorboard]"))


def test_callbacks_group():
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

    from advlab.build import training_callbacks
    from advlab.callbacks import RobustGuard

    made = training_callbacks(config("+experiment=fgsm_defense", "guard.patience=3"))
    assert [type(c) for c in made] == [ModelCheckpoint, LearningRateMonitor, RobustGuard, TQDMProgressBar]
    assert made[3].refresh_rate == 10
    # the bar switched off: no bar callback (Lightning would refuse one)
    no_bar = training_callbacks(config("+experiment=fgsm_defense", "trainer.enable_progress_bar=false"))
    assert [type(c) for c in no_bar] == [ModelCheckpoint, LearningRateMonitor, RobustGuard]
    assert made[0].monitor == "val/adv_acc" and made[2].patience == 3  # robust validation on: the robust accuracy
    assert training_callbacks(config("+experiment=fgsm_defense", "eps=0"))[0].monitor == "val/acc"
    assert training_callbacks(config("callbacks=none")) == []
    (es,) = training_callbacks(config("callbacks=none", "+callbacks.es._target_=pytorch_lightning.callbacks.EarlyStopping",
                                      "+callbacks.es.monitor=auto"))
    assert isinstance(es, EarlyStopping) and es.monitor == "val/acc"
    with pytest.raises(ValueError, match=r"callbacks.x: .*NoSuchCallback"):
        training_callbacks(config("+callbacks.x._target_=pytorch_lightning.callbacks.NoSuchCallback"))


def test_csv_curves_a_command_line_callback_and_the_best_checkpoint(cifar_root, tmp_path):
    from advlab.classifier import AdversarialClassifier
    from advlab.training import train_model

    cfg = config("+experiment=fgsm_defense", *SMOKE, "logger=csv", f"data.root={cifar_root}", "trainer.max_epochs=2",
                 "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
                 "+callbacks.es._target_=pytorch_lightning.callbacks.EarlyStopping",
                 "+callbacks.es.monitor=val/acc", "+callbacks.es.mode=max", "+callbacks.es.patience=5")
    loggers = tracking.make_logger(cfg, tmp_path, "run")
    model, info = train_model(cfg, instantiate(cfg.data), tmp_path, loggers)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs = [row for row in rows if row["val/acc"]]
    assert [int(row["epoch"]) for row in epochs] == [0, 1]
    assert float(epochs[-1]["val/acc"]) == pytest.approx(info["val"]["val/acc"])
    assert any(row["val/adv_acc"] for row in rows) and any(row["train/adv_acc"] for row in rows)
    assert any(row.get("lr-SGD") for row in rows), "LearningRateMonitor"
    # the command line's EarlyStopping ran: its state (the best val/acc) is in the checkpoint
    states = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (early_stopping,) = [v for k, v in states.items() if k.startswith("EarlyStopping")]
    assert float(early_stopping["best_score"]) == pytest.approx(max(float(row["val/acc"]) for row in epochs))
    # the best epoch by the robust validation accuracy, on disk, loadable
    best = tmp_path / "checkpoints" / "best.ckpt"
    (checkpointing,) = [v for k, v in torch.load(best, weights_only=True)["callbacks"].items()
                        if "'monitor': 'val/adv_acc'" in k]
    assert checkpointing["best_model_path"] == str(best)
    assert float(checkpointing["best_model_score"]) == max(float(row["val/adv_acc"]) for row in epochs)
    assert AdversarialClassifier.load_from_checkpoint(best).model.state_dict().keys() == model.state_dict().keys()


@pytest.mark.slow
def test_command_line_run_with_two_loggers(cifar_root, tmp_path):
    proc = advlab_cli("+experiment=fgsm_defense", *SMOKE, "logger=[csv,wandb]", f"hydra.run.dir={tmp_path}",
                      env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "csv" / "metrics.csv") as f:
        assert "val/acc" in next(csv.reader(f))
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list((run / "files" / "media" / "table" / "eval").glob("accuracy_vs_eps_*.table.json"))
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file() and (tmp_path / "results.json").is_file()
