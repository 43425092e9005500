"""Stop rules and the record of a run: the non-finite guard (kept on the device: no host sync per
step), the target-mIoU and plateau rules (each returns the latent whose mIoU it measured), and
the history records read back at checked steps."""

from __future__ import annotations

import torch

from ..metrics import mean_iou
from .settings import Stage1Settings


class FiniteGuard:
    """The last latent whose step was finite, and the first step that was not."""

    def __init__(self, device: torch.device):
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.z_good: torch.Tensor | None = None

    def update(self, ok: torch.Tensor, z: torch.Tensor, step: int, zmin: torch.Tensor, zmax: torch.Tensor) -> None:
        """After an optimiser step: clamp z to the codebook's range, then keep it if everything was finite."""
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, zmax), zmin))
            ok = ok & torch.isfinite(z).all()
            self.first_bad = torch.where(self.bad | ok, self.first_bad, torch.full_like(self.first_bad, step))
            self.bad = self.bad | ~ok
            self.z_good = torch.where(self.bad, self.z_good, z)

    def tripped(self) -> int | None:
        """The first non-finite step, or None (a host read: call it on checked steps only)."""
        return int(self.first_bad) if bool(self.bad) else None


class StopRules:
    """Target mIoU and plateau, per level (a coarse level hands over instead of stopping)."""

    def __init__(self, settings: Stage1Settings, step: int):
        self.settings, self.best, self.best_step = settings, -1.0, step

    def check(self, step: int, miou: float) -> str | None:
        s = self.settings
        if s.target_miou is not None and miou >= s.target_miou:
            return "target_miou"
        if miou > self.best + s.plateau_delta:
            self.best, self.best_step = miou, step
        elif s.plateau_steps and step - self.best_step >= s.plateau_steps:
            return "plateau"
        return None


def _flush(pending: list, level: int | None = None) -> list[dict]:
    """Device values of the steps since the last check -> history records (one host read)."""
    if not pending:
        return []
    keys = list(pending[-1][1])
    values = torch.stack(
        [torch.stack([rec[k].float() if k in rec else rec["loss"].new_full((), float("nan")) for k in keys]) for _, rec, _ in pending]
    ).tolist()
    out = []
    for (step, rec, ious), row in zip(pending, values):
        record = {"step": step, **{k: v for k, v in zip(keys, row) if k in rec}}
        record["miou"] = mean_iou(ious) if ious is not None else None
        if level is not None:
            record["level"] = level
        out.append(record)
    return out
