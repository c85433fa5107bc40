"""Pygame drawing for the Reach2D family: a scene is a pure function of the 9-float state.

Drawing happens on an off-screen ``pygame.Surface`` and is read back with ``surfarray``, so
``rgb_array`` rendering and pixel observations need no window and no display driver. Only
``Window`` (render_mode="human") opens a display.
"""

from __future__ import annotations

import os

# pygame-ce prints a banner on import unless told not to; it would clutter every CLI run.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from collections.abc import Sequence

import numpy as np
import pygame

BACKGROUND = (235, 235, 230)
BORDER = (90, 90, 90)
HAZARD = (215, 60, 50)
HAZARD_CORE = (160, 30, 25)
TARGET = (40, 170, 70)
AGENT = (40, 90, 220)

# World radii (arena is [-1, 1]^2) of the target and agent markers.
TARGET_RADIUS = 0.07
AGENT_RADIUS = 0.06


class SceneCanvas:
    """Draws Reach2D scenes at a fixed square size and returns them as uint8 arrays.

    Args:
        size: side length in pixels; the whole arena [-1, 1]^2 is mapped onto it.
    """

    def __init__(self, size: int) -> None:
        if size < 8:
            raise ValueError(f"canvas size must be >= 8 pixels, got {size}")
        self.size = int(size)
        # One surface per canvas: allocating per frame would dominate the cost of small frames.
        self._surface = pygame.Surface((self.size, self.size))
        self._scale = self.size / 2.0

    def _px(self, x: float, y: float) -> tuple[float, float]:
        # World y points up, pixel rows point down.
        return ((x + 1.0) * self._scale, (1.0 - y) * self._scale)

    def _radius(self, r: float) -> int:
        # At 64x64 an agent is ~2 px; never let a marker vanish entirely.
        return max(2, round(r * self._scale))

    def draw(self, state: Sequence[float]) -> np.ndarray:
        """Draws ``state`` = [px, py, vx, vy, tx, ty, hx, hy, hr] (velocity is not drawn).

        Returns:
            (size, size, 3) uint8 array, rows top to bottom (HWC), a fresh copy.
        """
        px, py, _vx, _vy, tx, ty, hx, hy, hr = (float(v) for v in state)
        surf = self._surface
        surf.fill(BACKGROUND)
        pygame.draw.rect(surf, BORDER, surf.get_rect(), width=1)
        hazard_c = self._px(hx, hy)
        pygame.draw.circle(surf, HAZARD, hazard_c, self._radius(hr))
        pygame.draw.circle(surf, HAZARD_CORE, hazard_c, self._radius(hr * 0.35))
        pygame.draw.circle(surf, TARGET, self._px(tx, ty), self._radius(TARGET_RADIUS))
        pygame.draw.circle(surf, AGENT, self._px(px, py), self._radius(AGENT_RADIUS))
        # array3d is (W, H, 3); transpose to the (H, W, 3) layout gymnasium expects.
        return np.ascontiguousarray(pygame.surfarray.array3d(surf).transpose(1, 0, 2))


class Window:
    """A pygame window that shows rgb frames at a fixed rate (render_mode="human").

    The display is opened lazily on the first ``show`` and only shut down on ``close`` if this
    object initialised it, so closing an env cannot tear down a display the caller owns.
    """

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self._screen: pygame.Surface | None = None
        self._clock: pygame.time.Clock | None = None
        self._owns_display = False

    def show(self, frame: np.ndarray) -> None:
        """Blits a (H, W, 3) uint8 frame and waits to keep ``fps``."""
        h, w = frame.shape[:2]
        if self._screen is None:
            if not pygame.display.get_init():
                pygame.display.init()
                self._owns_display = True
            self._screen = pygame.display.set_mode((w, h))
            pygame.display.set_caption("rlhf_envs")
            self._clock = pygame.time.Clock()
        assert self._clock is not None
        self._screen.blit(pygame.surfarray.make_surface(frame.transpose(1, 0, 2)), (0, 0))
        # Without pumping events the OS marks the window unresponsive.
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.fps)

    def close(self) -> None:
        if self._screen is not None and self._owns_display:
            pygame.display.quit()
        self._screen = None
        self._clock = None
        self._owns_display = False
