"""Record a run's trained policy to a GIF or an MP4: ``rlhf eval RUN_DIR --video out.gif``.

The agent acts in an env made with ``render_mode="rgb_array"`` whose observations are
normalised exactly as ``rlhf eval`` normalises them (the checkpoint's obs statistics, frozen),
and seeded as ``rlhf eval``'s env ends up seeded: with a deterministic policy the recorded
episodes are the first episodes ``rlhf eval`` scored, with the same returns.

>>> with VideoRecorder(cfg, obs_rms_path=ck / "obs_rms.npz") as rec:   # doctest: +SKIP
...     result = rec.record(agent, Path("out.gif"), episodes=1)
>>> result.returns, result.frames                                       # doctest: +SKIP

How big the file gets. A 1000-step MuJoCo episode rendered every step is 1000 frames of
480x480; so frames are kept

* in real time at no more than ``max_fps`` frames a second: the env renders every k-th step,
  k = ceil(render_fps / max_fps) (``render_fps`` from the env's metadata, 30 where it has
  none), and the file plays at render_fps / k. Defaults: 15 fps for a GIF (at most 50, what
  GIF players honour), 30 for an MP4. Steps in between are never rendered, which also saves
  the render time (tens of ms a frame for MuJoCo on a CPU);
* at most ``size`` pixels on the long side (area-averaged): 320 for a GIF, the env's own size
  for an MP4.

HalfCheetah (20 fps, 1000 steps) gives a GIF of 500 frames of 320x320, about 2 MB.

GIFs are written with Pillow. MP4s need ``imageio-ffmpeg`` (``pip install imageio[ffmpeg]``),
which is not a dependency of rlhf; without it a ``.mp4`` path is refused before anything runs.
The file is written to a temporary file beside it and renamed into place, so an interrupted
recording never leaves a partial video, and an existing file is only replaced with
``force=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rlhf.display import headless_sdl
from rlhf.outputs import check_output_path

SUFFIXES = (".gif", ".mp4")
DEFAULT_MAX_FPS = {".gif": 15.0, ".mp4": 30.0}
GIF_MAX_FPS = 50.0
"""GIF frame delays are in hundredths of a second and players slow delays under 2 down."""
DEFAULT_SIZE: dict[str, int | None] = {".gif": 320, ".mp4": None}
FALLBACK_FPS = 30.0


class VideoError(RuntimeError):
    """A video cannot be recorded or written; the message says why and what to do."""


@dataclass
class Recording:
    """What ``VideoRecorder.record`` wrote."""

    path: Path
    returns: list[float]
    """True return of each recorded episode."""
    frames: int
    fps: float
    width: int
    height: int
    every: int
    """The env rendered every ``every``-th step."""

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "episodes": len(self.returns),
                "returns": self.returns, "frames": self.frames, "fps": self.fps,
                "width": self.width, "height": self.height, "every": self.every}


def check_video_path(path: str | Path, force: bool = False,
                     protected: Iterable[str | Path] = ()) -> Path:
    """``path`` if a video can be written there, else an error saying why: the rules of
    ``rlhf.outputs.check_output_path`` (a .gif/.mp4 suffix, no existing file without
    ``force``, nothing inside a ``protected`` run directory), and an .mp4 needs
    imageio-ffmpeg.
    """
    path = check_output_path(path, SUFFIXES, "video", force=force, protected=protected)
    if path.suffix.lower() == ".mp4":
        _ffmpeg(path)
    return path


def frame_step(render_fps: float, max_fps: float) -> int:
    """Render every k-th step so that render_fps / k <= max_fps (k >= 1)."""
    return max(1, math.ceil(render_fps / max_fps - 1e-9))


class VideoRecorder:
    """The agent's policy in an ``rgb_array`` env, recorded to a file.

    Args:
        cfg: the run's config (``rlhf.config.Config``).
        obs_rms_path: the checkpoint's ``obs_rms.npz`` (used where ``agent.normalize_obs``).
        seed: the env's seed; None: ``cfg.seed + CLI_EVAL`` (``rlhf.seeds``), where
            ``rlhf eval``'s episodes start (held-out initial states, not the training env's).

    Raises ``VideoError`` naming the env id if it cannot render ``rgb_array`` frames.
    """

    def __init__(self, cfg: Any, obs_rms_path: Path | None = None, seed: int | None = None):
        from stable_baselines3.common.vec_env import VecEnv

        from rlhf.agent import eval_env
        from rlhf.environment import FrameRecorder
        from rlhf.seeds import CLI_EVAL

        # Classic-control envs initialise pygame's display even for rgb_array frames.
        headless_sdl()
        self.env_id = cfg.env.id
        with warnings.catch_warnings():
            # gymnasium warns (and makes the env anyway) when rgb_array is not offered
            warnings.simplefilter("ignore")
            # The eval env's stack (Monitor: true returns, normalised observations) with
            # rendering; a FrameRecorder renders the state before each step it is switched
            # on for.
            self.env: VecEnv = eval_env(
                cfg, obs_rms_path=obs_rms_path, record_frames=True,
                seed=CLI_EVAL if seed is None else seed - cfg.seed)
        env = self.env.unwrapped.envs[0]
        modes = list(env.unwrapped.metadata.get("render_modes") or [])
        if "rgb_array" not in modes:
            self.env.close()
            raise VideoError(f"{self.env_id} cannot render rgb_array frames "
                             f"(metadata['render_modes'] = {modes}), so there is nothing to "
                             "record; drop --video, or add an rgb_array render mode to the env")
        self._recorder = _find_wrapper(env, FrameRecorder)
        self.render_fps = float(env.unwrapped.metadata.get("render_fps") or FALLBACK_FPS)

    def record(self, agent: Any, path: str | Path, episodes: int = 1,
               deterministic: bool = True, max_fps: float | None = None,
               size: int | None = None, force: bool = False) -> Recording:
        """Run ``agent`` for ``episodes`` episodes, keep a frame every k-th step (see the
        module docstring for ``max_fps`` and ``size``; None: the format's default) and write
        them to ``path`` (.gif or .mp4), atomically."""
        from rlhf.io import atomic_path

        path = check_video_path(path, force)
        suffix = path.suffix.lower()
        if episodes < 1:
            raise VideoError(f"--video-episodes must be >= 1, got {episodes}")
        max_fps = DEFAULT_MAX_FPS[suffix] if max_fps is None else float(max_fps)
        if not max_fps > 0:
            raise VideoError(f"--video-fps must be > 0, got {max_fps}")
        if suffix == ".gif":
            max_fps = min(max_fps, GIF_MAX_FPS)
        size = DEFAULT_SIZE[suffix] if size is None else int(size)
        every = frame_step(self.render_fps, max_fps)
        fps = self.render_fps / every
        self._recorder.max_side = size if size is not None else 1 << 30

        with atomic_path(path) as tmp:
            writer: _Writer = _GifWriter(tmp, fps) if suffix == ".gif" else _Mp4Writer(tmp, fps)
            try:
                returns = self._run(agent, episodes, deterministic, every, writer.append)
                writer.close()
            except BaseException:
                writer.abort()
                raise
        return Recording(path, returns, writer.count, round(fps, 3), writer.width,
                         writer.height, every)

    def _run(self, agent: Any, episodes: int, deterministic: bool, every: int,
             append: Callable[[np.ndarray], None]) -> list[float]:
        """Step the env with the agent's policy, as ``rlhf eval`` does, for ``episodes``
        episodes; hand every ``every``-th frame (the state before the step) to ``append``."""
        returns: list[float] = []
        obs = self.env.reset()
        t = 0
        # As evaluate_policy does: an agent whose policy keeps state (an RNN, a tuning run's
        # behaviour) is told where episodes start.
        starts = np.ones(1, dtype=bool)
        while len(returns) < episodes:
            self._recorder.set_recording(t % every == 0)
            actions, _ = agent.predict(obs, episode_start=starts, deterministic=deterministic)
            obs, _, dones, infos = self.env.step(actions)
            starts = np.asarray(dones, dtype=bool)
            if "frame" in infos[0]:
                append(infos[0]["frame"])
            t += 1
            if dones[0]:
                returns.append(float(infos[0]["episode"]["r"]))  # the Monitor's true return
                t = 0
        self._recorder.set_recording(False)
        return returns

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- writers ---------------------------------------------------------------------------------

class _Writer(Protocol):
    count: int
    width: int
    height: int

    def append(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class _GifWriter:
    """Pillow's GIF writer needs every frame at once: each is kept as a palette image (one
    byte a pixel) until ``close``."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.images: list[Any] = []
        self.count = self.width = self.height = 0

    def append(self, frame: np.ndarray) -> None:
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(frame), "RGB")
        self.images.append(image.convert("P", palette=Image.Palette.ADAPTIVE))
        self.count += 1
        self.width, self.height = image.size

    def close(self) -> None:
        # Delays are stored in 10 ms units: round the running time, not each delay, so the
        # file keeps the real-time rate on average (30 fps: 30, 40, 30, ... ms).
        ends = [round((i + 1) * 100 / self.fps) * 10 for i in range(self.count)]
        durations = [max(20, b - a) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        first, *rest = self.images
        first.save(self.path, format="GIF", save_all=True, append_images=rest,
                   duration=durations, loop=0)
        self.images = []

    def abort(self) -> None:
        self.images = []


class _Mp4Writer:
    """H.264 in an MP4 through imageio-ffmpeg, frames streamed to ffmpeg as they come (an
    MP4 at the env's own size would not fit in memory for long episodes)."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self._gen: Any = None
        self.count = self.width = self.height = 0

    def append(self, frame: np.ndarray) -> None:
        # yuv420p, which every player reads, needs even sides: drop an odd last row/column.
        h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
        if self._gen is None:
            if h == 0 or w == 0:
                raise VideoError(f"{self.path}: frames of {frame.shape[1]}x{frame.shape[0]} "
                                 "are too small for an MP4; write a .gif")
            self._gen = _ffmpeg(self.path).write_frames(
                str(self.path), (w, h), fps=self.fps, codec="libx264", pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p", macro_block_size=1, quality=7,
                output_params=["-f", "mp4", "-movflags", "+faststart"])
            self._gen.send(None)
            self.width, self.height = w, h
        self._gen.send(np.ascontiguousarray(frame[:h, :w]))
        self.count += 1

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()  # waits for ffmpeg to finish the file
            self._gen = None

    def abort(self) -> None:
        self.close()


def _ffmpeg(path: Path) -> Any:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError(f"{path}: writing an .mp4 needs imageio-ffmpeg: pip install "
                         "imageio[ffmpeg], or give a .gif path") from None
    return imageio_ffmpeg


def _find_wrapper(env: Any, cls: type) -> Any:
    while not isinstance(env, cls):
        env = env.env  # AttributeError past the innermost env: env_factory always adds one
    return env
