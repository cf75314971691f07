"""Channel names across dataset editions: one table of aliases, and the channel order it implies.

BraTS renamed its modalities in 2023 (``t1 -> t1n``, ``t1ce -> t1c``, ``t2 -> t2w``,
``flair -> t2f``), the Medical Segmentation Decathlon spells them ``FLAIR, T1w, t1gd, T2w`` (in
that order) and nnU-Net's BraTS conversions ``T1, T1ce, T2, Flair``. A model trained on one
edition must accept a store of another, so every comparison of channel names (a model against
a store, ensemble members against each other) goes through :data:`ALIASES`: each known
spelling, compared case-insensitively, maps to one canonical name (the BraTS 2017-2021 one).
Names the table does not know compare case-insensitively as they are.

Matching by alias keeps the order right: :func:`channel_order` says which store channel feeds
each model channel, so a store holding the same modalities in another order (the MSD's
``FLAIR, T1w, t1gd, T2w`` for a model of ``t1, t1ce, t2, flair``) is read in the model's order
(:class:`~partseg.infer.pipeline.CasePredictor` reorders every box it reads).

``partseg ingest --channel-map old=new,...`` renames channels instead (:func:`parse_channel_map`,
:func:`rename_channels`), e.g. to store BraTS 2023 data under the 2020 names, or to name the
``ch0, ch1, ...`` channels of files that do not name them.

Example:
    >>> canonical("T2F"), canonical("t1gd"), canonical("tof")
    ('flair', 't1ce', 'tof')
    >>> channel_order(BRATS_CHANNELS, BRATS23_CHANNELS)          # same order: nothing to do
    >>> channel_order(BRATS_CHANNELS, ("FLAIR", "T1w", "t1gd", "T2w"))
    (1, 2, 3, 0)
    >>> channel_order(("t1", "t2"), ("t1", "adc")) is None and not same_channels(("t1",), ("t2",))
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from partseg.errors import InputError

if TYPE_CHECKING:
    from partseg.store.sources import Source

__all__ = [
    "ALIASES",
    "BRATS23_CHANNELS",
    "BRATS_CHANNELS",
    "canonical",
    "channel_order",
    "channels_problem",
    "parse_channel_map",
    "rename_channels",
    "same_channels",
]

#: BraTS 2017-2021 file suffixes, in channel order.
BRATS_CHANNELS = ("t1", "t1ce", "t2", "flair")
#: BraTS 2023 file suffixes, in the same channel order as :data:`BRATS_CHANNELS`.
BRATS23_CHANNELS = ("t1n", "t1c", "t2w", "t2f")

_SPELLINGS: Mapping[str, tuple[str, ...]] = {
    "t1": ("t1", "t1n", "t1w", "t1-native"),
    "t1ce": ("t1ce", "t1c", "t1gd", "t1-gd", "t1_gd", "t1-ce", "t1_ce", "t1post"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f", "t2-flair", "t2_flair", "t2flair"),
}
#: Every known spelling of a modality (lower case) -> its canonical (BraTS 2017-2021) name.
ALIASES: Mapping[str, str] = MappingProxyType(
    {spelling: name for name, spellings in _SPELLINGS.items() for spelling in spellings}
)


def canonical(name: str) -> str:
    """The canonical name of a channel: its :data:`ALIASES` entry, else the name in lower case."""
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def same_channels(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when ``a`` and ``b`` name the same modalities in the same order (by alias)."""
    return [canonical(n) for n in a] == [canonical(n) for n in b]


def channel_order(wanted: Sequence[str], found: Sequence[str]) -> tuple[int, ...] | None:
    """Which channel of ``found`` feeds each channel of ``wanted``; None when no reordering is
    needed (same order) or none is possible (other modalities, or names two channels share).

    Use :func:`channels_problem` to tell the two None cases apart.
    """
    want, have = [canonical(n) for n in wanted], [canonical(n) for n in found]
    if want == have or len(set(have)) != len(have) or sorted(want) != sorted(have):
        return None
    return tuple(have.index(name) for name in want)


def channels_problem(wanted: Sequence[str], found: Sequence[str]) -> str | None:
    """Why channels ``found`` cannot feed a model of ``wanted`` channels, or None when they can
    (by alias, possibly reordered by :func:`channel_order`).

    Example:
        >>> channels_problem(("t1", "t2"), ("t1n", "t2w")) is None
        True
        >>> channels_problem(("t1", "t2"), ("t1", "adc"))
        "no channel matches ['t2'] (names match case-insensitively or by BraTS/MSD alias)"
    """
    if same_channels(wanted, found) or channel_order(wanted, found) is not None:
        return None
    want, have = [canonical(n) for n in wanted], [canonical(n) for n in found]
    if len(want) != len(have):
        return f"{len(have)} channels where the model takes {len(want)}"
    if len(set(have)) != len(have):
        return "two channels name one modality"
    missing = [n for n, c in zip(wanted, want, strict=True) if c not in have]
    if missing:
        return (
            f"no channel matches {missing} (names match case-insensitively or by BraTS/MSD alias)"
        )
    return "two model channels name one modality"


def parse_channel_map(items: str | Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``"t1n=t1,t1c=t1ce"`` (or a list of such strings) -> ``(("t1n", "t1"), ("t1c", "t1ce"))``.

    Raises:
        ValueError: an item that is not ``old=new`` with two names, or an old name given twice.

    Example:
        >>> parse_channel_map(["t1n=t1,t1c=t1ce", "t2w=t2"])
        (('t1n', 't1'), ('t1c', 't1ce'), ('t2w', 't2'))
    """
    texts = [items] if isinstance(items, str) else list(items)
    pairs = []
    for item in (part for text in texts for part in str(text).split(",")):
        old, sep, new = (part.strip() for part in item.partition("="))
        if not sep or not old or not new or "=" in new:
            raise ValueError(f"expected old=new pairs such as t1n=t1,t1c=t1ce; got {item!r}")
        pairs.append((old, new))
    olds = [old for old, _ in pairs]
    repeated = sorted({o for o in olds if olds.count(o) > 1})
    if repeated:
        raise ValueError(f"channel {repeated[0]!r} is renamed twice")
    return tuple(pairs)


def rename_channels(source: Source, pairs: Sequence[tuple[str, str]]) -> Source:
    """``source`` with its channels renamed by ``(old, new)`` pairs (``--channel-map``).

    Raises:
        InputError: an old name the dataset does not have (the message lists its channels), or
            renames that give two channels one name.
    """
    if not pairs:
        return source
    rename = dict(pairs)
    unknown = [old for old in rename if old not in source.channels]
    channels = tuple(rename.get(name, name) for name in source.channels)
    problem = None
    if unknown:
        problem = f"--channel-map renames {unknown}, but the dataset's channels are"
    elif len(set(channels)) != len(channels):
        problem = f"--channel-map gives two channels one name ({list(channels)}); the channels are"
    if problem:
        raise InputError(
            "(dataset)",
            source.root,
            f"{problem} {list(source.channels)}",
            "rename existing channels to distinct names, e.g. --channel-map t1n=t1,t1c=t1ce",
        )
    cases = tuple(dataclasses.replace(case, channel_names=channels) for case in source.cases)
    return dataclasses.replace(source, channels=channels, cases=cases)
