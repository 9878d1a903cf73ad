"""The transfer check (Carlini et al. 2019, "On Evaluating Adversarial Robustness"): the model evaluated on
the adversarial examples of another model, a surrogate.

    evaluation.transfer_from=RUN            a run folder's saved adversarial examples (save_adversarial=true)
    evaluation.transfer_from=MODEL.pt       a checkpoint: its model is attacked with this evaluation's attacks
                                            (advlab.evaluation.pipeline makes its examples)

Its column "transfer" joins the per-image record (every correctly classified image, every eps), so the worst
case includes it. A model that falls more to the transferred examples than to its own white-box attacks
hides its weakness from its own gradients (masking): the check says so with a WARN.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.attacks._core import eval_mode
from advlab.data import to_unit_float
from advlab.evaluation.adversarial import read_adversarial
from advlab.evaluation.record import PerImage, col
from advlab.evaluation.robustness import logit_margin
from advlab.results import Check

NAME = "transfer"


def saved_examples(folder: str | Path, labels: torch.Tensor, eps: list[float]) -> dict:
    """{eps: a run folder's saved worst-case adversarial images (advlab.evaluation.adversarial), in the order of
    the evaluated test set}, refused when they are of other images."""
    out = {}
    for e in eps:
        x, y, index = read_adversarial(folder, e)
        if len(index) != len(labels) or not torch.equal(y, labels.cpu()[torch.from_numpy(index)]):
            raise ValueError(f"evaluation.transfer_from: {folder}'s adversarial examples are of other images "
                             f"({len(index)} images, this test set {len(labels)}); evaluate the same test set")
        ordered = torch.empty_like(x)
        ordered[torch.from_numpy(index)] = x
        out[e] = ordered
    return out


@torch.no_grad()
def add_transfer(record: PerImage, model: nn.Module, labels: torch.Tensor, examples: dict, source: str,
                 batch_size: int = 500) -> None:
    """The record's "transfer" columns: the model on the surrogate's images, for every correctly classified image
    at every eps (a complete column: its own curve is a rate), and the worst case recomputed with it."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    index, correct = record.columns["index"], record.correct
    with eval_mode(model):
        for e in record.eps:
            survived, margins = np.full(len(record), np.nan), np.full(len(record), np.nan)
            rows = np.nonzero(correct)[0]
            for start in range(0, len(rows), batch_size):
                part = rows[start:start + batch_size]
                x = to_unit_float(examples[e][index[part]].to(device))
                y = labels[index[part]].to(device)
                out = model(x)
                survived[part] = (out.argmax(1) == y).double().cpu().numpy()
                margins[part] = logit_margin(out, y)
            record.columns[col("survived", NAME, e)] = survived
            record.columns[col("margin", NAME, e)] = margins
    if NAME not in record.attacks:
        record.attacks.append(NAME)
        record.complete.append(NAME)
    record.sources[NAME] = source
    record.worst_case()


def check_transfer(record: PerImage) -> Check:
    """WARN when, at some eps, the transferred examples break images every white-box attack left robust
    (the model falls more to another model's examples than to its own gradients)."""
    if NAME not in record.attacks:
        return Check("transfer", "SKIP", "no transfer attack (evaluation.transfer_from)")
    white = [a for a in record.attacks if a != NAME]
    n = len(record)
    numbers, worse = {}, []
    for e in record.eps:
        if e == 0:
            continue
        alive = record.correct.copy()
        for a in white:
            alive &= ~(record.survived(a, e) == 0)
        transfer = record.survived(NAME, e) == 1
        white_acc, transfer_acc = int(alive.sum()), int(transfer.sum())
        numbers[f"{e:g}"] = {"white_box": round(100 * white_acc / max(n, 1), 2),
                             "transfer": round(100 * transfer_acc / max(n, 1), 2),
                             "broken_by_transfer_only": int((alive & ~transfer).sum())}
        if transfer_acc < white_acc:
            worse.append(f"eps={e:g}: transfer {numbers[f'{e:g}']['transfer']}% < white-box "
                         f"{numbers[f'{e:g}']['white_box']}%")
    if worse:
        return Check("transfer", "WARN", "the model falls more to another model's adversarial examples than to its "
                     "own white-box attacks (masked gradients): " + "; ".join(worse), numbers)
    return Check("transfer", "PASS", "white-box attacks are at least as strong as the transferred examples",
                 numbers)
