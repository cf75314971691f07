"""The built-in recipes: the YAML files of ``configs/``, found by name.

In a source checkout the recipes are the files of the top-level ``configs/`` folder. The wheel
ships that same folder as the package ``partseg.configs`` (``package-dir`` in
``pyproject.toml``), and editable installs map that package onto the checkout's folder, so
:func:`recipe_path` finds them through :mod:`importlib.resources` however partseg is installed,
and falls back to the checkout's folder when partseg is imported from a source tree that is not
installed.

Example:
    >>> "demo" in recipe_names() and "tiny" in recipe_names()
    True
    >>> recipe_path("tiny").name
    'tiny.yaml'
"""

from __future__ import annotations

import atexit
import contextlib
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from partseg.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: Suffix of a recipe file.
SUFFIX = ".yaml"

# Keeps any file extracted by ``resources.as_file`` (a zipped install) until the interpreter exits.
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def _recipe_dir() -> Traversable:
    try:
        return resources.files("partseg.configs")
    except ModuleNotFoundError:  # a source checkout imported without being installed
        return Path(__file__).resolve().parents[1] / "configs"


def recipe_names() -> list[str]:
    """Names of the built-in recipes (the ``configs/*.yaml`` file names without suffix), sorted."""
    return sorted(
        entry.name[: -len(SUFFIX)]
        for entry in _recipe_dir().iterdir()
        if entry.name.endswith(SUFFIX) and entry.is_file()
    )


def recipe_path(name: str) -> Path:
    """Path of the built-in recipe ``name`` (``"demo"`` or ``"demo.yaml"``).

    Args:
        name: a recipe name, as :func:`recipe_names` lists them, with or without ``.yaml``.

    Returns:
        The path of the YAML file, readable by :func:`partseg.config.load_config` or
        :func:`partseg.experiments.load_compare_config`.

    Raises:
        ConfigError: ``name`` is not a built-in recipe; the message lists the known ones.

    Example:
        >>> recipe_path("demo.yaml") == recipe_path("demo")
        True
        >>> recipe_path("nope")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        partseg.errors.ConfigError: unknown recipe 'nope'; built-in recipes: ...
    """
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    names = recipe_names()
    if stem not in names:
        raise ConfigError(f"unknown recipe {name!r}; built-in recipes: {', '.join(names)}")
    return _extracted.enter_context(resources.as_file(_recipe_dir() / f"{stem}{SUFFIX}"))


def resolve_config(config: str | os.PathLike, what: str = "config") -> Path:
    """The YAML file a command-line ``CONFIG`` argument names: a file, else a built-in recipe.

    An existing file wins; a bare name such as ``tiny`` or ``tiny.yaml`` that is not a file
    names the built-in recipe (``partseg train tiny``).

    Raises:
        ConfigError: neither a file nor a built-in recipe; names the path and the recipes.
    """
    path = Path(config)
    if path.is_file():
        return path
    if os.fspath(config) == path.name:  # a bare name, not a path into some folder
        with contextlib.suppress(ConfigError):
            return recipe_path(path.name)
    raise ConfigError(
        f"{what} {path} not found: not a file, nor a built-in recipe "
        f"({', '.join(recipe_names())}); give a YAML path or one of those names"
    )
