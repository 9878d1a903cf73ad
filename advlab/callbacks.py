"""Guards for adversarial training, read off the robust validation accuracy (val/adv_acc).

RobustGuard keeps, in memory, the weights of the epoch with the best robust
validation accuracy, and watches for two failures:
- catastrophic overfitting (single-step training, Wong et al. 2020): PGD accuracy on
  the validation slice collapses within an epoch or two while FGSM accuracy soars.
  Detected when val/adv_acc falls more than `co_drop` below its best;
- robust overfitting (Rice et al. 2020): robust validation accuracy peaks and then
  declines over many epochs. `patience` stops after that many epochs without a new best.
On either, `action` says what happens: "log" only records it, "stop" ends training,
"rollback" ends training and puts back the best weights. `restore_best` also puts
them back when training ends normally (early stopping's checkpoint choice).
Its record (best score and epoch, events, the best weights) is saved with every Lightning
checkpoint (state_dict: plain values and tensors), so a run resumed with `resume=` goes on
from it as if never stopped.
"""

import copy
import math

import pytorch_lightning as pl

ACTIONS = ("log", "stop", "rollback")


class RobustGuard(pl.Callback):
    def __init__(self, co_drop: float = 0.2, action: str = "log", patience: int | None = None,
                 restore_best: bool = False, monitor: str = "val/adv_acc"):
        co_drop = float(co_drop)
        if not math.isfinite(co_drop) or not 0 < co_drop <= 1:
            raise ValueError(f"guard.co_drop (accuracy drop that counts as collapse) must be in (0, 1], got {co_drop}")
        if action not in ACTIONS:
            raise ValueError(f"guard.action must be one of {ACTIONS}, got {action!r}")
        if patience is not None and int(patience) < 1:
            raise ValueError(f"guard.patience must be >= 1 or null (off), got {patience}")
        self.co_drop, self.action, self.patience = co_drop, action, patience
        self.restore_best, self.monitor = restore_best, monitor
        self.best, self.best_epoch, self.best_state = -1.0, None, None
        self.events: list[dict] = []
        self.restored = False

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value, epoch = float(trainer.callback_metrics[self.monitor]), trainer.current_epoch
        if value > self.best:
            self.best, self.best_epoch = value, epoch
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in pl_module.model.state_dict().items()})
            return
        if self.best - value > self.co_drop:
            self._event(trainer, pl_module, "catastrophic_overfitting", epoch, value)
        elif self.patience is not None and epoch - self.best_epoch >= self.patience:
            self._event(trainer, pl_module, "robust_overfitting", epoch, value)

    def _event(self, trainer, pl_module, kind: str, epoch: int, value: float):
        event = {"kind": kind, "epoch": epoch, self.monitor: round(value, 4), "best": round(self.best, 4),
                 "best_epoch": self.best_epoch, "action": self.action}
        self.events.append(event)
        pl.utilities.rank_zero_warn(f"{kind.replace('_', ' ')} at epoch {epoch}: {self.monitor} {value:.3f}, "
                                    f"best {self.best:.3f} at epoch {self.best_epoch}; action: {self.action}")
        for logger in getattr(trainer, "loggers", []):
            logger.log_metrics({f"guard/{kind}": 1.0}, step=trainer.global_step)
        if self.action in ("stop", "rollback"):
            trainer.should_stop = True
        if self.action == "rollback":
            self._restore(pl_module)

    def on_fit_end(self, trainer, pl_module):
        if self.restore_best and self.best_state is not None and not self.restored:
            self._restore(pl_module)

    def _restore(self, pl_module):
        device = next(pl_module.model.parameters()).device
        pl_module.model.load_state_dict({k: v.to(device) for k, v in self.best_state.items()})
        self.restored = True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "events": copy.deepcopy(self.events),
                "restored": self.restored, "best_state": self.best_state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_epoch = float(state_dict["best"]), state_dict["best_epoch"]
        self.events, self.restored = list(state_dict["events"]), bool(state_dict["restored"])
        self.best_state = state_dict["best_state"]
        if self.best_state is not None:
            self.best_state = {k: v.cpu() for k, v in self.best_state.items()}

    def summary(self) -> dict:
        """What training.json / results.json record about the guard."""
        return {"best": self.best if self.best_epoch is not None else None, "best_epoch": self.best_epoch,
                "events": self.events, "restored_best": self.restored}
