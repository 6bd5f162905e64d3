"""What one gated case is timed with: dense (BN folded), the deploy model and its strategies (the routed executor
of network-scope width gates among them), the fixed-k executor and the hard-pruned twin, each in a runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..fold import fold_bn
from ..gates.deploy import to_deploy
from ..gates.fixed_k import FixedKUnsupported, to_fixed_k
from ..gates.method import GatedMethod
from ..gates.routed import RoutedWidths
from ..runtimes import RUNTIMES, Executor
from .twins import hard_pruned_twin, without_gates


@dataclass
class GatedCase:
    """A gated model to time: its name and target for the table, its method (for the MAC ratio), its inputs."""

    name: str
    target: float
    model: nn.Module
    method: GatedMethod
    shape: tuple[int, ...]
    images: torch.Tensor | None = None  # real, normalised test images; None: random inputs

    def inputs(self, batch: int) -> torch.Tensor:
        return self.images[:batch] if self.images is not None else torch.randn(batch, *self.shape)


def _with_strategy(deploy: nn.Module, strategy: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deploy model run with one fixed strategy (for timing the strategies side by side)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        deploy.strategy = strategy
        return deploy(x)

    return run


@dataclass
class Executors:
    """Everything timed for one gated case, built once: dense, the data-dependent deploy model (with the routed
    executor of network-scope width gates among its strategies), the fixed-k executor (None where unsupported,
    with the reason) and the hard-pruned twin."""

    dense: nn.Module
    deploy: nn.Module
    fixed_k: nn.Module | None
    fixed_k_problem: str | None
    hard: tuple[nn.Module, float]  # the hard-pruned twin and its MAC ratio (every gated model has one)

    @classmethod
    def build(cls, case: GatedCase, device: str) -> Executors:
        try:
            fixed_k, problem = to_fixed_k(case.model).to(device), None
        except FixedKUnsupported as exc:
            fixed_k, problem = None, str(exc)
        hard = hard_pruned_twin(case.model, case.method, case.inputs(64))
        deploy = to_deploy(case.model)  # network-scope widths: one static model per width, only
        return cls(
            fold_bn(without_gates(case.model)).to(device),
            deploy.to(device),
            fixed_k,
            problem,
            (hard[0].to(device), hard[1]),
        )

    @property
    def routed(self) -> RoutedWidths | None:
        return dict(self.deploy.executors).get("routed")  # a ModuleDict has no get

    def timed(
        self, runtime: str, x: torch.Tensor, threads: int, one_by_one: bool = False
    ) -> tuple[dict[str, Executor], list[str]]:
        """(executors by name, the deploy candidates among them) for this runtime and input. Eager runs every
        deploy strategy; compiled runtimes need static shapes: the fixed-k executor, and the routed one's
        branches and its router built in the runtime."""
        make = RUNTIMES.get(runtime)
        example = x[:1] if one_by_one else x  # one_by_one: the executors will see one image at a time
        out = {"dense": make(self.dense, example, threads)}
        candidates = []
        routed = self.routed
        if routed is not None:
            routed.prepare(make, x, threads, one_by_one)  # each width's branch in this runtime, for this batch's groups
            if runtime != "eager":
                out["routed"], candidates = routed, ["routed"]
        if runtime == "eager":
            for strategy in self.deploy.candidates(x.shape[0]):
                out[strategy] = _with_strategy(self.deploy, strategy)
                candidates.append(strategy)
        if self.fixed_k is not None:
            self.fixed_k.autotune(example)  # narrow or wide per layer, for this batch size, before it is compiled
            out["fixedk"] = make(self.fixed_k, example, threads)
            candidates.append("fixedk")
        out["hard"] = make(self.hard[0], example, threads)
        return out, candidates


#: images a routed model's batch-1 row is timed over, one at a time (its MACs: their mean)
ROUTED_B1_IMAGES = 16


def image_by_image(run: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.cat([run(x[i : i + 1]) for i in range(x.shape[0])])
