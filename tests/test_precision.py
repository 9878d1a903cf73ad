"""bf16 autocast (evaluation.bf16, trainer.precision=bf16-mixed): attacks keep float32 images inside
the ball, and robust accuracy moves no more than noise. On CPU here; the speed-up is a GPU matter."""

import torch

from advlab.attacks import pgd
from advlab.attacks._core import perturbation_norm
from advlab.evaluation import evaluate_robustness

EPS = 2 / 255


def test_bf16_attacks_stay_in_the_ball_and_agree_with_float32(trained_model, test_images):
    x, y = test_images[0][:300], test_images[1][:300]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_adv = pgd(trained_model, x, y, EPS, steps=10)
    assert x_adv.dtype == torch.float32
    assert (perturbation_norm(x_adv - x, "linf") <= EPS + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1

    attacks = {"pgd": lambda m, xb, yb, e: pgd(m, xb, yb, e, steps=10)}
    loader = list(zip(x.split(100), y.split(100)))
    full = evaluate_robustness(trained_model, loader, [0, EPS], attacks, progress=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = evaluate_robustness(trained_model, loader, [0, EPS], attacks, progress=False)
    assert abs(full.clean.value - half.clean.value) <= 0.02
    robust = [r.worst_case(EPS).value for r in (full, half)]
    assert abs(robust[0] - robust[1]) <= 0.03, robust  # within the noise of 300 images (95% CI about +-5 points)
    assert robust[1] < full.clean.value - 0.05, "the bf16 attack still works"
