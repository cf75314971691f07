"""The aneurysm-like anatomy: tortuous vessel tubes and tiny saccular blobs on their walls.

Vessels are spline curves painted as chains of spheres; a sac is a small sphere bulging from a
vessel wall, and only its part outside the vessel is labelled.
"""

from __future__ import annotations

import numpy as np

from partseg.phantom.anatomy import BRAIN_OUTER, Head, Tissue

__all__ = ["add_vessels"]


def add_vessels(tissue: np.ndarray, head: Head, rng: np.random.Generator) -> None:
    """Paint 5-8 tortuous vessel tubes and 1-3 saccular blobs touching them (in place).

    A sac is a sphere of radius 2-3 voxels centred just off a vessel wall; its label is the
    part outside the vessel and inside the brain. Sacs that would label nothing or miss the
    painted vessel are redrawn.
    """
    brain = (tissue >= Tissue.CSF) & (tissue <= Tissue.WHITE)
    vessels = np.zeros(tissue.shape, dtype=bool)
    curves = []
    for _ in range(int(rng.integers(5, 9))):
        points, radii = _vessel_curve(head, rng)
        _paint_spheres(vessels, points, radii)
        curves.append((points, radii))
    sacs = np.zeros(tissue.shape, dtype=bool)
    wanted, attempts = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), 0
    while wanted > 0 and attempts < 50:
        attempts += 1
        sac = np.zeros(tissue.shape, dtype=bool)
        centre, radius = _sac_on(curves[int(rng.integers(len(curves)))], rng)
        _paint_spheres(sac, centre[None, :], np.array([radius]))
        sac &= brain
        if (sac & vessels).any() and (sac & ~vessels).any():  # on a wall, labels something
            sacs |= sac & ~vessels
            wanted -= 1
    tissue[vessels & brain] = Tissue.VESSEL
    tissue[sacs] = Tissue.SAC


def _sac_on(
    curve: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of a saccular blob bulging from the wall of ``curve``."""
    points, radii = curve  # (N, 3), (N,)
    i = int(rng.integers(len(points) // 5, max(len(points) * 4 // 5, len(points) // 5 + 1)))
    tangent = points[min(i + 1, len(points) - 1)] - points[max(i - 1, 0)]
    normal = np.cross(tangent, rng.standard_normal(3))
    normal /= max(float(np.linalg.norm(normal)), 1e-6)
    radius = float(rng.uniform(2.0, 3.0))
    return points[i] + normal * (radii[i] + 0.6 * radius), radius


def _vessel_curve(head: Head, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth tortuous curve (N, 3) from the skull base outwards, radius 1-3 voxels (N,).

    Six knots walk away from a start point near the base of the brain along a slowly turning
    direction; a cubic spline through them is sampled every third of a voxel.
    """
    from scipy.interpolate import CubicSpline

    brain_axes = head.axes * BRAIN_OUTER
    start = head.centre + rng.uniform(-0.3, 0.3, 3) * brain_axes
    start[0] = head.centre[0] - rng.uniform(0.2, 0.45) * brain_axes[0]
    direction = rng.standard_normal(3) + np.array([0.8, 0.0, 0.0])  # mostly upwards
    knots = [start]
    for _ in range(5):
        direction = direction / np.linalg.norm(direction) + 0.45 * rng.standard_normal(3)
        candidate = knots[-1] + direction / np.linalg.norm(direction) * 0.3 * brain_axes
        rho = float(np.linalg.norm((candidate - head.centre) / brain_axes))
        if rho > 0.8:  # keep inside the brain
            candidate = head.centre + (candidate - head.centre) * 0.8 / rho
        knots.append(candidate)
    knots_array = np.array(knots)  # (6, 3)
    length = float(np.linalg.norm(np.diff(knots_array, axis=0), axis=1).sum())
    spline = CubicSpline(np.arange(len(knots)), knots_array, axis=0)
    t = np.linspace(0.0, len(knots) - 1, max(int(3 * length), 8))
    radii = np.linspace(rng.uniform(1.5, 3.0), rng.uniform(1.0, 1.5), t.size)
    return spline(t), radii


def _paint_spheres(mask: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> None:
    """Set ``mask`` True within ``radii[i]`` of each ``centres[i]`` (vectorised, clipped)."""
    reach = int(np.ceil(radii.max()))
    offsets = np.stack(
        np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), axis=-1
    ).reshape(-1, 3)  # (K, 3)
    base = np.round(centres).astype(np.int64)  # (N, 3)
    voxels = base[:, None, :] + offsets[None, :, :]  # (N, K, 3)
    dist2 = ((voxels - centres[:, None, :]) ** 2).sum(-1)  # (N, K)
    inside = dist2 <= (radii**2)[:, None]
    inside &= np.all((voxels >= 0) & (voxels < np.asarray(mask.shape)), axis=-1)
    hits = voxels[inside]  # (M, 3)
    mask[hits[:, 0], hits[:, 1], hits[:, 2]] = True
