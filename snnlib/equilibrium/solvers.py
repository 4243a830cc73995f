"""Fixed-point solvers behind one signature, with their statistics returned (never printed).

Every solver finds ``z = f(z)`` for a batched tensor ``z`` of any shape [B, ...] (dim 0 is the
batch; each sample gets its own quasi-Newton / mixing state):

    z, stat = solver(f, z0, *, max_iter=30, tol=1e-6, stop_mode="rel", **options)

The residual of an iterate is r = f(z) - z. ``stat.abs_trace[k]`` is ||r_k|| (Frobenius norm
over the whole batch) after the k-th evaluation of ``f``, ``stat.rel_trace[k]`` is
||r_k|| / ||f(z_k)||. The solver stops when the trace chosen by ``stop_mode`` falls below
``tol``, and returns, per sample, the iterate with the lowest residual seen.

Solvers: ``broyden`` (limited-memory "good" Broyden on g(z) = f(z) - z, IDE's backward
solver), ``anderson`` (Anderson acceleration, torchdeq's defaults m=6, lam=1e-4),
``fixed_point`` (damped iteration z <- z + tau (f(z) - z)), and ``ide_iter``, which
reproduces IDE's released "iter" update z <- (z + (f(z) - z)) / 2 = f(z)/2: it converges to
the fixed point of f/2, not of f (a documented defect, kept for comparison only).

Speed: the history of Broyden and Anderson lives in buffers borrowed from a ``Workspace``
(``WORKSPACE`` by default), so repeated solves of one shape (every training step) allocate
and fill nothing; every product with the history is a batched matrix product of row vectors
([B, r, n] x [B, n, k] and [B, r, k] x [B, k, n]), the fast layout of CPU BLAS; Broyden reads
each history buffer twice per step (the products are memory-bound: bytes read set the time).
Per evaluation of f the bookkeeping reads one small tensor back (both batch norms, and the
improved-sample count when the best iterate is kept by reference); Broyden writes its iterates
into a reused buffer and picks each sample's best at the end.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..registry import Registry

STOP_MODES = ("abs", "rel")
EPS = 1e-12


@dataclass
class SolverStat:
    """Statistics of one solve. Norms are over the whole batch; ``nstep`` counts calls of f."""

    name: str
    nstep: int = 0
    abs_trace: list = field(default_factory=list)
    rel_trace: list = field(default_factory=list)
    abs_lowest: float = math.inf
    rel_lowest: float = math.inf
    converged: bool = False
    tol: float = 0.0
    stop_mode: str = "rel"
    buffer_bytes: int = 0        # solver state kept alive during the solve (history buffers)

    def summary(self) -> dict:
        """Scalars only (for per-step training statistics)."""
        return {"nstep": self.nstep, "abs_lowest": self.abs_lowest, "rel_lowest": self.rel_lowest,
                "converged": float(self.converged), "buffer_bytes": self.buffer_bytes}


class Workspace:
    """Solver buffers reused across solves: a solve borrows a buffer of its exact shape, dtype and
    device and hands it back when it ends, so training steps after the first allocate (and, with
    ``torch.utils.deterministic.fill_uninitialized_memory``, fill) no history. A buffer in use is
    never handed out twice (nested solves get their own). Idle buffers beyond ``max_idle_bytes``
    are dropped, least recently returned first; ``clear()`` drops them all.
    Buffer contents are stale: solvers read only what they wrote in the same solve."""

    def __init__(self, max_idle_bytes: int = 2 * 1024 ** 3):
        self.max_idle_bytes = int(max_idle_bytes)
        self._idle: list[torch.Tensor] = []      # most recently returned last

    def take(self, shape, dtype, device) -> torch.Tensor:
        shape, device = torch.Size(shape), torch.device(device)
        for i in range(len(self._idle) - 1, -1, -1):
            t = self._idle[i]
            if t.shape == shape and t.dtype == dtype and t.device == device:
                return self._idle.pop(i)
        return torch.empty(shape, dtype=dtype, device=device)

    def give(self, t: torch.Tensor) -> None:
        self._idle.append(t)
        while self._idle and self.idle_bytes() > self.max_idle_bytes:
            self._idle.pop(0)

    @contextmanager
    def borrow(self, shape, dtype, device):
        """``with ws.borrow(shape, dtype, device) as buf:`` a buffer (uninitialised contents)."""
        t = self.take(shape, dtype, device)
        try:
            yield t
        finally:
            self.give(t)

    def idle_bytes(self) -> int:
        return sum(_nbytes(t) for t in self._idle)

    def clear(self) -> None:
        self._idle.clear()


WORKSPACE = Workspace()


def _borrow(workspace: Workspace | None, shape, like: torch.Tensor):
    if workspace is None:           # no reuse: a fresh buffer for this solve
        return _fresh(shape, like)
    return workspace.borrow(shape, like.dtype, like.device)


@contextmanager
def _fresh(shape, like):
    yield torch.empty(shape, dtype=like.dtype, device=like.device)


class _Tracker:
    """Residual bookkeeping shared by the solvers: traces, per-sample best iterate, stopping.

    Two ways to keep the best iterate per sample: by reference (default; solvers never modify an
    iterate in place), or, with ``iterates`` ([max_iter, B, n], iterate k written to
    ``iterates[k]`` by the solver before its k-th record), by picking, at the end, the iterate
    of lowest residual from the per-sample norms recorded on the way (no selection per step)."""

    def __init__(self, name: str, z0: torch.Tensor, tol: float, stop_mode: str,
                 iterates: torch.Tensor | None = None):
        _check_start(z0, stop_mode)
        self.stat = SolverStat(name=name, tol=float(tol), stop_mode=stop_mode)
        self.shape = z0.shape
        self.iterates = iterates
        if iterates is not None:         # per step and sample: (||r||, ||f(z)||)
            self.norms = torch.empty(iterates.shape[0], 2, z0.shape[0], dtype=z0.dtype, device=z0.device)
            return
        self.best = z0.detach().clone()
        self._z0_ptr = z0.data_ptr()
        self.best_res = torch.full((z0.shape[0],), math.inf, dtype=z0.dtype, device=z0.device)
        self.best_fnorm = torch.ones_like(self.best_res)

    def record(self, z: torch.Tensor, fz: torch.Tensor, r: torch.Tensor | None = None) -> bool:
        """Record f(z) for iterate z (``r``: f(z) - z as [B, n] when the solver has it already);
        returns True when the stopping criterion is met. The solver must not modify ``z`` later
        (the best iterate is kept by reference, or lives in ``iterates``)."""
        B = z.shape[0]
        if r is None:
            r = fz - z
        st = self.stat
        if self.iterates is not None:
            norms = self.norms[st.nstep]
            torch.linalg.vector_norm(r.reshape(B, -1), dim=1, out=norms[0])
            torch.linalg.vector_norm(fz.reshape(B, -1), dim=1, out=norms[1])
            # one read-out per step: the batch norms, accumulated in float64
            a, fn = torch.linalg.vector_norm(norms, dim=1, dtype=torch.float64).tolist()
            a2, f2 = a * a, fn * fn
        else:
            rs = torch.linalg.vector_norm(r.reshape(B, -1), dim=1)         # per sample, in the iterate's dtype
            fs = torch.linalg.vector_norm(fz.reshape(B, -1), dim=1)
            better = rs < self.best_res
            # one read-out per step: the squared batch norms (accumulated in float64) and how many samples
            # improved (the squares of the 0/1 flags are the flags)
            a2, f2, n_better = torch.stack((rs, fs, better.to(rs.dtype))).double().square_().sum(1).tolist()
        if not math.isfinite(a2):
            raise FloatingPointError(f"{st.name}: the residual became non-finite at step "
                                     f"{st.nstep + 1}; the iteration diverged")
        a = math.sqrt(a2)
        rel = a / (math.sqrt(f2) + EPS)
        st.nstep += 1
        st.abs_trace.append(a)
        st.rel_trace.append(rel)
        if self.iterates is None:
            if n_better == B:                 # the common case: keep this iterate (no copy, no masked select)
                self.best = z.detach().reshape(self.best.shape)
                self.best_res, self.best_fnorm = rs, fs
            elif n_better > 0:
                shape = (B,) + (1,) * (self.best.dim() - 1)
                self.best = torch.where(better.view(shape), z.detach().reshape(self.best.shape), self.best)
                self.best_res = torch.where(better, rs, self.best_res)
                self.best_fnorm = torch.where(better, fs, self.best_fnorm)
        value = a if st.stop_mode == "abs" else rel
        return value < st.tol

    def finish(self, buffer_bytes: int = 0, last: torch.Tensor | None = None):
        """(best iterate, stat); ``last`` returns that iterate instead of the best one. The result
        never shares memory with the caller's x0 or with the ``iterates`` buffer."""
        st = self.stat
        if self.iterates is not None:
            steps, B = st.nstep, self.shape[0]
            rs = self.norms[:steps, 0]
            step = rs.argmin(0)                 # per sample, the first step of lowest residual
            flat = step * B + torch.arange(B, device=step.device)      # row of (step, sample) in [steps * B, n]
            self.best = self.iterates[:steps].reshape(steps * B, -1).index_select(0, flat).reshape(self.shape)
            self.best_res = rs.reshape(-1).index_select(0, flat)
            self.best_fnorm = self.norms[:steps, 1].reshape(-1).index_select(0, flat)
        else:
            if last is not None:
                self.best = last.detach()
            if self.best.data_ptr() == self._z0_ptr:      # never hand the caller's own tensor back
                self.best = self.best.clone()
        st.abs_lowest = float(self.best_res.double().norm())
        st.rel_lowest = st.abs_lowest / (float(self.best_fnorm.double().norm()) + EPS)
        st.converged = (st.abs_lowest if st.stop_mode == "abs" else st.rel_lowest) < st.tol
        st.buffer_bytes = int(buffer_bytes)
        return self.best, st


