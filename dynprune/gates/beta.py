"""The Beta distribution's CDF (the regularized incomplete beta function I_x(a, b)) in torch, differentiable in x:
the prior that batch-shaping matches each gate's batch distribution to (``guide.batch_shaping_loss``).

torch has no incomplete beta function; this is the continued fraction of Numerical Recipes (``betacf``, modified
Lentz), vectorised with per-column parameters so every gate of every site is one tensor. Its gradient in x is the
Beta pdf, clipped to [1e-3, 100] where the pdf of a < 1 or b < 1 runs to infinity at 0 or 1 (Bejnordi et al.'s
released implementation clips it the same way).
"""

from __future__ import annotations

import torch

_TINY = 1e-300
_ITERATIONS = 60  # a, b in (0, 1] converge in a few dozen terms on the branch each x is evaluated on
PDF_CLIP = (1e-3, 100.0)


def _log_beta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def _continued_fraction(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    def nonzero(v: torch.Tensor) -> torch.Tensor:
        return torch.where(v.abs() < _TINY, torch.full_like(v, _TINY), v)

    c = torch.ones_like(x)
    d = 1.0 / nonzero(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, _ITERATIONS + 1):
        even = m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))
        for coefficient in (even, odd):
            d = 1.0 / nonzero(1.0 + coefficient * d)
            c = nonzero(1.0 + coefficient / c)
            h = h * d * c
    return h


def beta_cdf_values(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """I_x(a, b) in float64 for x in [0, 1]; ``a`` and ``b`` broadcast against ``x`` (e.g. one per column)."""
    x, a, b = torch.broadcast_tensors(x.double().clamp(0.0, 1.0), a.double(), b.double())
    inner = x.clamp(1e-12, 1 - 1e-12)
    front = torch.exp(a * torch.log(inner) + b * torch.log1p(-inner) - _log_beta(a, b))
    direct = x < (a + 1.0) / (a + b + 2.0)  # where the continued fraction converges fast; else the symmetry
    value = torch.where(
        direct,
        front * _continued_fraction(a, b, inner) / a,
        1.0 - front * _continued_fraction(b, a, 1.0 - inner) / b,
    )
    return torch.where(x <= 0, torch.zeros_like(x), torch.where(x >= 1, torch.ones_like(x), value))


def beta_pdf(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inner = x.double().clamp(1e-12, 1 - 1e-12)
    a, b = a.double(), b.double()
    return torch.exp((a - 1.0) * torch.log(inner) + (b - 1.0) * torch.log1p(-inner) - _log_beta(a, b))


def _grid_coordinate(x: torch.Tensor) -> torch.Tensor:
    """t in [0, 1] of x on a grid x(t) = t^4 / (t^4 + (1 - t)^4): dense at both ends, where I_x(a, b) rises as
    x^a and (1 - x)^b and a uniform grid's linear interpolation misses it by a tenth."""
    p, q = x.clamp(min=0.0) ** 0.25, (1.0 - x).clamp(min=0.0) ** 0.25
    return p / (p + q)


class _TableCDF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, a, b)
        pos = _grid_coordinate(x.detach().float().clamp(0.0, 1.0)) * (table.shape[0] - 1)
        low = pos.floor().long().clamp(max=table.shape[0] - 2)
        weight = pos - low
        return torch.lerp(table.gather(0, low), table.gather(0, low + 1), weight).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        x, a, b = ctx.saved_tensors
        pdf = beta_pdf(x.detach(), a, b).clamp(*PDF_CLIP).to(grad.dtype)
        return grad * pdf, None, None, None


class BetaPrior:
    """Beta(a_j, b_j) for every column j of a [B, G] batch of gate probabilities: the CDF is tabulated once per
    distinct (a, b) on ``points`` grid points and read by linear interpolation (the continued fraction per step
    would cost more than the training step), with the clipped pdf as its gradient."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, points: int = 4097) -> None:
        pairs, column = torch.unique(torch.stack([a, b], dim=1).double(), dim=0, return_inverse=True)
        t = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
        grid = t**4 / (t**4 + (1.0 - t) ** 4)
        tables = beta_cdf_values(grid[:, None], pairs[:, 0], pairs[:, 1])  # [points, distinct pairs]
        self.table = tables[:, column].float()  # [points, G]
        self.a, self.b = a.float(), b.float()

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """[B, G] probabilities -> their CDF values under each column's prior (differentiable in x)."""
        if self.table.device != x.device:  # moved once, not per step
            self.table, self.a, self.b = self.table.to(x.device), self.a.to(x.device), self.b.to(x.device)
        return _TableCDF.apply(x, self.table, self.a, self.b)
