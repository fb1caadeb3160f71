"""The built-in dataset: deterministic synthetic chest X-rays with lung masks.

Each image is drawn from its own seed, so a given (seed, index, size, domain) always gives the
same pixels. The picture: a torso, rib cage, spine, heart, clavicles and two dark lung fields
(whose union minus the heart is the mask); the pneumonia class adds patchy opacities inside the
lungs. A domain (intensity curve, contrast, brightness, noise) plays the part of a hospital or
scanner, so classification and segmentation data can come from different sources, as in the paper.
"""

from __future__ import annotations

import numpy as np

from mmdist.data.imageset import ImageSet


def _ellipse(x, y, cx, cy, rx, ry, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2


def _smooth_noise(rng, size, cells):
    """Low-frequency noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    coarse = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def render_chest(size: int, rng: np.random.Generator, pneumonia: bool, domain) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image. Returns (image (size, size) uint8, lung mask (size, size) uint8 {0,1})."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    jitter = lambda scale: rng.normal(0, scale)  # noqa: E731

    torso = _ellipse(x, y, jitter(0.02), 0.12 + jitter(0.02), 0.86 + jitter(0.03), 1.08) < 1
    image = np.where(torso, 0.42, 0.05)

    lungs = np.zeros_like(image, dtype=bool)
    for side in (-1, 1):
        cx = side * (0.36 + jitter(0.025))
        cy = -0.02 + jitter(0.03)
        rx, ry = 0.25 + jitter(0.02), 0.56 + jitter(0.03)
        lungs |= _ellipse(x, y, cx, cy, rx, ry, side * (0.12 + jitter(0.03))) < 1
    heart = _ellipse(x, y, 0.12 + jitter(0.03), 0.3 + jitter(0.03), 0.27 + jitter(0.02),
                     0.22 + jitter(0.02)) < 1
    mask = lungs & ~heart & torso
    image = np.where(mask, 0.14, image)
    image = np.where(heart & torso, 0.58, image)

    # Ribs: curved bands across the chest, brighter where they cross the dark lungs.
    ribs = np.zeros_like(image)
    for k in range(9):
        yk = -0.72 + k * 0.16 + jitter(0.01)
        curve = yk + 0.22 * x ** 2
        ribs += np.exp(-((y - curve) / 0.022) ** 2)
    image += 0.13 * np.clip(ribs, 0, 1) * torso
    spine = np.exp(-(x / 0.07) ** 6) * (y > -0.85)
    image = np.maximum(image, 0.62 * spine * torso)
    for side in (-1, 1):  # clavicles
        curve = -0.7 + 0.25 * (x - side * 0.35) ** 2
        image += 0.18 * np.exp(-((y - curve) / 0.03) ** 2) * (np.abs(x - side * 0.35) < 0.35)

    if pneumonia:
        texture = _smooth_noise(rng, size, 12)
        inside = np.argwhere(mask)
        opacity = np.zeros_like(image)
        for _ in range(rng.integers(2, 5)):
            cy_i, cx_i = inside[rng.integers(len(inside))]
            sigma = rng.uniform(0.07, 0.16)
            cy_n, cx_n = -1 + 2 * cy_i / (size - 1), -1 + 2 * cx_i / (size - 1)
            opacity += rng.uniform(0.22, 0.4) * np.exp(-((x - cx_n) ** 2 + (y - cy_n) ** 2) / (2 * sigma ** 2))
        image += np.clip(opacity, 0, 0.45) * (0.6 + 0.8 * texture) * mask

    image += 0.04 * (_smooth_noise(rng, size, 6) - 0.5)
    image = np.clip(image, 0, 1)
    image = np.clip(domain.brightness + domain.contrast * (image - 0.5) + 0.5, 0, 1) ** domain.gamma
    image = image + rng.normal(0, domain.noise, image.shape)
    image = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return image, mask.astype(np.uint8)


def _image_rng(seed: int, index: int, size: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, size])


def _draw_label(rng: np.random.Generator, pneumonia_fraction: float) -> int:
    """The first draw of an image's generator is its class (the rest renders it)."""
    return int(rng.random() < pneumonia_fraction)


def synthetic_imageset(count: int, size: int, seed: int, domain, source: str,
                       pneumonia_fraction: float = 0.5) -> ImageSet:
    """Generate ``count`` images of ``size`` px; labels, masks and one patient id per image."""
    images = np.empty((count, size, size), dtype=np.uint8)
    masks = np.empty((count, size, size), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for index in range(count):
        rng = _image_rng(seed, index, size)
        labels[index] = _draw_label(rng, pneumonia_fraction)
        images[index], masks[index] = render_chest(size, rng, bool(labels[index]), domain)
    return _with_ids(images, labels, masks, source)


def synthetic_catalog(count: int, size: int, seed: int, source: str,
                      pneumonia_fraction: float = 0.5) -> ImageSet:
    """The labels, masks flags and patients of ``synthetic_imageset`` without its pixels:
    1x1 placeholder images, for split arithmetic (how many training images an epoch has)."""
    labels = np.array([_draw_label(_image_rng(seed, i, size), pneumonia_fraction)
                       for i in range(count)], dtype=np.int64)
    placeholder = np.zeros((count, 1, 1), dtype=np.uint8)
    return _with_ids(placeholder, labels, placeholder, source)


def _with_ids(images, labels, masks, source: str) -> ImageSet:
    count = len(images)
    patients = np.array([f"{source}-{i:05d}" for i in range(count)], dtype=object)
    names = np.array([f"synthetic://{source}/{i}" for i in range(count)], dtype=object)
    return ImageSet(images=images, labels=labels, masks=masks, patients=patients, source=source,
                    names=names)
