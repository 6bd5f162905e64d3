"""Training methods are plug-ins on the one training spine (``engine.Trainer``).

A method may change the model before training (add gates, masks), act before each step, add a loss term per
step, act at the end of each epoch, say what the model costs per sample, and rebuild its model from a
checkpoint. ``dense`` is the plain baseline. Each method family describes itself to the catalog
(``dynprune.catalog``) with a ``MethodSpec``: which config field selects it, its options, how it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import load_weights
from .config import TrainConfig
from .cost import CostModel


@dataclass(frozen=True)
class ParamGroup:
    """Parameters a method trains at a learning rate and weight decay of their own (e.g. gates: FTWT trains
    them at 10x the backbone's rate, without weight decay)."""

    params: list[nn.Parameter]
    lr_scale: float = 1.0  # multiplies the run's learning rate (and follows its schedule)
    weight_decay: float | None = None  # None: the run's split (decay on weights of rank > 1)


@dataclass(frozen=True)
class MethodSpec:
    """A training-method family as the catalog knows it."""

    family: str  # dense | gated | static
    selector: str | None  # the TrainConfig field that names the variant (gate, prune); None: chosen when none is
    variants: Callable[[], list[str]]  # the names that field may take
    option_groups: Callable[[], dict[str, type]]  # {group: options dataclass}; the groups' fields are CLI flags
    build: Callable[[TrainConfig, str], Method]  # (config, variant) -> the method
    #: variant -> the option values it measured best with (defaults of the CLI where no flag or preset sets them)
    recipe: Callable[[str], Mapping[str, Any]] = lambda variant: {}

    @property
    def name(self) -> str:
        """The name the catalog registers it under."""
        return self.family


class Method:
    """The dense baseline; subclasses override the hooks they need."""

    name = "dense"

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
        """Called once before training and before any checkpoint is loaded into the model."""
        self.cost = CostModel.from_model(model, input_shape)
        self.dense_macs = self.cost.dense_macs  # the reference every ratio is taken against
        return model

    def begin(self, total_steps: int, steps_per_epoch: int) -> None:
        """Called before the first step with the length of the whole run."""

    def param_groups(self) -> list[ParamGroup]:
        """Parameters trained with their own learning rate or weight decay (called after ``prepare``); every
        other trainable parameter gets the run's settings."""
        return []

    def before_step(self, model: nn.Module, step: int) -> None:
        """Called before each training forward pass (e.g. to anneal a temperature)."""

    def extra_loss(
        self,
        model: nn.Module,
        logits: torch.Tensor,
        step: int,
        epoch: int,
        inputs: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A loss term to add to the task loss, and scalars to log under ``train/`` (``inputs``, ``labels``: the
        batch, for methods that run it again, e.g. at other widths)."""
        return None, {}

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Scalars to log under ``cost/`` after each epoch (after validation)."""
        return {}

    def finalize(self, model: nn.Module, val_loader: Any, amp_dtype: torch.dtype | None) -> None:
        """Called once after the last epoch, before the final checkpoint and the test evaluation."""

    def deploy_model(self, model: nn.Module) -> nn.Module:
        """The model whose latency is reported: what would be deployed (gated: skipped channels really skipped)."""
        return model

    def checkpoint_extra(self) -> dict[str, Any]:
        """Entries saved in the checkpoint that are needed to rebuild the model (e.g. removed channels)."""
        return {}

    def start_eval(self) -> None:
        """Called before an evaluation pass."""

    def per_sample_macs(self, model: nn.Module, batch_size: int) -> torch.Tensor:
        """MACs per sample [B] (float64) of the batch just evaluated (dense: the same for every sample)."""
        return torch.full((batch_size,), float(self.cost.dense_macs), dtype=torch.float64)

    def result_fields(self) -> dict[str, Any]:
        """Extra entries for result.json, read after the final test evaluation."""
        return {}

    def inspect(
        self, model: nn.Module, val_loader: Any, test_loader: Any, num_classes: int, amp_dtype: torch.dtype | None
    ) -> dict[str, Any]:
        """Extra result.json entries measured on the finished model after the test evaluation (gated: how
        dynamic the gates are, ``gates/dynamism.py``); the model must be left as it was."""
        return {}

    def figures(self, out_dir: Path, title: str) -> dict[str, Path]:
        """Plots of the finished run written into ``out_dir`` (name -> file), logged with the run."""
        return {}

    def rebuild(self, model: nn.Module, ckpt: dict[str, Any], input_shape: Sequence[int], source: str) -> nn.Module:
        """The trained model from a fresh ``model`` and the checkpoint of a run of this method (eval mode)."""
        self.prepare(model, input_shape)
        load_weights(model, ckpt["model"], source)
        return model.eval()


DENSE = MethodSpec("dense", None, lambda: ["dense"], dict, lambda cfg, variant: Method())
