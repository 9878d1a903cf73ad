"""Lightning DDP on CPU: two processes with the gloo backend train, and evaluation is sharded
across them and gathered once: the numbers equal a single process evaluating the same model."""

import json

import pytest

from helpers import SMOKE, advlab_cli


@pytest.mark.slow
def test_ddp_training_and_sharded_evaluation_match_one_process(cifar_root, tmp_path):
    common = ["+experiment=fgsm_defense", *SMOKE, "logger=none", "data.max_test_images=61"]  # odd: uneven shards
    env = {"ADVLAB_DATA": str(cifar_root), "OMP_NUM_THREADS": "1"}
    ddp = advlab_cli(*common, "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                     f"hydra.run.dir={tmp_path / 'ddp'}", env_extra=env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in ddp.stderr + ddp.stdout
    distributed = json.loads((tmp_path / "ddp" / "results.json").read_text())

    single = advlab_cli(*common, f"checkpoint={tmp_path / 'ddp' / 'model.pt'}", f"hydra.run.dir={tmp_path / 'one'}",
                        env_extra=env)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())

    assert distributed["n_images"] == one["n_images"] == 61  # no image lost, none counted twice
    for key in ("clean", "robustness", "perturbed", "confusion_matrix"):
        assert distributed[key] == one[key], key
