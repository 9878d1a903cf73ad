"""docs/extending.md runs as written: its worked examples of a model, an attack, a defense and a dataset.

The doc's fenced code blocks, in order, in one empty folder (the test's tmp_path):
- a block whose info string names a file (```python mymodels.py, ```yaml my_conf/model/x.yaml) is written there;
- a ```python block without a file name is executed (each in a fresh namespace, the folder as working directory
  and on sys.path, as `python` started there would have it);
- each line of a ```bash block is a command: composed in-process and checked here (the configs resolve, the
  user's modules import, the attacks, losses and perturbations build), and run as a subprocess at the smoke size
  the doc gives in the slow test. The test adds SHRINK to each: no W&B, no gradient-masking checks (their
  warnings call in the full AutoAttack), 16 test images; what is tested is the user's code and configs.
Blocks of any other language are not run.
"""

import json
import re
import shlex
import sys

import numpy as np
import pytest
from hydra.utils import instantiate

from advlab.attacks import registry as attack_registry
from advlab.build import check_config
from advlab.models import registry as model_registry

from helpers import REPO, advlab_cli, config

DOC = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)(?:[ \t]+(\S+))?[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
USER_MODULES = ("mymodels", "myattacks", "mylosses")
SHRINK = ["logger=none", "evaluation.checks.enabled=false", "data.max_test_images=16", "evaluation.num_examples=2"]


def blocks() -> list[tuple[str, str | None, str]]:
    """(language, file name or None, code) of every fenced block of the doc, in order."""
    return [(m.group(1), m.group(2), m.group(3)) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def commands() -> list[list[str]]:
    """The doc's shell commands, each as its argument list after `python -m advlab`."""
    out = []
    for language, _, code in blocks():
        if language != "bash":
            continue
        for line in code.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                words = shlex.split(line, comments=True)
                assert words[:3] == ["python", "-m", "advlab"], line
                out.append(words[3:])
    return out


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """An empty folder as working directory, holding the doc's files; advlab's registries put back afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    models, attacks = dict(model_registry.MODELS), dict(attack_registry.SPECS)
    for language, name, code in blocks():
        if name is not None:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code, encoding="utf-8")
    yield tmp_path
    for module in USER_MODULES:
        sys.modules.pop(module, None)
    model_registry.MODELS.clear()
    model_registry.MODELS.update(models)
    attack_registry.SPECS.clear()
    attack_registry.SPECS.update(attacks)


def run_python_blocks() -> None:
    for language, name, code in blocks():
        if language == "python" and name is None:
            exec(compile(code, f"{DOC.name} python block", "exec"), {"__name__": "__extending__"})


def test_the_doc_has_an_example_of_each_kind():
    text = DOC.read_text(encoding="utf-8")
    for heading in ("## A model", "## An attack", "## A defense", "## A dataset"):
        assert heading in text
    files = {name for _, name, _ in blocks() if name}
    prose = BLOCK.sub("", text)
    assert all(f"`{name}`" in prose for name in files), "a file block's name must be in the text (GitHub hides it)"
    assert {"mymodels.py", "myattacks.py", "mylosses.py", "my_conf/model/small_cnn.yaml", "my_conf/loss/logit_pairing.yaml",
            "my_conf/defense/logit_pairing.yaml", "my_conf/data/corners.yaml"} <= files
    assert all(language in ("python", "yaml", "bash") for language, _, _ in blocks())
    assert len(commands()) >= 6 and all("+debug=smoke" in args for args in commands())


def test_python_examples_run(user_folder):
    run_python_blocks()
    assert (user_folder / "corners_train.npz").is_file() and (user_folder / "corners_test.npz").is_file()


def _composed(args: list[str], folder) -> list[str]:
    """A command's overrides for helpers.config: --config-dir becomes a search path entry."""
    overrides, args = [], list(args)
    while args:
        word = args.pop(0)
        if word == "--config-dir":
            overrides.append(f"hydra.searchpath=[file://{folder / args.pop(0)}]")
        elif word != "-m":
            overrides.append(word)
    return overrides


@pytest.mark.parametrize("index", range(len(commands())))
def test_commands_compose_and_build(user_folder, index):
    """Each command's config composes with the user's folder, and what it names builds (no training)."""
    run_python_blocks()  # the data files the dataset commands read
    cfg = config(*_composed(commands()[index], user_folder))
    check_config(cfg)  # the model's _target_ imports; attacks, training loss and perturbation, validation build
    if cfg.data.dataset == "npz":
        datamodule = instantiate(cfg.data)
        datamodule.setup()
        assert datamodule.info.num_classes == 4 and datamodule.info.image_size == (32, 32)


def tiny_cifar10(root) -> str:
    """Random images in CIFAR-10's archive form, just enough for the default split (5000 held out) and a smoke
    run: not learning is tested here, and reading the real set takes seconds per command."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for name, n in [(f"train_{i}", 1100) for i in range(1, 6)] + [("test", 100)]:
        np.savez(root / f"{name}.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 y=rng.integers(0, 10, n))
    return str(root)


@pytest.mark.slow
def test_commands_run_as_typed(user_folder):
    run_python_blocks()
    cifar10 = tiny_cifar10(user_folder / "tiny_cifar10")
    for i, args in enumerate(commands()):
        out = user_folder / f"run{i}"
        proc = advlab_cli(*args, *SHRINK, f"hydra.run.dir={out}", cwd=user_folder, env_extra={"ADVLAB_DATA": cifar10, "ADVLAB_QUIET": "1"})
        assert proc.returncode == 0, f"{shlex.join(args)}\n{proc.stderr[-3000:]}"
        results = json.loads((out / "results.json").read_text())
        line = shlex.join(args)
        if "model=small_cnn" in line:
            assert results["config"]["model"]["_target_"] == "mymodels.SmallCNN"
        if "myattacks.RandomCorners" in line and "evaluation.attacks" in line:
            assert "random-corners" in results["robustness"]["accuracy"]
        if "perturbation.attack" in line:
            assert "RandomCorners" in results["training"]["loss"]
        if "logit_pairing" in line:
            assert results["training"]["loss"].startswith("LogitPairingLoss(Perturbation(Attack('pgd'")
        if "data=corners" in line:
            assert results["config"]["data"]["class_names"][3] == "bottom_right"
