"""A procedurally generated 10-class 32x32 colour data set: the offline default for demos and tests.

Why it exists: the checklist needs a data set that is always there (no network), small enough to train
on 2 CPU cores in a minute, and hard enough that the learning rate visibly matters. Classes differ by
*shape or texture*, never by colour: every image draws its own foreground, background and second colour,
position, scale, rotation and aspect, and gets background gradients, clutter strokes and pixel noise.

Generation is vectorised numpy (per class group, in chunks), deterministic: the same sizes and seed give
identical bytes on the same platform.
"""

from __future__ import annotations

import numpy as np
import torch

from tuneassist.dataref import BUILTIN

CLASSES: list[str] = [
    "disc",
    "square",
    "triangle",
    "ring",
    "plus",
    "frame",
    "crescent",
    "stripes",
    "checker",
    "dots",
]
SIZE = 32
DEFAULT_TRAIN = BUILTIN["synthetic"].train  # 10,000: the size every layer counts with (tuneassist.dataref)
DEFAULT_TEST = 2_000
_CHUNK = 1024  # images generated at once: bounds memory (~40 MB) and keeps arrays cache-friendly
_N_CLUTTER = 2  # clutter strokes per image


def default_test_size(n_train: int) -> int:
    """The test split is a fifth of the train size (2,000 for the default 10,000)."""
    return max(len(CLASSES), n_train // 5)


def generate(
    n_train: int = DEFAULT_TRAIN, n_test: int | None = None, seed: int = 0
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (classes, train_x, train_y, test_x, test_y); x uint8 N,3,32,32, y int64, exactly balanced.

    Train and test come from independent random streams of `seed`, so they share no images.
    """
    if n_test is None:
        n_test = default_test_size(n_train)
    train_x, train_y = _generate_split(n_train, np.random.SeedSequence([seed, 0]))
    test_x, test_y = _generate_split(n_test, np.random.SeedSequence([seed, 1]))
    return list(CLASSES), train_x, train_y, test_x, test_y


def _generate_split(n: int, seq: np.random.SeedSequence) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.Generator(np.random.PCG64(seq))
    k = len(CLASSES)
    # Exactly balanced labels (n % k classes get one extra), in random order.
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        out[start:stop] = _render(labels[start:stop], rng)
    return torch.from_numpy(out), torch.from_numpy(labels)


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.random((n, 3), dtype=np.float32)


def _contrasting(rng: np.random.Generator, ref: np.ndarray, min_dist: float) -> np.ndarray:
    """Random colours at least `min_dist` (RGB Euclidean) from `ref`: redraw a few times, then invert."""
    col = _random_colours(rng, len(ref))
    for _ in range(4):
        bad = np.linalg.norm(col - ref, axis=1) < min_dist
        if not bad.any():
            break
        col[bad] = _random_colours(rng, int(bad.sum()))
    bad = np.linalg.norm(col - ref, axis=1) < min_dist
    col[bad] = 1.0 - ref[bad]
    # Mid-grey refs invert onto themselves: push those apart along the brightness axis.
    still = np.linalg.norm(col - ref, axis=1) < min_dist
    col[still] = np.where(ref[still].mean(axis=1, keepdims=True) > 0.5, 0.05, 0.95)
    return col


def _soft(sd_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (positive inside)."""
    return np.clip(sd_px + 0.5, 0.0, 1.0)


def _shape_sd(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (in units of the object radius, positive inside) of each shape class."""
    au, av = np.abs(u), np.abs(v)
    r = np.sqrt(u * u + v * v)
    if name == "disc":
        return 1.0 - r
    if name == "square":
        return 0.8 - np.maximum(au, av)
    if name == "triangle":
        # Equilateral, circumradius 1: three half-planes at distance 0.5 from the centre.
        d = v.copy()
        for ang in (np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            np.maximum(d, np.cos(ang) * u + np.sin(ang) * v, out=d)
        return 0.5 - d
    if name == "ring":
        return 0.22 - np.abs(r - 0.72)
    if name == "plus":
        arm1 = np.minimum(0.3 - au, 1.0 - av)
        arm2 = np.minimum(1.0 - au, 0.3 - av)
        return np.maximum(arm1, arm2)
    if name == "frame":
        m = np.maximum(au, av)
        return np.minimum(0.85 - m, m - 0.5)
    if name == "crescent":
        bite = np.sqrt((u - 0.45) ** 2 + v * v) - 0.75
        return np.minimum(1.0 - r, bite)
    raise AssertionError(name)


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render one chunk of images (n,3,32,32 uint8) for the given labels."""
    n = len(labels)
    f32 = np.float32
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(f32) + 0.5
    xs, ys = xs[None], ys[None]

    # Per-image geometry: position, scale, rotation and aspect jitter.
    cx = rng.uniform(10, 22, n).astype(f32)[:, None, None]
    cy = rng.uniform(10, 22, n).astype(f32)[:, None, None]
    radius = rng.uniform(7.0, 12.0, n).astype(f32)[:, None, None]
    theta = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    aspect = np.exp(rng.uniform(-0.15, 0.15, n)).astype(f32)[:, None, None]
    dx, dy = xs - cx, ys - cy
    c, s = np.cos(theta), np.sin(theta)
    u = (c * dx + s * dy) / (radius * aspect)
    v = (-s * dx + c * dy) * aspect / radius

    # Per-image colours: background, foreground (contrasting), a second texture colour.
    bg = _random_colours(rng, n)
    fg = _contrasting(rng, bg, 0.55)
    fg2 = _contrasting(rng, fg, 0.45)

    # Texture parameters (used by texture classes only; drawn for all to keep the stream simple).
    period = rng.uniform(3.5, 6.5, n).astype(f32)[:, None, None]
    phase_u = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    phase_v = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    region_is_disc = rng.random(n) < 0.5

    alpha = np.empty((n, SIZE, SIZE), dtype=f32)  # object coverage
    pattern = np.ones((n, SIZE, SIZE), dtype=f32)  # 1: foreground colour, 0: second colour
    for k, name in enumerate(CLASSES):
        idx = np.nonzero(labels == k)[0]
        if len(idx) == 0:
            continue
        uu, vv, rr = u[idx], v[idx], radius[idx]
        if name in ("stripes", "checker", "dots"):
            # Texture inside a disc or square region; the region outline carries no class information.
            disc = 1.0 - np.sqrt(uu * uu + vv * vv)
            square = 0.85 - np.maximum(np.abs(uu), np.abs(vv))
            alpha[idx] = _soft(np.where(region_is_disc[idx, None, None], disc, square) * rr)
            w = 2 * np.pi * rr / period[idx]  # radians per unit of u
            a, b = w * uu + phase_u[idx], w * vv + phase_v[idx]
            if name == "stripes":
                p = np.sin(a)
            elif name == "checker":
                p = np.sin(a) * np.sin(b) * 1.6
            else:  # dots: bright spots on a grid
                p = np.cos(a) + np.cos(b) - 1.0
            pattern[idx] = np.clip(p * 2.5 + 0.5, 0.0, 1.0)
        else:
            alpha[idx] = _soft(_shape_sd(name, uu, vv) * rr)

    # Background: base colour plus a random linear gradient.
    gdir = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    gamp = rng.uniform(0.0, 0.25, (n, 3)).astype(f32)[:, :, None, None]
    ramp = ((np.cos(gdir) * (xs - 16) + np.sin(gdir) * (ys - 16)) / 16)[:, None]
    img = gamp * ramp
    img += bg[:, :, None, None]

    # Clutter strokes behind the object: thin random segments in random colours (blended in place).
    keep = np.empty((n, 1, SIZE, SIZE), dtype=f32)
    for _ in range(_N_CLUTTER):
        p0 = rng.uniform(0, SIZE, (n, 2)).astype(f32)
        p1 = p0 + rng.uniform(-14, 14, (n, 2)).astype(f32)
        width = rng.uniform(0.3, 0.9, n).astype(f32)[:, None, None]
        col = _random_colours(rng, n)[:, :, None, None]
        strength = (rng.random(n) < 0.8).astype(f32)[:, None, None, None] * 0.5
        cover = _soft(width - _segment_distance(xs, ys, p0, p1))[:, None]
        cover *= strength
        np.subtract(1.0, cover, out=keep)
        img *= keep
        img += col * cover

    # Object on top, with mild shading so the fill is not perfectly flat.
    shade = 1.0 + rng.uniform(-0.1, 0.1, n).astype(f32)[:, None, None] * v
    a = alpha[:, None]
    pat = pattern[:, None]
    obj = fg2[:, :, None, None] + (fg - fg2)[:, :, None, None] * pat
    obj *= (shade * alpha)[:, None]
    np.subtract(1.0, a, out=keep)
    img *= keep
    img += obj

    # Pixel noise of a per-image strength (uniform with std sigma: much cheaper to draw than Gaussian).
    sigma = rng.uniform(0.01, 0.06, n).astype(f32)[:, None, None, None] * np.float32(255.0 * np.sqrt(12.0))
    noise = rng.random(img.shape, dtype=f32)
    noise -= 0.5
    noise *= sigma
    img *= 255.0
    img += noise
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)


def _segment_distance(xs: np.ndarray, ys: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance of every pixel centre to each image's segment p0-p1 (n,32,32)."""
    ax, ay = p0[:, 0, None, None], p0[:, 1, None, None]
    ex, ey = (p1[:, 0] - p0[:, 0])[:, None, None], (p1[:, 1] - p0[:, 1])[:, None, None]
    length2 = np.maximum(ex * ex + ey * ey, 1e-6)
    t = np.clip(((xs - ax) * ex + (ys - ay) * ey) / length2, 0.0, 1.0)
    qx, qy = xs - ax - t * ex, ys - ay - t * ey
    return np.sqrt(qx * qx + qy * qy)
