"""Static grayscale images -> CONVERTED DVS-like event streams (simulated N-MNIST-style saccades).

This is simulated data, not a recording: the image is moved along a triangle by three linear
saccades of ``saccade_us`` microseconds each, as N-MNIST's pan-tilt camera did, and a pixel emits
an event each time its log intensity moves a contrast threshold away from its reference level
(ON, p=1, for brighter; OFF, p=0, for darker), as a DVS pixel does.

Sensor: 34x34 pixels and 2 polarities, like N-MNIST, so N-MNIST network shapes apply unchanged; a
28x28 image starts at the top-left pixel and the default triangle (0,0) -> (3,6) -> (6,0) -> (0,0)
keeps it on the sensor.

Events are tonic-compatible structured arrays with N-MNIST's dtype: fields ``x``, ``y`` (pixels),
``t`` (microseconds), ``p`` (0/1), sorted by ``t``. The output depends only on the image, the
:class:`SaccadeConfig`, the ``seed`` and the image's ``index`` (not on batch composition).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

EVENT_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
"""Same as ``tonic.datasets.NMNIST.dtype``."""


@dataclass(frozen=True)
class SaccadeConfig:
    """Settings of the simulated sensor and saccades.

    sensor: (H, W) of the sensor in pixels; the image's top-left corner starts at pixel (0, 0).
    path: (dx, dy) pixel offsets of the triangle's corners, visited in order (one saccade per leg).
    saccade_us: duration of one saccade in microseconds.
    steps_per_saccade: time steps simulated per saccade (event times are interpolated within steps).
    threshold: contrast threshold in log-intensity units.
    threshold_mismatch: relative std of the fixed per-pixel threshold pattern (one sensor per seed).
    log_eps: offset in log(I + log_eps), I in [0, 1]; sets the sensitivity in dark regions.
    noise_rate_hz: background-activity events per pixel per second (random position, time, polarity).
    """

    sensor: tuple[int, int] = (34, 34)
    path: tuple[tuple[float, float], ...] = ((0.0, 0.0), (3.0, 6.0), (6.0, 0.0), (0.0, 0.0))
    saccade_us: int = 100_000
    steps_per_saccade: int = 20
    threshold: float = 0.4
    threshold_mismatch: float = 0.05
    log_eps: float = 0.1
    noise_rate_hz: float = 0.2

    def __post_init__(self):
        if len(self.path) < 2 or self.steps_per_saccade < 1 or self.threshold <= 0 or self.log_eps <= 0:
            raise ValueError(f"invalid SaccadeConfig: {self}")
        if self.saccade_us / self.steps_per_saccade >= 2 ** 16:
            raise ValueError("saccade_us / steps_per_saccade must be below 65536 us (event times within a "
                             "step are sorted as 16-bit offsets)")

    @property
    def duration_us(self) -> int:
        return self.saccade_us * (len(self.path) - 1)

    def fingerprint(self) -> str:
        """Short hash of the settings (used in cache paths)."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


DEFAULT_CONFIG = SaccadeConfig()