def _check_start(x0, stop_mode):
    if stop_mode not in STOP_MODES:
        raise ValueError(f"stop_mode must be one of {STOP_MODES}, got {stop_mode!r}")
    if not torch.is_tensor(x0) or x0.dim() < 1 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a batched tensor [B, ...] with B >= 1, got {getattr(x0, 'shape', x0)}")


def _check(max_iter, tol):
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@torch.no_grad()
def fixed_point(f: Callable, x0: torch.Tensor, *, max_iter: int = 30, tol: float = 1e-6,
                stop_mode: str = "rel", tau: float = 1.0):
    """Damped fixed-point iteration z <- z + tau (f(z) - z), tau in (0, 1]; tau = 1 is plain
    iteration z <- f(z). Converges when f is a contraction (or tau small enough for J - I stable).
    """
    _check(max_iter, tol)
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"damping tau must be in (0, 1], got {tau}")
    tr = _Tracker("fixed_point", x0, tol, stop_mode)
    z = x0
    for _ in range(max_iter):
        fz = f(z)
        r = fz - z
        if tr.record(z, fz, r):
            break
        z = z + tau * r
    return tr.finish(buffer_bytes=2 * _nbytes(x0))


@torch.no_grad()
def ide_iter(f: Callable, x0: torch.Tensor, *, max_iter: int = 30, tol: float = 1e-6, stop_mode: str = "rel"):
    """IDE's released "iter" update z <- (z + G(z)) / 2 with G(z) = f(z) - z, i.e. z <- f(z)/2.

    Kept only to show the defect: for f(z) = J^T z + g it converges to (2I - J^T)^-1 g instead
    of the fixed point (I - J^T)^-1 g. The recorded residual is that of the true equation; the
    last iterate is returned (as IDE does).
    """
    _check(max_iter, tol)
    tr = _Tracker("ide_iter", x0, tol, stop_mode)
    z = x0
    for _ in range(max_iter):
        fz = f(z)
        r = fz - z
        if tr.record(z, fz, r):
            break
        z = 0.5 * (z + r)
    return tr.finish(buffer_bytes=2 * _nbytes(x0), last=z)


