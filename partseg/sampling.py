"""Samplers: which minicubes an epoch trains on, and how DDP ranks share them.

A sampler turns a store, a :class:`~partseg.geometry.Partition` and a list of case ids into a
list of :class:`Sample` per epoch. Three kinds:

* ``grid``: every minicube of the regular grid of every case (``partition.grid(case.shape)``),
  in case order then C order; the same for every epoch. Validation and inference-like passes.
* ``uniform``: ``samples_per_case`` random cores per case.
* ``foreground``: like ``uniform``, but a share ``foreground_share`` of the epoch's samples is
  centred (within ``jitter``) on a foreground voxel drawn from ``case.class_locations(cls)``
  (recorded at ingest). With ``class_balanced`` the class is drawn uniformly among the foreground
  classes present in the case, so the rarest class (BraTS enhancing tumour, an aneurysm) is seen
  as often as the largest; otherwise a class is drawn in proportion to its voxel count.

Rules shared by every random draw:

* **Stride-aligned origins.** Core origins are multiples of ``partition.stride`` per axis, like
  the inference grid (whose origins are multiples of the core, itself a multiple of the stride),
  so training and inference see the same pooling phase.
* **Cores overlap the volume.** A uniform origin ``o`` along an axis of length ``n`` with core
  ``c`` and stride ``s`` is drawn among the multiples of ``s`` in ``[min(0, a), max(0, a)]`` with
  ``a = ceil((n - c) / s) * s``: when ``c <= n`` the core stays inside the volume except for at
  most ``s - 1`` virtual voxels at the end; when ``c > n`` (a core or margin larger than the
  volume is allowed) the whole axis lies inside the core and the rest is zero padded.
* **Fallbacks.** A case without any foreground voxel (``voxel_counts`` and
  ``class_locations`` both empty for every foreground class) gets uniform draws instead; its
  samples still count towards the foreground share of the epoch, which is then lower than asked.

2D training uses the same samplers with a 2D partition (core 1 along the slice axis, stride 1
there): a sample is then one slice, and its margin along the slice axis gives the neighbouring
slices (2.5D context) that :class:`~partseg.dataset.InputLayout` folds into channels.

Determinism and DDP: :meth:`Sampler.epoch` depends only on ``(seed, epoch)``; ranks take strided
shards of the epoch list, padded by repeating its first samples to a multiple of
``world_size``, so shards are disjoint (as positions in the epoch), complete and equally long.
With a fixed number of steps per epoch the epoch list is cycled to ``length`` samples *before*
it is sharded, so step ``k`` of ``N`` processes with batch ``b`` trains on positions
``[k N b, (k + 1) N b)`` of the one list, as step ``k`` of one process with batch ``N b`` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from partseg.errors import ConfigError, GeometryError, StoreError
from partseg.geometry import Minicube, Partition

SAMPLER_KINDS = ("grid", "uniform", "foreground")


@dataclass(frozen=True)
class Sample:
    """One minicube of one case: what the dataset reads and the loss trains on.

    Attributes:
        case_id: the store's case identifier.
        cube: the minicube, always in 3D (Z, Y, X) volume coordinates.
    """

    case_id: str
    cube: Minicube


@dataclass(frozen=True)
class SamplerConfig:
    """How an epoch's minicubes are drawn.

    Attributes:
        kind: ``"grid"``, ``"uniform"`` or ``"foreground"`` (see the module docstring).
        samples_per_case: random samples per case per epoch (ignored by ``grid``).
        foreground_share: share of an epoch's samples centred on a foreground voxel
            (``foreground`` only), in [0, 1]. The default 0.67 is twice nnU-Net's 0.33, on
            purpose: partseg's recipes train for minutes to hours, not 1000 epochs, and at an
            equal, short budget foreground-centred boxes teach the tumour classes faster
            (realistic phantoms at 3 mm, 120 steps of a width-8 3D U-Net: edema Dice 0.83 vs
            0.43, whole tumour better on 3 of 3 held-out cases) while 0.33 did not reduce the
            predictions in the air (66k voxels per case either way). Those lie mostly in a
            band along the volume border under the ``exact`` mode (the same models predicted on
            the grid with their trained margin put none there), not in a sampling gap; the
            predictor's nonzero mask (``evaluation.nonzero_mask``, ``predict --nonzero-mask``)
            removes them.
        class_balanced: draw the foreground class uniformly among those present in the case
            (True), or in proportion to voxel counts (False).
        jitter: how far a foreground voxel may sit from the core centre, as a fraction of the
            half core per axis: 0 keeps it at the (stride-aligned) centre, 1 anywhere in the core.

    Example:
        >>> SamplerConfig(kind="uniform", samples_per_case=2).foreground_share
        0.67
    """

    kind: str = "foreground"
    samples_per_case: int = 4
    foreground_share: float = 0.67
    class_balanced: bool = True
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ConfigError(f"sampler kind {self.kind!r} is unknown; use one of {SAMPLER_KINDS}")
        if isinstance(self.samples_per_case, bool) or not isinstance(self.samples_per_case, int):
            raise ConfigError(
                f"sampler samples_per_case must be an integer, got {self.samples_per_case!r}"
            )
        if self.samples_per_case < 1:
            raise ConfigError(
                f"sampler samples_per_case must be at least 1, got {self.samples_per_case}"
            )
        for name in ("foreground_share", "jitter"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"sampler {name} must lie in [0, 1], got {value}")


class Sampler(Protocol):
    """Anything that lists an epoch's samples for one DDP rank."""

    def epoch(
        self, epoch: int, rank: int = 0, world_size: int = 1, length: int | None = None
    ) -> list[Sample]:
        """This rank's samples of ``epoch`` (deterministic in the sampler's seed and epoch);
        ``length``: the epoch's samples cycled (or cut) to this many before sharding."""
        ...


