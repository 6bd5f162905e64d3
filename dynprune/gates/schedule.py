"""When things happen in a gated run: the budget's slide from dense to the target, the activation guide's span,
the steps with the gates held open."""

from __future__ import annotations

from dataclasses import dataclass, field

from .density import slide
from .options import GateOptions


@dataclass
class GateSchedule:
    options: GateOptions
    target: float  # the final MAC target
    densities: dict[str, float] = field(default_factory=dict)  # per-site final densities
    total_steps: int = 1
    warmup_steps: int = 0  # the budget slides from 1 to its value over these
    open_steps: int = 0  # the gates held open (dense forward) for these, learning from the guide alone
    supernet_steps: int = 0  # the gates held open while the nested widths train as a supernet; then they decide

    def begin(self, total_steps: int, steps_per_epoch: int, supernet_share: float = 0.0) -> None:
        o = self.options
        self.total_steps = max(1, total_steps)
        self.supernet_steps = int(supernet_share * total_steps)
        self.warmup_steps = int(o.budget_warmup_epochs * steps_per_epoch)
        guided = o.guide_weight > 0  # held open, the gates learn from the guide alone: never without it
        self.open_steps = int(o.guide_open_epochs * steps_per_epoch) if guided else 0

    def moved(self, step: int) -> float:
        """How far the budget has slid from dense (0) to its final value (1); it starts sliding when the gates
        start deciding (after a supernet phase)."""
        return slide(max(0, step - self.supernet_steps), self.warmup_steps, self.options.budget_schedule)

    def target_at(self, step: int) -> float:
        return 1.0 - (1.0 - self.target) * self.moved(step)

    def densities_at(self, step: int) -> dict[str, float]:
        moved = self.moved(step)
        return {k: 1.0 - (1.0 - d) * moved for k, d in self.densities.items()}

    def guided(self, step: int) -> bool:
        """The guide is on for the first ``guide_until`` of the run, and always while the gates are held open."""
        until = max(self.options.guide_until * self.total_steps, self.open_steps)
        return self.options.guide_weight > 0 and step < until

    def held_open(self, step: int) -> bool:
        return step < max(self.open_steps, self.supernet_steps)

    def in_supernet(self, step: int) -> bool:
        return step < self.supernet_steps