@torch.no_grad()
def anderson(f: Callable, x0: torch.Tensor, *, max_iter: int = 30, tol: float = 1e-6, stop_mode: str = "rel",
             m: int = 6, lam: float = 1e-4, beta: float = 1.0, workspace: Workspace | None = WORKSPACE):
    """Anderson acceleration (type II) with history ``m``, Tikhonov ``lam`` and mixing ``beta``.

    Per sample: alpha = argmin ||sum_i alpha_i G_i||^2 + lam s ||alpha||^2 s.t. sum alpha = 1 over
    the last m residuals G_i = f(x_i) - x_i, with s the mean ||G_i||^2 (so ``lam`` is scale-free;
    torchdeq adds an absolute 1e-4); next x = beta sum alpha_i f(x_i) + (1 - beta) sum alpha_i x_i.
    The Gram matrix G G^T is kept (float64) and updated by one row per step; the history
    (f(x_i) and G_i, [B, m, n] each; x_i = f(x_i) - G_i) is borrowed from ``workspace``
    (None: fresh buffers).
    """
    _check(max_iter, tol)
    if m < 1:
        raise ValueError(f"Anderson history m must be >= 1, got {m}")
    tr = _Tracker("anderson", x0, tol, stop_mode)
    shape = x0.shape
    B = shape[0]
    n = x0[0].numel()
    with _borrow(workspace, (2, B, m, n), x0) as hist:
        Fh, G = hist[0], hist[1]
        GG = torch.zeros(B, m, m, dtype=torch.float64, device=x0.device)

        def store(slot, valid, fx, r):
            """Write iterate ``slot`` and its Gram row/column against the ``valid`` filled slots."""
            Fh[:, slot].copy_(fx.reshape(B, n))
            G[:, slot].copy_(r.reshape(B, n))
            row = torch.bmm(G[:, slot:slot + 1], G[:, :valid].transpose(1, 2))[:, 0].double()   # [B, valid]
            GG[:, slot, :valid] = row
            GG[:, :valid, slot] = row

        x = x0
        fx = f(x)
        r = fx - x
        done = tr.record(x, fx, r)
        store(0, 1, fx, r)
        count = 1
        if not done and max_iter > 1:
            x = fx
            fx = f(x)
            r = fx - x
            done = tr.record(x, fx, r)
            if m > 1:
                store(1, 2, fx, r)
            else:
                store(0, 1, fx, r)
            count = min(2, m)
        k = 2
        while not done and k < max_iter:
            h = min(count, m)
            H = torch.zeros(B, h + 1, h + 1, dtype=torch.float64, device=x0.device)
            H[:, 0, 1:] = 1.0
            H[:, 1:, 0] = 1.0
            gg = GG[:, :h, :h]
            scale = gg.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300).view(B, 1, 1)
            H[:, 1:, 1:] = gg + lam * scale * torch.eye(h, dtype=torch.float64, device=x0.device)
            rhs = torch.zeros(B, h + 1, 1, dtype=torch.float64, device=x0.device)
            rhs[:, 0] = 1.0
            alpha = torch.linalg.solve(H, rhs)[:, 1:, 0].to(x0.dtype).unsqueeze(1)     # [B, 1, h]
            xn = torch.bmm(alpha, Fh[:, :h])[:, 0]
            if beta != 1.0:          # beta F + (1 - beta) X = F - (1 - beta) G
                xn = xn - (1 - beta) * torch.bmm(alpha, G[:, :h])[:, 0]
            x = xn.reshape(shape)
            fx = f(x)
            r = fx - x
            done = tr.record(x, fx, r)
            slot = count % m
            store(slot, min(count + 1, m), fx, r)
            count += 1
            k += 1
        return tr.finish(buffer_bytes=_nbytes(hist) + _nbytes(GG) + 2 * _nbytes(x0))