def shard(samples: Sequence[Sample], rank: int = 0, world_size: int = 1) -> list[Sample]:
    """The strided share of ``samples`` that DDP rank ``rank`` of ``world_size`` trains on.

    The list is padded by repeating its first samples up to a multiple of ``world_size``, so
    every rank gets the same number of samples and the shards cover every position once.

    Example:
        >>> shard(list("abcde"), rank=1, world_size=2)
        ['b', 'd', 'a']
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size must be a positive integer, got {world_size!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    items = list(samples)
    if not items:
        return []
    padded = items + [items[i % len(items)] for i in range(-len(items) % world_size)]
    return padded[rank::world_size]


def cycle(samples: Sequence[Sample], length: int) -> list[Sample]:
    """``samples`` repeated in order (or cut) to ``length`` items.

    Example:
        >>> cycle(list("abc"), 5)
        ['a', 'b', 'c', 'a', 'b']
    """
    items = list(samples)
    return [items[i % len(items)] for i in range(length)] if items else []


@dataclass(frozen=True)
class _CaseInfo:
    """What a sampler keeps per case: its shape and which foreground classes it holds."""

    case_id: str
    shape: tuple[int, ...]
    voxel_counts: Mapping[int, int]


class _BaseSampler:
    """Shared plumbing: case bookkeeping, seeding and sharding."""

    def __init__(
        self,
        config: SamplerConfig,
        store: Any,
        partition: Partition,
        case_ids: Sequence[str],
        seed: int = 0,
    ) -> None:
        if partition.ndim != 3:
            raise GeometryError(
                f"samplers need a 3D (Z, Y, X) partition, got core {partition.core}; 2D models "
                "use a 3D partition with core 1 along the slice axis"
            )
        self.config = config
        self.store = store
        self.partition = partition
        self.seed = int(seed)
        self.cases = tuple(_case_info(store, cid) for cid in _check_case_ids(store, case_ids))

    def epoch(
        self, epoch: int, rank: int = 0, world_size: int = 1, length: int | None = None
    ) -> list[Sample]:
        """This rank's samples of ``epoch``; see :func:`shard` and :func:`cycle`."""
        samples = self.draw(int(epoch))
        return shard(samples if length is None else cycle(samples, length), rank, world_size)

    def draw(self, epoch: int) -> list[Sample]:
        """Every sample of ``epoch`` before sharding."""
        raise NotImplementedError

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def _uniform(self, info: _CaseInfo, rng: np.random.Generator) -> Sample:
        origin = uniform_origin(info.shape, self.partition, rng)
        return Sample(info.case_id, self.partition.at(origin))


