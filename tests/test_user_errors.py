"""A user's mistake through the real command line: one line `advlab: error: ...`, exit status 2, no traceback,
and nothing of a run left behind. Each case fails before any training."""

import pytest

from helpers import SMOKE, advlab_cli

BASE = ["+experiment=fgsm_defense", *SMOKE, "logger=none"]


def _truncated(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _case_args(case, cifar_root, tmp_path):
    """The command line of a case, and the text its error line must hold (the key or the file)."""
    if case == "corrupt checkpoint":
        bad = tmp_path / "random.pt"
        bad.write_bytes(bytes(range(256)) * 40)
        return ["+experiment=evaluate", f"checkpoint={bad}", *SMOKE, "logger=none"], f"checkpoint: {bad}"
    if case == "empty data folder":
        empty = tmp_path / "empty"
        empty.mkdir()
        return [*BASE, f"data.root={empty}", "data.download=false"], str(empty)
    if case == "truncated test archive":
        root = tmp_path / "data"
        root.mkdir()
        for train in cifar_root.glob("train_*.npz"):
            (root / train.name).symlink_to(train)
        _truncated(cifar_root / "test.npz", root / "test.npz")
        return [*BASE, f"data.root={root}"], f"{root / 'test.npz'}: not a readable"
    if case == "truncated train archive":
        root = tmp_path / "data"
        root.mkdir()
        _truncated(cifar_root / "train_1.npz", root / "train_1.npz")
        (root / "test.npz").symlink_to(cifar_root / "test.npz")
        return [*BASE, f"data.root={root}"], f"{root / 'train_1.npz'}: not a readable"
    raise AssertionError(case)


CASES = {
    "eps=-0.1": ([*BASE, "eps=-0.1"], "eps must be a finite number >= 0 (pixel units, images in [0, 1]), got -0.1"),
    "eps=nan": ([*BASE, "eps=nan"], "eps must be a finite number >= 0 (pixel units, images in [0, 1]), got nan"),
    "alpha=1.5": ([*BASE, "alpha=1.5"], "alpha (weight of the clean loss) must be in [0, 1], got 1.5"),
    "unknown attack": ([*BASE, "evaluation.attacks=[nope]"], "evaluation.attacks: unknown attack 'nope'; registered"),
    "negative evaluation eps": ([*BASE, "evaluation.eps=[-0.1]"], "evaluation.eps must be a finite number >= 0"),
    "missing checkpoint": (["+experiment=evaluate", "checkpoint=/nonexistent/model.pt", *SMOKE, "logger=none"],
                           "checkpoint: no file at /nonexistent/model.pt"),
    "no checkpoint to evaluate": (["+experiment=evaluate", *SMOKE, "logger=none"],
                                  "checkpoint: this experiment evaluates a saved model; give checkpoint=PATH"),
    "corrupt checkpoint": None,
    "empty data folder": None,
    "truncated test archive": None,
    "truncated train archive": None,
}


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("advlab: error:")]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_users_mistake_is_one_line_and_exit_status_2(case, cifar_root, tmp_path):
    args, expected = CASES[case] or _case_args(case, cifar_root, tmp_path)
    out = tmp_path / "run"
    proc = advlab_cli(*args, f"hydra.run.dir={out}", env_extra={"ADVLAB_DATA": str(cifar_root)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    (line,) = _error_lines(proc.stderr)
    assert expected in line, line
    left = {p.relative_to(out).as_posix() for p in out.rglob("*")} if out.exists() else set()
    assert not left & {"results.json", "model.pt", "checkpoints", "report.html"}, left  # nothing half-written


@pytest.mark.slow
def test_advlab_debug_shows_the_traceback(cifar_root, tmp_path):
    proc = advlab_cli(*BASE, "alpha=1.5", f"hydra.run.dir={tmp_path / 'run'}",
                      env_extra={"ADVLAB_DATA": str(cifar_root), "ADVLAB_DEBUG": "1"})
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "check_alpha" in proc.stderr
    assert _error_lines(proc.stderr) == ["advlab: error: alpha (weight of the clean loss) must be in [0, 1], got 1.5"]