@torch.no_grad()
def broyden(f: Callable, x0: torch.Tensor, *, max_iter: int = 30, tol: float = 1e-6, stop_mode: str = "rel",
            memory: int = 27, workspace: Workspace | None = WORKSPACE):
    """Limited-memory "good" Broyden on g(z) = f(z) - z, without line search (as IDE).

    The inverse Jacobian of g is approximated per sample by B = -I - sum_i u_i w_i^T, starting
    from -I (so the first step is plain iteration z <- f(z)), with at most ``memory`` rank-one
    updates kept (the oldest is overwritten). Step: dz = -B g(z). (``w_i = -v_i`` of the usual
    form B = -I + sum u_i v_i^T: storing w saves a negation per step.)

    The update after the step dz (g -> g', dg = g' - g) is u = (dz - B dg) / (v . dg) with
    v = B^T dz. Since the last step was dz = -B g, dz - B dg = -B g' =: y, so a step reads U and
    W twice each (four batched products): w = -B^T dz = dz + W (U^T dz) and y = g' + U (W^T g');
    then u = -y / (w . dg), and the next step is -B_new g' = y + u (w . g'), less the term
    u_j (w_j . g') of the pair j about to be overwritten once the memory is full. Samples whose
    denominator vanishes get no update (u = w = 0). No update follows the last evaluation.
    U, W ([B, memory, n] each), the two residual rows and the iterates ([max_iter, B, n]) are
    borrowed from ``workspace`` (None: fresh buffers); the best iterate per sample is picked at
    the end from the recorded residual norms.
    """
    _check(max_iter, tol)
    if memory < 1:
        raise ValueError(f"Broyden memory must be >= 1, got {memory}")
    _check_start(x0, stop_mode)
    shape = x0.shape
    B = shape[0]
    n = x0[0].numel()
    mem = min(memory, max(max_iter - 1, 1))
    with _borrow(workspace, (2, B, mem, n), x0) as hist, _borrow(workspace, (2, B, 2, n), x0) as work, \
            _borrow(workspace, (max_iter, B, n), x0) as Z:
        tr = _Tracker("broyden", x0, tol, stop_mode, iterates=Z)
        U, W = hist[0], hist[1]           # row i: u_i and w_i of the i-th kept update
        z = Z[0].copy_(x0.reshape(B, n))
        fz = f(x0)
        gz = fz.reshape(B, n) - z
        done = tr.record(z, fz, gz)
        dz = gz
        used = 0
        zero = x0.new_zeros(())
        while not done and tr.stat.nstep < max_iter:
            z = torch.add(z, dz, out=Z[tr.stat.nstep])
            fz = f(z.view(shape))
            rows = work[tr.stat.nstep % 2]        # (dg, g') of this step; the other half holds g
            g_new = torch.sub(fz.reshape(B, n), z, out=rows[:, 1])
            done = tr.record(z, fz, g_new)
            if done or tr.stat.nstep == max_iter:     # no further step: skip the update
                break
            torch.sub(g_new, gz, out=rows[:, 0])      # dg
            gz = g_new
            k = min(used, mem)
            slot = used % mem
            dz1, g1 = dz.unsqueeze(1), g_new.unsqueeze(1)
            if k == 0:
                w, y = dz1, g1
            else:
                Uk, Wk = U[:, :k], W[:, :k]
                w = torch.baddbmm(dz1, torch.bmm(dz1, Uk.transpose(1, 2)), Wk)      # -B^T dz  [B, 1, n]
                coef = torch.bmm(g1, Wk.transpose(1, 2))                              # w_i . g'  [B, 1, k]
                y = torch.baddbmm(g1, coef, Uk)                                       # -B g'  [B, 1, n]
            dots = torch.bmm(w, rows.transpose(1, 2))[:, 0]       # (w . dg, w . g')  [B, 2]
            den = dots[:, :1]
            y = y[:, 0]
            ok = den.abs() > 1e-30
            scale = torch.where(ok, den.reciprocal().neg_(), 0.0)        # -1 / (w . dg), or 0: no update
            # -B' g': without the term of the pair about to be overwritten (once the memory is full)
            p = y if used < mem else torch.addcmul(y, U[:, slot], coef[:, 0, slot:slot + 1], value=-1.0)
            u = torch.mul(y, scale, out=U[:, slot])
            torch.where(ok, w[:, 0], zero, out=W[:, slot])
            used += 1
            dz = torch.addcmul(p, u, dots[:, 1:])        # -B'' g' = -B' g' + u (w . g')
        return tr.finish(buffer_bytes=_nbytes(hist) + _nbytes(work) + _nbytes(Z))


SOLVERS = Registry("solver")
"""Solvers by name: ``fn(f, x0, *, max_iter, tol, stop_mode, **options) -> (z, SolverStat)``."""
for _name, _fn in (("broyden", broyden), ("anderson", anderson), ("fixed_point", fixed_point), ("ide_iter", ide_iter)):
    SOLVERS.register(_name)(_fn)


def register_solver(name: str, fn: Callable) -> Callable:
    """Add a solver ``fn(f, x0, *, max_iter, tol, stop_mode, **options) -> (z, SolverStat)``."""
    return SOLVERS.register(name)(fn)


def get_solver(name: str) -> Callable:
    """The solver registered as ``name`` (ConfigError, a ValueError, naming the known ones)."""
    return SOLVERS.get(name)
