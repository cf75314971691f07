"""The streaming training dataset: minicubes read from the store, augmented, as tensors.

:class:`MinicubeDataset` reads each sample's input box (core + margin) from the store with
``case.read(box)``, which touches only the chunks the box overlaps and zero pads outside the
volume (the same rule the predictor uses), augments the *whole box* with torchio, and only then
crops the core out of the label, so spatial transforms see the context the network sees.

* **Lazy store per worker.** The dataset keeps the store URL, not zarr handles: it pickles
  cheaply into ``DataLoader`` workers, each of which opens the store on its first item.
* **Memory.** A worker holds one input box (the reuse cache) and the arrays of the item being
  built, whatever the number or size of the cases.
* **Determinism.** Item ``i`` of epoch ``e`` is augmented with a torch seed derived from
  ``(seed, e, i)``, inside :func:`torch.random.fork_rng`, so results do not depend on the
  number of workers nor on which worker builds an item. Call :meth:`MinicubeDataset.set_epoch`
  before iterating each epoch (with ``persistent_workers=False``, the default, workers get a
  fresh copy of the dataset every epoch).
* **Reuse.** With ``reuse=k`` the dataset has ``k * len(samples)`` items; items ``k*j ..
  k*j+k-1`` share sample ``j``: the box is read once per worker and augmented ``k`` times
  (the BraTS paper trained 4 steps on each loaded image). Keep ``shuffle=False`` in the
  ``DataLoader`` (samplers already shuffle) so consecutive items hit the cache.
* **Valid mask.** ``mask`` is True at core voxels inside the volume; it is built as a label map
  over the whole box and goes through the same spatial transforms as the label, so voxels an
  affine moves in from outside the volume are masked too.
* **Derived channels** (``derive``, e.g. the Sobel contour of ``data.derived_channels``) are
  computed on the box as read, before augmentation, exactly as the predictor does; they differ
  from the whole volume's only within one voxel of the box border, which is margin, not core.
* **Unlabelled cases** raise :class:`~partseg.errors.StoreError`: training needs labels.

2D models (``InputLayout(spatial_dims=2)``): the box's slices along the slice axis become
channels, channel order ``(C, slab)`` flattened (index ``c * slab + s``), the augmentation is
in-plane (torchio sees a 2D image), and the target is the core's single slice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio

from partseg.augment import AugmentConfig
from partseg.channels import Derive
from partseg.errors import ConfigError, GeometryError, StoreError
from partseg.geometry import Minicube, Partition
from partseg.sampling import Sample

Array = Any  # np.ndarray or torch.Tensor: the layout functions accept both


def build_transform(config: AugmentConfig, spatial_dims: int) -> tio.Transform | None:
    """The torchio pipeline for ``config`` (None when nothing would run).

    Spatial transforms move image, label and valid mask together (labels use nearest
    interpolation); intensity transforms touch only the image. Pad value 0 keeps the zero pad
    rule for voxels moved in from outside the box.
    """
    if not config.enabled:
        return None
    steps: list[tio.Transform] = []
    if config.flip:
        steps.append(tio.RandomFlip(axes=tuple(range(spatial_dims)), flip_probability=0.5))
    if config.affine:
        steps.append(
            tio.RandomAffine(
                scales=0.1,
                degrees=10,
                default_pad_value=0,
                image_interpolation=config.interpolation,
                p=config.affine,
            )
        )
    if config.elastic:
        steps.append(
            tio.RandomElasticDeformation(
                max_displacement=5.0, image_interpolation=config.interpolation, p=config.elastic
            )
        )
    if config.gamma:
        steps.append(tio.RandomGamma(log_gamma=0.3, p=config.gamma))
    if config.noise:
        steps.append(tio.RandomNoise(std=(0.0, 0.1), p=config.noise))
    if config.blur:
        steps.append(tio.RandomBlur(std=(0.0, 1.0), p=config.blur))
    if config.bias_field:
        steps.append(tio.RandomBiasField(coefficients=0.3, p=config.bias_field))
    return tio.Compose(steps) if steps else None


@dataclass(frozen=True)
class InputLayout:
    """How a store box becomes a network input, and a network output a core again.

    3D (``spatial_dims=3``): identity. 2D: the ``slice_axis`` of the box (0 = Z, 1 = Y, 2 = X)
    is folded into channels, order ``(C, slab)`` flattened; the core is one slice thick along it.
    Every method works on numpy arrays and torch tensors, with any leading (batch) axes.

    Example:
        >>> layout = InputLayout(spatial_dims=2, slice_axis=0)
        >>> layout.image_to_network(np.zeros((4, 3, 8, 8))).shape   # (C, slab, Y, X)
        (12, 8, 8)
        >>> layout.label_to_network(np.zeros((1, 4, 4))).shape      # core (1, Y, X)
        (4, 4)
        >>> layout.output_to_volume(np.zeros((2, 4, 4))).shape      # (K, Y, X)
        (2, 1, 4, 4)
    """

    spatial_dims: int = 3
    slice_axis: int = 0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"layout spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"layout slice_axis must be 0, 1 or 2, got {self.slice_axis!r}")

    @property
    def _axis(self) -> int:
        """The slice axis counted from the end of a (..., Z, Y, X) array."""
        return self.slice_axis - 3

    def image_to_network(self, image: Array) -> Array:
        """(..., C, Z, Y, X) box -> (..., C', *spatial): 3D unchanged, 2D (C * slab, A, B)."""
        if self.spatial_dims == 3:
            return image
        moved = _moveaxis(image, self._axis, -3)  # (..., C, slab, A, B)
        return moved.reshape(*moved.shape[:-4], -1, *moved.shape[-2:])

    def label_to_network(self, label: Array) -> Array:
        """(..., Z, Y, X) core -> (..., *spatial): 2D drops the one-slice slice axis."""
        if self.spatial_dims == 3:
            return label
        if label.shape[self._axis] != 1:
            raise GeometryError(
                f"a 2D layout needs a core one slice thick along axis {self.slice_axis}, "
                f"got a core of shape {tuple(label.shape[-3:])}"
            )
        return label[_index(label.ndim, self._axis, 0)]

    def output_to_volume(self, out: Array) -> Array:
        """(..., K, *spatial) network output -> (..., K, Z, Y, X) core."""
        if self.spatial_dims == 3:
            return out
        return out[_index(out.ndim + 1, self._axis, None)]

    def in_channels(self, n_channels: int, partition: Partition) -> int:
        """Network input channels for a store with ``n_channels`` and this partition."""
        self.check(partition)
        if self.spatial_dims == 3:
            return n_channels
        return n_channels * partition.input_size[self.slice_axis]

    def spatial_size(self, partition: Partition) -> tuple[int, ...]:
        """The network input's spatial size (the input box, minus the slice axis in 2D)."""
        self.check(partition)
        return self._drop(partition.input_size)

    def core_size(self, partition: Partition) -> tuple[int, ...]:
        """The target's spatial size (the core, minus the slice axis in 2D)."""
        self.check(partition)
        return self._drop(partition.core)

    def core_slices(self, cube: Minicube) -> tuple[slice, ...]:
        """Where the core lies in the network input's spatial axes."""
        return self._drop(cube.core_in_input)

    def check(self, partition: Partition | Minicube) -> None:
        """Raise GeometryError unless the partition is 3D and, for 2D, one slice thick."""
        if len(partition.core) != 3:
            raise GeometryError(f"layouts need a 3D partition, got core {partition.core}")
        if self.spatial_dims == 2 and partition.core[self.slice_axis] != 1:
            raise GeometryError(
                f"a 2D layout needs core size 1 along slice axis {self.slice_axis}, got core "
                f"{partition.core}; use e.g. core (1, 96, 96) with stride (1, s, s)"
            )

    def _drop(self, values: tuple) -> tuple:
        if self.spatial_dims == 3:
            return tuple(values)
        return tuple(v for i, v in enumerate(values) if i != self.slice_axis)


def _moveaxis(x: Array, source: int, destination: int) -> Array:
    if isinstance(x, torch.Tensor):
        return torch.movedim(x, source, destination)
    return np.moveaxis(x, source, destination)


def _index(ndim: int, axis: int, value: int | None) -> tuple:
    """An index tuple that applies ``value`` (0 or None = new axis) at negative ``axis``."""
    position = ndim + axis
    return (slice(None),) * position + (value, Ellipsis)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed of item ``index`` of ``epoch``; independent of workers.

    Example:
        >>> item_seed(0, 1, 2) == item_seed(0, 1, 2) != item_seed(0, 2, 2)
        True
    """
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


class MinicubeDataset(torch.utils.data.Dataset):
    """Minicubes from a store, ready for a model: input box, core target, valid mask.

    Args:
        store_url: path or fsspec URL of the store, opened lazily in each worker. An already
            open store object is also accepted and used as is (it is then pickled into the
            workers: fine for small in-memory stores, avoid for large ones).
        samples: the minicubes, e.g. ``sampler.epoch(epoch, rank, world_size)``.
        layout: 2D or 3D network layout.
        augment: augmentation; None or ``AugmentConfig(enabled=False)`` for validation.
        seed: base of the per-item augmentation seeds.
        reuse: items served by each read box (k >= 1), each with its own augmentation.
        epoch: epoch mixed into the item seeds (see :meth:`set_epoch`).
        derive: derived-channel function (C, *box) -> (C + n, *box) applied to each box right
            after ``case.read(box)``, before augmentation (see :func:`partseg.channels.
            build_derive`); it must pickle for worker processes.

    Items are dicts: ``image`` float32 (C', *input spatial), ``target`` int64 (*core spatial),
    ``mask`` bool (*core spatial, True inside the volume), ``case_id`` str, ``origin`` the core
    origin (3D volume coordinates).

    Example:
        >>> from types import SimpleNamespace
        >>> from partseg.geometry import Box, make_partition
        >>> volume = np.arange(64, dtype=np.float32).reshape(1, 4, 4, 4)
        >>> def read(box, label=True):
        ...     image, inside = np.zeros((1, *box.size), np.float32), box.clip((4, 4, 4))
        ...     image[(slice(None), *inside[1])] = volume[(slice(None), *inside[0].slices())]
        ...     return image, (image[0] > 40).astype(np.uint8)
        >>> store = {"a": SimpleNamespace(shape=(4, 4, 4), read=read, has_label=True)}
        >>> cube = make_partition(2, 1, 1, 3).at((2, 2, 2))
        >>> item = MinicubeDataset(store, [Sample("a", cube)], InputLayout())[0]
        >>> item["image"].shape, item["target"].shape, int(item["mask"].sum())
        (torch.Size([1, 4, 4, 4]), torch.Size([2, 2, 2]), 8)
        >>> float(item["image"][0, 1, 1, 1]), float(item["image"][0, 3, 3, 3])
        (42.0, 0.0)
    """

    def __init__(
        self,
        store_url: str | os.PathLike | Any,
        samples: Sequence[Sample],
        layout: InputLayout,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        reuse: int = 1,
        *,
        epoch: int = 0,
        derive: Derive | None = None,
    ) -> None:
        if isinstance(reuse, bool) or not isinstance(reuse, int) or reuse < 1:
            raise ConfigError(f"dataset reuse must be an integer >= 1, got {reuse!r}")
        self.samples = tuple(samples)
        for sample in self.samples[:1]:
            layout.check(sample.cube)
        if isinstance(store_url, str | os.PathLike):
            self.store_url: str | None = os.fspath(store_url)
            self._store: Any = None
        else:
            self.store_url, self._store = getattr(store_url, "url", None), store_url
        self._given_store = self._store is not None
        self.layout = layout
        self.augment = augment if augment is not None else AugmentConfig(enabled=False)
        self.seed = int(seed)
        self.reuse = reuse
        self.epoch = int(epoch)
        self.derive = derive
        self._transform = build_transform(self.augment, layout.spatial_dims)
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Mix ``epoch`` into the augmentation seeds of the following items."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_cache"] = None
        if not self._given_store:
            state["_store"] = None  # reopened lazily in the worker
        return state

    def __len__(self) -> int:
        return len(self.samples) * self.reuse

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        sample = self.samples[index // self.reuse]
        image, label, valid = self._box(index // self.reuse, sample)
        image, label, valid = self._to_network(sample.cube, image, label, valid)
        if self._transform is not None:  # torchio works on a copy: the cached box stays intact
            image, label, valid = self._augmented(image, label, valid, index)
            tensor = torch.from_numpy(np.ascontiguousarray(image, np.float32))
        else:  # a copy: the box stays cached for the next reuse
            tensor = torch.tensor(image, dtype=torch.float32)
        core = (slice(None), *self.layout.core_slices(sample.cube))
        return {
            "image": tensor,
            "target": torch.from_numpy(label[core[1:]].astype(np.int64)),
            "mask": torch.from_numpy(valid[core[1:]].astype(bool)),
            "case_id": sample.case_id,
            "origin": sample.cube.origin,
        }

    @property
    def store(self) -> Any:
        """The store, opened on first use in each process."""
        if self._store is None:
            from partseg.store.zarrstore import open_store

            self._store = open_store(self.store_url)
        return self._store

    def _box(self, key: int, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (C, *box), label (*box) and valid mask (*box) of a sample, cached once."""
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1:]
        case = self.store[sample.case_id]
        if not getattr(case, "has_label", True):
            raise StoreError(
                f"case {sample.case_id!r} of store {self.store_url!r} has no label and cannot "
                "be trained on; leave it out of the training cases"
            )
        box = sample.cube.input_box
        image, label = case.read(box, label=True)  # (C, *box) float32, (*box) uint8
        if self.derive is not None:
            image = self.derive(image)  # (C + n, *box), before augmentation
        valid = np.zeros(box.size, dtype=np.uint8)  # (*box)
        valid[box.clip(case.shape)[1]] = 1
        self._cache = (key, image, label, valid)
        return image, label, valid

    def _to_network(
        self, cube: Minicube, image: np.ndarray, label: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (C', *S), label (*S) and valid (*S) over the network input's spatial extent.

        2D keeps only the core slice of the label and the mask: the target is that slice.
        """
        if self.layout.spatial_dims == 3:
            return image, label, valid
        axis, at = self.layout.slice_axis, cube.margin_before[self.layout.slice_axis]
        return (
            self.layout.image_to_network(image),
            np.take(label, at, axis=axis),
            np.take(valid, at, axis=axis),
        )

    def _augmented(
        self, image: np.ndarray, label: np.ndarray, valid: np.ndarray, index: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the torchio pipeline with the item's own seed; 2D arrays get a unit axis."""
        flat = label.ndim == 2
        extra = (Ellipsis, None) if flat else (Ellipsis,)
        subject = tio.Subject(
            image=tio.ScalarImage(tensor=torch.from_numpy(np.array(image[extra], np.float32))),
            label=tio.LabelMap(tensor=torch.from_numpy(label[None][extra].astype(np.uint8))),
            valid=tio.LabelMap(tensor=torch.from_numpy(valid[None][extra].astype(np.uint8))),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, self.epoch, index))
            out = self._transform(subject)
        squeeze = (Ellipsis, 0) if flat else (Ellipsis,)
        return (
            out["image"].data.numpy()[squeeze],
            out["label"].data.numpy()[0][squeeze],
            out["valid"].data.numpy()[0][squeeze],
        )