def _trajectory(cfg: SaccadeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offsets dx, dy (px) and times t (us) at every simulated step, shape [K + 1] each."""
    corners = np.asarray(cfg.path, dtype=np.float64)
    s = cfg.steps_per_saccade
    frac = np.arange(s) / s
    legs = [corners[i] + frac[:, None] * (corners[i + 1] - corners[i]) for i in range(len(corners) - 1)]
    pos = np.concatenate(legs + [corners[-1:]])
    t = np.arange(len(pos)) * (cfg.saccade_us / s)
    return pos[:, 0], pos[:, 1], t


def _pixel_thresholds(cfg: SaccadeConfig, seed: int) -> np.ndarray:
    """Fixed-pattern per-pixel thresholds [H, W] (the same simulated sensor for every image of a seed)."""
    rng = np.random.default_rng((int(seed), 0))
    return (cfg.threshold * np.exp(cfg.threshold_mismatch * rng.standard_normal(cfg.sensor))).astype(np.float32)


class _Renderer:
    """Places a batch of images [B, h, w] on the sensor at sub-pixel offsets (bilinear, zero outside)."""

    def __init__(self, images: np.ndarray, cfg: SaccadeConfig):
        b, h, w = images.shape
        self.H, self.W = cfg.sensor
        shifts = np.asarray(cfg.path)
        if shifts.min() < 0:
            raise ValueError(f"saccade path offsets must be >= 0, got {cfg.path}")
        self.m = int(np.ceil(shifts.max())) + 2
        rows, cols = max(h, self.H) + 2 * self.m, max(w, self.W) + 2 * self.m
        self.padded = np.zeros((b, rows, cols), dtype=np.float32)
        self.padded[:, self.m:self.m + h, self.m:self.m + w] = images

    def __call__(self, dx: float, dy: float) -> np.ndarray:
        ix, iy = int(np.floor(dx)), int(np.floor(dy))
        fx, fy = np.float32(dx - ix), np.float32(dy - iy)
        r0, c0 = self.m - iy, self.m - ix
        rows = self.padded[:, r0 - 1:r0 + self.H]                       # [B, H + 1, cols]
        a, b = rows[:, :, c0:c0 + self.W], rows[:, :, c0 - 1:c0 - 1 + self.W]
        horiz = a + fx * (b - a)                                        # lerp along x
        return horiz[:, 1:] + fy * (horiz[:, :-1] - horiz[:, 1:])       # lerp along y


def _log_intensity(canvas: np.ndarray, eps: np.float32) -> np.ndarray:
    """log(canvas + eps), computed in place."""
    canvas += eps
    return np.log(canvas, out=canvas)


def _as_intensity(images) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"expected grayscale images [B, H, W] (or [H, W], [B, 1, H, W]), got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError("float images must lie in [0, 1] (uint8 images are scaled by 1/255)")
    return arr


def saccade_events(images, *, seed: int = 0, indices=None,
                   config: SaccadeConfig = DEFAULT_CONFIG) -> list[np.ndarray]:
    """Convert grayscale ``images`` [B, h, w] (uint8, or float in [0, 1]) into event streams.

    ``indices`` [B] (default ``0..B-1``) identify the images for their per-image random stream,
    so converting image ``i`` alone or inside any batch gives the same events.
    Returns B structured arrays (dtype :data:`EVENT_DTYPE`, sorted by ``t``).
    """
    intensity = _as_intensity(images)
    bsz = intensity.shape[0]
    indices = np.arange(bsz) if indices is None else np.asarray(indices, dtype=np.int64)
    if indices.shape != (bsz,):
        raise ValueError(f"indices must have one entry per image ({bsz}), got shape {indices.shape}")
    out = []
    for start in range(0, bsz, BLOCK):      # blocks keep the working set in cache
        out += _convert_block(intensity[start:start + BLOCK], indices[start:start + BLOCK], int(seed), config)
    return out


BLOCK = 64
"""Images converted together; larger blocks are slower (cache misses), smaller ones pay Python overhead."""


def _convert_block(intensity: np.ndarray, indices: np.ndarray, seed: int, cfg: SaccadeConfig) -> list[np.ndarray]:
    bsz = intensity.shape[0]
    H, W = cfg.sensor
    npix = H * W
    thr = _pixel_thresholds(cfg, seed)
    thr_flat = thr.ravel()
    render = _Renderer(intensity, cfg)
    dxs, dys, ts = _trajectory(cfg)
    eps = np.float32(cfg.log_eps)

    rngs = [np.random.default_rng((int(seed), 1, int(i))) for i in indices]
    offsets = np.stack([r.random((H, W), dtype=np.float32) for r in rngs]) - np.float32(0.5)
    prev = _log_intensity(render(dxs[0], dys[0]), eps)
    ref = prev + offsets * thr            # reference levels start within +-thr/2 of the first image
    inv_thr = np.float32(1.0) / thr

    parts = []                            # per step: (step, flat idx, signed counts, ref before, L before, L after)
    for k in range(1, len(ts)):
        cur = _log_intensity(render(dxs[k], dys[k]), eps)
        crossings = np.trunc((cur - ref) * inv_thr)      # signed number of thresholds crossed
        flat = np.flatnonzero(crossings != 0)
        if flat.size:
            parts.append((k, flat, crossings.ravel()[flat], ref.ravel()[flat], prev.ravel()[flat],
                          cur.ravel()[flat]))
            ref += crossings * thr
        prev = cur

    dt = ts[1] - ts[0]
    n_steps = len(ts) - 1
    # Per (pixel, step) group with crossings: everything an event needs, gathered once per event below.
    if parts:
        steps = np.concatenate([np.full(p[1].size, p[0], dtype=np.int64) for p in parts])
        flat, signed, ref0, before, after = (np.concatenate([p[i] for p in parts]) for i in range(1, 6))
        counts = np.abs(signed).astype(np.int64)
        pix = flat % npix
        g_thr = np.sign(signed) * thr_flat[pix]                  # signed threshold
        g_base = ref0 - before                                   # level of crossing j: ref0 + j*g_thr
        span = after - before
        g_inv = np.float32(dt) / np.where(span == 0, np.float32(1), span)   # us per log-intensity unit
        t_start = ts[steps - 1]
        g_t0 = (t_start - np.floor(t_start)).astype(np.float32)  # fractional start within the step
        g_key = (flat // npix * n_steps + steps - 1) << 16       # (image, step) sort key
        g_code = flat * 2 + (signed > 0)                         # image, pixel and polarity
        owner = np.repeat(np.arange(flat.size), counts)
        j = np.arange(owner.size, dtype=np.float32) - np.repeat((np.cumsum(counts) - counts).astype(np.float32),
                                                                counts) + 1
        offset = (g_base[owner] + j * g_thr[owner]) * g_inv[owner]   # us after the step's start
        within = np.floor(np.clip(offset, 0, dt) + g_t0[owner]).astype(np.int64) + 1
        within = np.minimum(within, int(np.floor(dt)))
        ev_key = g_key[owner] | within
        ev_code = g_code[owner]
    else:
        ev_key = ev_code = np.zeros(0, dtype=np.int64)

    if cfg.noise_rate_hz > 0:
        lam = cfg.noise_rate_hz * npix * cfg.duration_us * 1e-6
        keys, codes = [ev_key], [ev_code]
        for b, r in enumerate(rngs):
            m = r.poisson(lam)
            nt = r.integers(1, cfg.duration_us + 1, m)
            step = np.clip(np.ceil(nt / dt).astype(np.int64), 1, n_steps)
            start = np.floor(ts[step - 1]).astype(np.int64)
            keys.append(((b * n_steps + step - 1) << 16) | np.clip(nt - start, 1, None))
            codes.append((b * npix + r.integers(0, npix, m)) * 2 + r.integers(0, 2, m))
        ev_key, ev_code = np.concatenate(keys), np.concatenate(codes)

    order = np.argsort(ev_key, kind="stable")
    ev_key, ev_code = ev_key[order], ev_code[order]
    group = ev_key >> 16
    ev_b = group // n_steps
    ev_t = np.floor(ts[group % n_steps]).astype(np.int64) + (ev_key & 0xFFFF)
    ev_p = ev_code & 1
    pix = (ev_code >> 1) % npix
    ev_y, ev_x = pix // W, pix % W
    bounds = np.searchsorted(ev_b, np.arange(bsz + 1))
    out = []
    for b in range(bsz):
        lo, hi = bounds[b], bounds[b + 1]
        ev = np.empty(hi - lo, dtype=EVENT_DTYPE)
        ev["x"], ev["y"], ev["t"], ev["p"] = ev_x[lo:hi], ev_y[lo:hi], ev_t[lo:hi], ev_p[lo:hi]
        out.append(ev)
    return out


class ConvertedEvents:
    """A tonic-style event dataset of CONVERTED images: ``ds[i]`` -> (events, label).

    ``images`` uint8 [N, h, w]; ``labels`` [N]. ``events_many(indices)`` converts a batch at once.
    """

    sensor_size: tuple[int, int, int]

    def __init__(self, images, labels, *, seed: int = 0, config: SaccadeConfig = DEFAULT_CONFIG,
                 description: str = "CONVERTED static images"):
        self.images = np.asarray(images)
        if self.images.ndim == 4 and self.images.shape[1] == 1:
            self.images = self.images[:, 0]
        self.targets = [int(v) for v in np.asarray(labels)]
        if len(self.targets) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} labels")
        self.seed, self.config, self.description = int(seed), config, description
        self.sensor_size = (config.sensor[1], config.sensor[0], 2)   # tonic order: (W, H, P)

    def __len__(self) -> int:
        return len(self.targets)

    def events_many(self, indices) -> list[tuple[np.ndarray, int]]:
        idx = np.asarray(indices, dtype=np.int64)
        evs = saccade_events(self.images[idx], seed=self.seed, indices=idx, config=self.config)
        return [(e, self.targets[i]) for e, i in zip(evs, idx)]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.events_many([index])[0]

    def fingerprint(self) -> str:
        """Hash of settings, seed and image content (used in cache paths)."""
        h = hashlib.blake2b(digest_size=6)
        h.update(f"{self.config.fingerprint()}-{self.seed}-{self.images.shape}".encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        return h.hexdigest()
