"""IDE's spectral-norm reparametrisation of feedback weights: W = clamp(g, -r, r) W~ / sigma(W~).

sigma(W~) is estimated with power iteration on W~ reshaped to (dim0, rest) (for a Conv2d
(out, in*k*k), for a ConvTranspose2d its stored (in, out*k*k), for a Linear (out, in)). The
vectors u, v are buffers; ``power_iteration()`` refines them (IDE: one iteration per training
batch) and the weight uses them as constants, so the gradient flows through W~ both directly
and through sigma = u^T W~ v. The learnable scale g starts at sigma(W~) (10 iterations) and is
clamped to [-r, r] (r = 1), so the estimated norm of W is at most 1.

The reparametrisation is a ``torch.nn.utils.parametrize`` parametrisation: the module keeps
its type (``nn.Linear``, ``nn.Conv2d``, ``nn.ConvTranspose2d``) and ``module.weight`` is the
normalised weight, so code that reads ``module.weight`` (explicit transposes) sees W.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

SUPPORTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


class SpectralReparam(nn.Module):
    """Parametrisation W~ -> clamp(g, -r, r) W~ / (u^T W~_mat v). Shapes: any weight tensor."""

    def __init__(self, weight: torch.Tensor, norm_range: float = 1.0, init_iters: int = 10, eps: float = 1e-12):
        super().__init__()
        if norm_range <= 0:
            raise ValueError(f"norm_range must be > 0, got {norm_range}")
        self.norm_range, self.eps = float(norm_range), float(eps)
        mat = weight.detach().reshape(weight.shape[0], -1)
        g = torch.Generator(device="cpu").manual_seed(0)
        u = torch.randn(mat.shape[0], generator=g, dtype=mat.dtype).to(mat.device)
        v = torch.randn(mat.shape[1], generator=g, dtype=mat.dtype).to(mat.device)
        self.register_buffer("u", F.normalize(u, dim=0, eps=eps))
        self.register_buffer("v", F.normalize(v, dim=0, eps=eps))
        self.power_iteration(weight, init_iters)
        self.g = nn.Parameter(self.sigma(weight).detach().clone().reshape(()))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """Current estimate u^T W~_mat v of the largest singular value (differentiable in W~)."""
        return torch.dot(self.u, weight.reshape(weight.shape[0], -1) @ self.v)

    @torch.no_grad()
    def power_iteration(self, weight: torch.Tensor, iters: int = 1) -> None:
        mat = weight.detach().reshape(weight.shape[0], -1)
        for _ in range(iters):
            self.v.copy_(F.normalize(mat.t() @ self.u, dim=0, eps=self.eps))
            self.u.copy_(F.normalize(mat @ self.v, dim=0, eps=self.eps))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.g.clamp(-self.norm_range, self.norm_range)
        return scale * weight / self.sigma(weight)

    def extra_repr(self) -> str:
        return f"norm_range={self.norm_range}"


def feedback_norm(module: nn.Module, norm_range: float = 1.0) -> nn.Module:
    """Reparametrise ``module.weight`` in place (IDE's feedback constraint); returns ``module``."""
    if not isinstance(module, SUPPORTED):
        raise TypeError(f"feedback_norm supports {', '.join(c.__name__ for c in SUPPORTED)}, "
                        f"got {type(module).__name__}")
    if parametrize.is_parametrized(module, "weight"):
        raise ValueError(f"{type(module).__name__}.weight is already parametrised")
    parametrize.register_parametrization(module, "weight", SpectralReparam(module.weight, norm_range))
    return module


def spectral_reparam(module: nn.Module) -> SpectralReparam | None:
    """The ``SpectralReparam`` of ``module.weight``, or None when it has none."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, SpectralReparam):
            return p
    return None


def power_iterate(net: nn.Module, iters: int = 1) -> None:
    """One power-iteration refinement of every ``SpectralReparam`` in ``net`` (once per batch)."""
    for m in net.modules():
        p = spectral_reparam(m) if isinstance(m, SUPPORTED) else None
        if p is not None:
            p.power_iteration(m.parametrizations.weight.original, iters)