class GridSampler(_BaseSampler):
    """Every grid minicube of every case, the same list for every epoch.

    Example:
        >>> from types import SimpleNamespace
        >>> from partseg.geometry import make_partition
        >>> store = {"a": SimpleNamespace(shape=(4, 4, 8), voxel_counts={0: 128})}
        >>> sampler = GridSampler(SamplerConfig("grid"), store, make_partition(4, 0, 4, 3), ["a"])
        >>> [s.cube.origin for s in sampler.epoch(0)]
        [(0, 0, 0), (0, 0, 4)]
    """

    def draw(self, epoch: int) -> list[Sample]:
        return [
            Sample(info.case_id, cube)
            for info in self.cases
            for cube in self.partition.grid(info.shape)
        ]


class UniformSampler(_BaseSampler):
    """``samples_per_case`` uniformly placed, stride-aligned cores per case, shuffled."""

    def draw(self, epoch: int) -> list[Sample]:
        rng = self._rng(epoch)
        samples = [
            self._uniform(info, rng)
            for info in self.cases
            for _ in range(self.config.samples_per_case)
        ]
        return [samples[i] for i in rng.permutation(len(samples))]


class ForegroundSampler(_BaseSampler):
    """Uniform draws plus a share of cores centred on (class-balanced) foreground voxels."""

    def draw(self, epoch: int) -> list[Sample]:
        rng = self._rng(epoch)
        n = self.config.samples_per_case
        total = len(self.cases) * n
        n_foreground = round(self.config.foreground_share * total)
        is_foreground = np.zeros(total, dtype=bool)
        is_foreground[rng.permutation(total)[:n_foreground]] = True
        samples = []
        for slot in range(total):
            info = self.cases[slot // n]
            sample = self._foreground(info, rng) if is_foreground[slot] else None
            samples.append(sample if sample is not None else self._uniform(info, rng))
        return [samples[i] for i in rng.permutation(total)]

    def _foreground(self, info: _CaseInfo, rng: np.random.Generator) -> Sample | None:
        """A core around a foreground voxel, or None when the case has no foreground."""
        classes = [c for c, count in sorted(info.voxel_counts.items()) if c > 0 and count > 0]
        if not classes:
            return None
        if self.config.class_balanced:
            cls = classes[int(rng.integers(len(classes)))]
        else:
            weights = np.array([info.voxel_counts[c] for c in classes], dtype=np.float64)
            cls = classes[int(rng.choice(len(classes), p=weights / weights.sum()))]
        locations = np.asarray(self.store[info.case_id].class_locations(cls))  # (N, 3)
        if locations.shape[0] == 0:
            return None
        voxel = tuple(int(v) for v in locations[int(rng.integers(locations.shape[0]))])
        origin = centred_origin(voxel, self.partition, self.config.jitter, rng)
        return Sample(info.case_id, self.partition.at(origin))


_SAMPLERS: dict[str, type[_BaseSampler]] = {
    "grid": GridSampler,
    "uniform": UniformSampler,
    "foreground": ForegroundSampler,
}


def make_sampler(
    config: SamplerConfig,
    store: Any,
    partition: Partition,
    case_ids: Sequence[str],
    seed: int = 0,
) -> Sampler:
    """Build the sampler named by ``config.kind``.

    Args:
        config: which sampler and its parameters.
        store: an open :class:`~partseg.store.zarrstore.Store`, or any mapping from case id to
            an object with ``shape``, ``voxel_counts`` and ``class_locations(cls)`` (only those
            are read).
        partition: the 3D minicube partition (2D models: core 1 along the slice axis).
        case_ids: the cases to draw from (e.g. one cross-validation fold's training cases).
        seed: seed of every random draw; epochs are deterministic in ``(seed, epoch)``.

    Raises:
        StoreError: a case id is not in the store, or no case ids are given.
        GeometryError: the partition is not 3D.

    Example:
        >>> from types import SimpleNamespace
        >>> from partseg.geometry import make_partition
        >>> store = {"a": SimpleNamespace(shape=(4, 4, 8), voxel_counts={0: 128})}
        >>> sampler = make_sampler(SamplerConfig("uniform", samples_per_case=3), store,
        ...                        make_partition(4, 2, 4, 3), ["a"], seed=1)
        >>> len(sampler.epoch(0)), len(sampler.epoch(0, rank=1, world_size=2))
        (3, 2)
    """
    return _SAMPLERS[config.kind](config, store, partition, case_ids, seed)


def uniform_origin(
    shape: Sequence[int], partition: Partition, rng: np.random.Generator
) -> tuple[int, ...]:
    """A random stride-aligned core origin whose core overlaps a volume of ``shape``.

    Worked example, one axis: n = 10, core 4, stride 2 -> a = ceil(6 / 2) * 2 = 6, origins
    {0, 2, 4, 6}; n = 3, core 8, stride 4 -> a = ceil(-5 / 4) * 4 = -4, origins {-4, 0}, both
    cores hold the whole axis.
    """
    origin = []
    for n, c, s in zip(shape, partition.core, partition.stride, strict=True):
        a = math.ceil((int(n) - c) / s) * s
        lo, hi = min(0, a), max(0, a)
        origin.append(int(rng.integers(lo // s, hi // s + 1)) * s)
    return tuple(origin)


def centred_origin(
    voxel: Sequence[int], partition: Partition, jitter: float, rng: np.random.Generator
) -> tuple[int, ...]:
    """A random stride-aligned core origin whose core holds ``voxel`` near its centre.

    Along each axis the candidate origins are the multiples of the stride in
    ``(voxel - core, voxel]`` (the cores that hold the voxel); those putting the voxel within
    ``jitter * core / 2`` of the core centre are drawn uniformly, or the most central one(s)
    when none is that close (small cores, coarse strides).

    Example:
        >>> from partseg.geometry import make_partition
        >>> rng = np.random.default_rng(0)
        >>> centred_origin((9, 9, 9), make_partition(8, 0, 2, 3), 0.0, rng)
        (6, 6, 6)
    """
    origin = []
    for v, c, s in zip(voxel, partition.core, partition.stride, strict=True):
        first, last = (v - c) // s + 1, v // s  # candidate origins k * s, k in [first, last]
        ks = np.arange(first, last + 1)
        offset = np.abs(v - ks * s - (c - 1) / 2)  # distance of the voxel to the core centre
        allowed = ks[offset <= jitter * c / 2]
        if allowed.size == 0:
            allowed = ks[offset == offset.min()]
        origin.append(int(allowed[int(rng.integers(allowed.size))]) * s)
    return tuple(origin)


def _check_case_ids(store: Any, case_ids: Sequence[str]) -> list[str]:
    ids = [str(c) for c in case_ids]
    if not ids:
        raise StoreError(
            f"no cases to sample from store {getattr(store, 'url', store)!r}; "
            "give at least one case id"
        )
    missing = [c for c in ids if c not in store]
    if missing:
        raise StoreError(
            f"cases {missing[:5]} are not in store {getattr(store, 'url', store)!r}; "
            "check the case ids (partseg info lists them) or re-run partseg ingest"
        )
    return ids


def _case_info(store: Any, case_id: str) -> _CaseInfo:
    case = store[case_id]
    shape = tuple(int(s) for s in case.shape)
    counts = {int(k): int(v) for k, v in dict(getattr(case, "voxel_counts", {}) or {}).items()}
    return _CaseInfo(case_id, shape, counts)
