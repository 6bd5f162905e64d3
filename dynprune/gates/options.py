"""The options every gate estimator shares (budget, balance, start, guide, boost, rate term, learning rate): the
``gated options`` group of the train CLI. An estimator's own options live in its file."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..base import ConfigError, check_non_negative, check_positive, option
from ..prune.criteria import CRITERIA
from .density import GLOBAL, UNIFORM


@dataclasses.dataclass
class GateOptions:
    """Options of every gated run, whatever its estimator."""

    budget_weight: float = option(50.0, "gated: weight of (E[MACs]/MACs_dense - target)^2")
    balance_weight: float = option(1.0, "gated: weight of the per-site open-rate bounds [0.05, 0.95]")
    budget_warmup_epochs: float = option(1.0, "gated: epochs over which the target slides from 1 to --target-macs")
    gate_groups: int = option(1, "gated: channels decided together by one logit (1 = per channel)")
    gate_reduction: int = option(4, "gated: hidden width of the gate MLP = max(4, C_in / reduction)")
    gate_bias_init: float = option(2.0, "gated: initial gate logit bias (2 -> 88%% open)")
    calibrate_budget: bool = option(True, "gated: after training, shift gate logits on val to hit the target")
    gate_density: str = option(
        "global",
        "gated: global (one MAC budget) | uniform (every site held to the density that meets --target-macs) | "
        "FILE.json (per-site ratios as for --ratios, e.g. an RL policy.json: density = 1 - ratio)",
    )
    budget_schedule: Literal["linear", "cosine"] = option(
        "linear", "gated: shape of the target's slide from 1 over --budget-warmup-epochs"
    )
    density_bound_decay: float = option(
        0.0, "gated: DGNet-style per-site bounds [d(1-p), d+(1-d)p], p = exp(-decay x epoch); 0 = off"
    )
    gate_init: Literal["open", "l1", "pool", "core"] = option(
        "open",
        "gated: open (every gate at --gate-bias-init) | l1 (open exactly the channels l1-filter keeps: the gates "
        "stay static in a short fine-tune) | pool (open the --gate-criterion ranking's top --gate-pool x k channels, "
        "equal biases) | core (the top --gate-core x k open, the rest of the pool undecided at bias 0, others closed)",
    )
    gate_criterion: str = option(
        "l1-filter",
        "gated: the channel ranking --gate-init l1/pool/core start from and width gates order channels by",
        choices=lambda: CRITERIA.names(),
    )
    gate_pool: float = option(1.5, "gated: --gate-init pool/core: candidate channels per site, a multiple of its k")
    gate_pool_min: float = option(
        0.0,
        "gated: --gate-init pool/core: candidates at least this share of each site's channels (a site that keeps "
        "1 of 16 gets a pool of 2 at --gate-pool 1.5: too few to decide per input); 0 = the --gate-pool multiple alone",
    )
    gate_core: float = option(0.5, "gated: --gate-init core: channels held open per site, a fraction of its k")
    guide_weight: float = option(
        0.0, "gated: weight of the activation guide (BCE to each input's k most active channels); 0 = off"
    )
    guide_until: float = option(0.5, "gated: fraction of the run after which the activation guide is off")
    guide_final_k: bool = option(
        False, "gated: the guide's targets keep each site's final k from the start (else the k of the sliding budget)"
    )
    guide_open_epochs: float = option(
        0.0, "gated: epochs at the start with the gates held open, learning from the activation guide alone (if on)"
    )
    gate_boost: bool = option(
        False, "gated: feature boosting (FBS): kept channels scaled per input by 1 + tanh(a second gate head)"
    )
    gate_rate_weight: float = option(
        0.0, "gated: weight of ConvNet-AIG's per-gate rate term (every channel open for its site's density share)"
    )
    gate_usage_weight: float = option(
        0.0,
        "gated: weight of the usage floor (each site's --gate-usage-share most conditional channels each open for at "
        "least --gate-usage-floor of the batch and shut for as many, so the site stays conditional); 0 = off",
    )
    gate_usage_floor: float = option(
        0.03, "gated: the usage floor: the share of the batch each held channel is open (and shut) for"
    )
    gate_usage_share: float = option(
        0.25, "gated: the share of each site's channels the usage floor holds deciding per input"
    )
    gate_shape_weight: float = option(
        0.0,
        "gated: weight of batch-shaping (each gate's batch distribution matched to Beta(d, 1-d), d = its site's "
        "density), decayed linearly to 0 at --gate-shape-until",
    )
    gate_shape_until: float = option(0.5, "gated: fraction of the run at which the batch-shaping weight reaches 0")
    gate_lr_scale: float = option(
        1.0, "gated: the gates' learning rate as a multiple of --lr (FTWT trains gates at 10x the backbone's)"
    )
    gate_weight_decay: bool = option(
        True, "gated: apply --weight-decay to the gate layers' weights (decay pulls logits toward their biases)"
    )
    measure_dynamism: bool = option(
        True, "gated: after the test pass, measure conditional share and the frozen-gate ablation (3 more passes)"
    )

    def validate(self) -> None:
        check_positive(self, "gate_groups", "gate_reduction")
        if not -100 <= self.gate_bias_init <= 100:  # beyond, the gates are only ever shut or open (and overflow)
            raise ConfigError(f"--gate-bias-init must be in [-100, 100], got {self.gate_bias_init}")
        check_non_negative(
            self,
            "budget_weight",
            "balance_weight",
            "budget_warmup_epochs",
            "density_bound_decay",
            "guide_weight",
            "guide_open_epochs",
            "gate_rate_weight",
            "gate_usage_weight",
            "gate_shape_weight",
        )
        if not 0 < self.gate_usage_floor <= 0.5:  # open and shut for at least this share each
            raise ConfigError(f"--gate-usage-floor must be a share in (0, 0.5], got {self.gate_usage_floor}")
        if not 0 < self.gate_usage_share <= 1:
            raise ConfigError(f"--gate-usage-share must be a share in (0, 1], got {self.gate_usage_share}")
        check_positive(self, "gate_lr_scale")
        if not 0 <= self.gate_core <= 1:
            raise ConfigError(f"--gate-core must be a fraction of each site's k in [0, 1], got {self.gate_core}")
        if self.gate_pool < 1:
            raise ConfigError(f"--gate-pool must be >= 1 (a multiple of each site's k), got {self.gate_pool}")
        if not 0 <= self.gate_pool_min <= 1:
            raise ConfigError(
                f"--gate-pool-min must be a share of each site's channels in [0, 1], got {self.gate_pool_min}"
            )
        if not 0 < self.gate_shape_until <= 1:
            raise ConfigError(
                f"--gate-shape-until must be a fraction of the run in (0, 1], got {self.gate_shape_until}"
            )
        if not 0 <= self.guide_until <= 1:
            raise ConfigError(f"--guide-until must be a fraction of the run in [0, 1], got {self.guide_until}")
        if self.gate_criterion not in CRITERIA:
            raise ConfigError(f"--gate-criterion got {self.gate_criterion!r}; allowed: {', '.join(CRITERIA.names())}")
        mode = self.gate_density
        if mode not in (GLOBAL, UNIFORM) and not mode.endswith(".json"):
            raise ConfigError(f"--gate-density got {mode!r}; allowed: global, uniform, or a FILE.json")

    @property
    def per_site(self) -> bool:
        return self.gate_density != GLOBAL
