"""Playback of a pair: both clips in sync, looping, with a held pause at the loop point.

Time-based, not frame-counted: a slow draw skips frames instead of slowing the clips down,
so what a person sees runs at the env's own pace times the chosen speed.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEEDS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0)


@dataclass
class Playback:
    """Position in a looping pair of clips.

    A cycle is ``length`` frames of the clips, then ``pause_frames`` frames holding the last
    one (shown highlighted), then the clips start again.

    Attributes:
        length: frames of the longer clip (the shorter one holds its last frame).
        fps: frames per second at speed 1.
        speed: playback speed multiplier.
        pause_frames: frames held at the loop point.
        position: frames played in the current cycle (fractional).
        loops: cycles completed since the pair was shown.
        paused: True while the person has paused playback.
    """

    length: int
    fps: float
    speed: float = 1.0
    pause_frames: int = 10
    position: float = 0.0
    loops: int = 0
    paused: bool = False

    def __post_init__(self) -> None:
        if self.length < 1 or self.fps <= 0:
            raise ValueError(f"playback needs length >= 1 and fps > 0, got {self.length}, "
                             f"{self.fps}")

    @property
    def cycle(self) -> int:
        return self.length + self.pause_frames

    @property
    def frame(self) -> int:
        """Index of the frame to show, in [0, length)."""
        return min(int(self.position), self.length - 1)

    @property
    def at_loop_point(self) -> bool:
        """True while holding the last frame before the clips start again."""
        return self.position >= self.length

    @property
    def played_once(self) -> bool:
        """Both clips have played to their end at least once."""
        return self.loops > 0 or self.position >= self.length

    @property
    def frames_per_second(self) -> float:
        """Frames advanced per second at the current speed."""
        return self.fps * self.speed

    def advance(self, seconds: float) -> None:
        if self.paused:
            return
        self.position += seconds * self.frames_per_second
        if self.position >= self.cycle:
            self.loops += int(self.position // self.cycle)
            self.position %= self.cycle

    def toggle_pause(self) -> None:
        """Pause, or play again (from the start if paused at the loop point)."""
        self.paused = not self.paused
        if not self.paused and self.at_loop_point:
            self.restart()

    def restart(self) -> None:
        self.position = 0.0

    def faster(self) -> None:
        self.speed = next((s for s in SPEEDS if s > self.speed + 1e-9), self.speed)

    def slower(self) -> None:
        self.speed = next((s for s in reversed(SPEEDS) if s < self.speed - 1e-9), self.speed)
