"""Rendering with no display: the two environment variables rlhf may set, and where.

Importing rlhf changes no environment variable. Each one is set (only where the user has
not set it) by the code that is about to need it:

- ``MUJOCO_GL=egl`` by ``headless_mujoco_gl``, which ``rlhf.environment.make_env`` calls
  before it imports or makes any env: on Linux with neither ``DISPLAY`` nor
  ``WAYLAND_DISPLAY``, MuJoCo's default GLFW backend cannot open a context, and EGL works
  where OSMesa is often missing. Set ``MUJOCO_GL`` yourself to choose another backend.
- ``SDL_VIDEODRIVER=dummy`` by ``headless_sdl``: pygame (the viewer, and classic-control
  envs, which initialise pygame's display even for ``rgb_array`` frames) then needs no
  display. ``rlhf check-env`` and ``rlhf eval --video`` ask for it where Linux has no X
  display (``DISPLAY``); the viewer's ``--screenshot`` always (it never shows a window).
"""

from __future__ import annotations

import os
import sys


def headless_mujoco_gl() -> None:
    """``MUJOCO_GL=egl`` unless set, on Linux with no display (X or Wayland)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("MUJOCO_GL", "egl")


def headless_sdl(always: bool = False) -> None:
    """``SDL_VIDEODRIVER=dummy`` unless set: on Linux with no X display, or ``always`` (for
    a caller that never wants a window on screen). Call before pygame opens its display."""
    if always or (sys.platform.startswith("linux") and not os.environ.get("DISPLAY")):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
