"""Files a user names on the command line (``--screenshot``, ``--video``, ``plot --out``).

One rule for all of them, so a typo can never cost a run its labels:

- the suffix must be one the writer produces (``out.png``, not ``store.sqlite``);
- an existing file is refused unless ``force``;
- a path inside a run directory the command reads from is refused even with ``force``
  (symlinks followed): a run's files are written only by rlhf itself;
- the writer writes through ``rlhf.io.atomic_path``, so a crash leaves no half-written file.

>>> check_output_path("shot.png", (".png",), "screenshot").name
'shot.png'
>>> check_output_path("store.sqlite", (".png",), "screenshot")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
rlhf.outputs.OutputPathError: store.sqlite: a screenshot is written as .png, not '.sqlite'; ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from rlhf.config import ConfigError


class OutputPathError(ConfigError):
    """An output path that would overwrite a file, has the wrong suffix, or lies in a run."""


def check_output_path(path: str | Path, suffixes: Sequence[str], kind: str,
                      force: bool = False, protected: Iterable[str | Path] = ()) -> Path:
    """``path`` if a ``kind`` file may be written there, else an ``OutputPathError``.

    Args:
        suffixes: accepted suffixes, lower case with the dot (the first is suggested).
        force: allow replacing an existing file (never one inside ``protected``).
        protected: run directories the command works on; nothing inside them is written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise OutputPathError(f"{path}: a {kind} is written as {' or '.join(suffixes)}, not "
                              f"{path.suffix or '(no suffix)'!r}; give a path ending in "
                              f"{suffixes[0]}")
    if path.is_dir():
        raise OutputPathError(f"{path} is a directory; give a file path ending in {suffix}")
    resolved = Path(os.path.realpath(path))
    for directory in protected:
        root = Path(os.path.realpath(directory))
        if resolved == root or root in resolved.parents:
            raise OutputPathError(f"{path}: inside the run directory {directory}, whose files "
                                  f"only rlhf writes; save the {kind} somewhere else")
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputPathError(f"{path} already exists; use --force to overwrite it")
    return path
