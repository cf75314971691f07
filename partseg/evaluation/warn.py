"""How evaluation reports warnings (e.g. cases skipped, spacings that differ)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

__all__ = ["Warn", "default_warn"]

#: Receives each warning text (e.g. cases skipped); the default issues a ``UserWarning``.
Warn = Callable[[str], None]


def default_warn(message: str) -> None:
    """Issue ``message`` as a ``UserWarning`` attributed to the caller of the evaluating function.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     default_warn("case 'a' skipped")
        >>> str(caught[0].message)
        "case 'a' skipped"
    """
    warnings.warn(message, UserWarning, stacklevel=3)
