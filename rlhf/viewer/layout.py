"""Where things go in the window, and drawing the parts that are not clips (the HUD).

::

    +---------------------------------------------------------------+
    |                task instructions (from the config)            |
    |  +-------------------------+   +-------------------------+    |
    |  |        left clip        |   |       right clip        |    |
    |  +-------------------------+   +-------------------------+    |
    |        LEFT  (<- / A)               RIGHT  (-> / D)           |
    |  message line                                                 |
    |  [<- Left] [v Equal] [-> Right] [S Skip] [Pause] [-] [+] ...  |
    |  status: this session / pending / labels / agent progress     |
    +---------------------------------------------------------------+
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pygame

BACKGROUND = (28, 30, 36)
PANEL = (44, 47, 56)
BORDER = (150, 155, 170)
LOOP_BORDER = (240, 190, 40)  # the loop-point pause
TEXT = (230, 232, 238)
DIM = (150, 154, 165)
BUTTON = (60, 64, 78)
BUTTON_ANSWER = (52, 92, 150)
BUTTON_TEXT = (240, 242, 246)
OVERLAY = (10, 10, 14, 225)

# (action, label with arrow glyphs, label without them)
BUTTONS: tuple[tuple[str, str, str], ...] = (
    ("left", "← Left better", "<- Left better"),
    ("equal", "↓ Equal", "v Equal"),
    ("right", "Right better →", "Right better ->"),
    ("skip", "S Skip", "S Skip"),
    ("pause", "Space Pause", "Space Pause"),
    ("slower", "− Slower", "- Slower"),
    ("faster", "+ Faster", "+ Faster"),
    ("undo", "U Undo", "U Undo"),
    ("help", "H Help", "H Help"),
    ("quit", "Q Quit", "Q Quit"),
)

HELP = (
    ("← or A", "the LEFT clip is better"),
    ("→ or D", "the RIGHT clip is better"),
    ("↓ or E", "about equal"),
    ("S", "skip: can't tell"),
    ("Space", "pause / play"),
    ("+ / −", "faster / slower playback"),
    ("U or Backspace", "undo the last answer"),
    ("H", "this help"),
    ("Q or Esc", "quit (every answer is already saved)"),
)

MARGIN = 16
TOP = 64
BUTTON_H = 38
STATUS_H = 28
CAPTION_H = 30
MESSAGE_H = 26


def wrap_to_width(font: pygame.font.Font, text: str, width: int) -> list[str]:
    """``text`` broken at spaces into lines that ``font`` draws at most ``width`` pixels
    wide (a single longer word keeps its own line): measured, since a bold title's letters
    are wider than any fixed characters-per-pixel guess."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and font.size(trial)[0] > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


@dataclass(frozen=True)
class Layout:
    """Rectangles of every part of the window, from its size."""

    size: tuple[int, int]
    instructions: pygame.Rect
    left: pygame.Rect
    right: pygame.Rect
    left_caption: pygame.Rect
    right_caption: pygame.Rect
    message: pygame.Rect
    buttons: dict[str, pygame.Rect]
    status: pygame.Rect

    @classmethod
    def for_size(cls, width: int, height: int) -> Layout:
        status = pygame.Rect(MARGIN, height - STATUS_H - 6, width - 2 * MARGIN, STATUS_H)
        row_y = status.top - BUTTON_H - 8
        gap = 6
        bw = (width - 2 * MARGIN - gap * (len(BUTTONS) - 1)) // len(BUTTONS)
        buttons = {action: pygame.Rect(MARGIN + i * (bw + gap), row_y, bw, BUTTON_H)
                   for i, (action, _, _) in enumerate(BUTTONS)}
        message = pygame.Rect(MARGIN, row_y - MESSAGE_H - 4, width - 2 * MARGIN, MESSAGE_H)
        caption_y = message.top - CAPTION_H
        panel_w = (width - 3 * MARGIN) // 2
        panel_h = caption_y - TOP - 4
        left = pygame.Rect(MARGIN, TOP, panel_w, panel_h)
        right = pygame.Rect(2 * MARGIN + panel_w, TOP, panel_w, panel_h)
        return cls(
            size=(width, height),
            instructions=pygame.Rect(MARGIN, 6, width - 2 * MARGIN, TOP - 12),
            left=left, right=right,
            left_caption=pygame.Rect(left.left, caption_y, panel_w, CAPTION_H),
            right_caption=pygame.Rect(right.left, caption_y, panel_w, CAPTION_H),
            message=message, buttons=buttons, status=status)

    @property
    def frame_box(self) -> tuple[int, int]:
        """(w, h) a clip's frames are scaled to fit (inside the panel's border)."""
        return self.left.width - 8, self.left.height - 8

    def button_at(self, pos: tuple[int, int]) -> str | None:
        return next((a for a, r in self.buttons.items() if r.collidepoint(pos)), None)


def _font(size: int, bold: bool = False) -> tuple[pygame.font.Font, bool]:
    """A font and whether it has arrow glyphs (DejaVu Sans and friends do; pygame's
    built-in font does not, and would draw boxes)."""
    path = pygame.font.match_font("dejavusans,notosans,liberationsans,arial,helvetica",
                                  bold=bold)
    if path:
        font = pygame.font.Font(path, size)
        if all(_drawn(font, c) != _drawn(font, "\uffff") for c in "←→↓−"):
            return font, True
    return pygame.font.Font(None, round(size * 1.25)), False


def _drawn(font: pygame.font.Font, char: str) -> bytes:
    """The pixels of one character (a missing glyph draws the same box as U+FFFF)."""
    return pygame.image.tobytes(font.render(char, False, (255, 255, 255), (0, 0, 0)), "RGB")


class Hud:
    """Draws instructions, captions, buttons, status, messages and the help overlay.

    Rendered text is cached: drawing the same strings every frame must cost almost nothing.
    """

    def __init__(self, layout: Layout):
        self.layout = layout
        self.title, self.arrows = _font(22, bold=True)
        self.body, _ = _font(17)
        self.small, _ = _font(15)
        self._cache: dict[tuple[int, str, tuple[int, int, int]], pygame.Surface] = {}
        self._fitted: dict[tuple[int, int], pygame.Surface] = {}  # button texts, shrunk

    def text(self, font: pygame.font.Font, text: str, color: tuple[int, int, int] = TEXT,
             ) -> pygame.Surface:
        if not self.arrows:
            text = (text.replace("←", "<-").replace("→", "->").replace("↓", "v")
                    .replace("−", "-"))
        key = (id(font), text, color)
        surf = self._cache.get(key)
        if surf is None:
            if len(self._cache) > 512:  # status strings change; keep the cache bounded
                self._cache.clear()
                self._fitted.clear()
            surf = self._cache[key] = font.render(text, True, color)
        return surf

    def _blit_center(self, screen: pygame.Surface, surf: pygame.Surface,
                     rect: pygame.Rect) -> None:
        screen.blit(surf, surf.get_rect(center=rect.center))

    def instructions(self, screen: pygame.Surface, text: str) -> None:
        rect = self.layout.instructions
        lines = wrap_to_width(self.title, text, rect.width - 16)[:2] or [""]
        h = self.title.get_linesize()
        y = rect.centery - h * len(lines) // 2
        for line in lines:
            surf = self.text(self.title, line)
            screen.blit(surf, surf.get_rect(midtop=(rect.centerx, y)))
            y += h

    def panel(self, screen: pygame.Surface, rect: pygame.Rect, frame: pygame.Surface | None,
              highlight: bool, empty_text: str = "") -> None:
        pygame.draw.rect(screen, PANEL, rect)
        if frame is not None:
            screen.blit(frame, frame.get_rect(center=rect.center))
        elif empty_text:
            for i, line in enumerate(textwrap.wrap(empty_text, max(20, rect.width // 9))[:6]):
                surf = self.text(self.body, line, DIM)
                screen.blit(surf, surf.get_rect(midtop=(rect.centerx,
                                                        rect.centery - 60 + 26 * i)))
        pygame.draw.rect(screen, LOOP_BORDER if highlight else BORDER, rect,
                         width=4 if highlight else 2)

    def captions(self, screen: pygame.Surface, enabled: bool) -> None:
        color = TEXT if enabled else DIM
        self._blit_center(screen, self.text(self.body, "LEFT  (← or A)", color),
                          self.layout.left_caption)
        self._blit_center(screen, self.text(self.body, "RIGHT  (→ or D)", color),
                          self.layout.right_caption)

    def buttons(self, screen: pygame.Surface, answers_enabled: bool) -> None:
        for action, label, ascii_label in BUTTONS:
            rect = self.layout.buttons[action]
            answer = action in ("left", "right", "equal", "skip")
            color = BUTTON_ANSWER if answer and answers_enabled else BUTTON
            pygame.draw.rect(screen, color, rect, border_radius=6)
            text_color = BUTTON_TEXT if answers_enabled or not answer else DIM
            surf = self.text(self.small, label if self.arrows else ascii_label, text_color)
            if surf.get_width() > rect.width - 6:  # a narrow window: shrink, don't spill
                key = (id(surf), rect.width)
                if key not in self._fitted:
                    scale = (rect.width - 6) / surf.get_width()
                    self._fitted[key] = pygame.transform.smoothscale_by(surf, scale)
                surf = self._fitted[key]
            self._blit_center(screen, surf, rect)

    def message(self, screen: pygame.Surface, text: str) -> None:
        if text:
            surf = self.text(self.body, text, (250, 215, 120))
            screen.blit(surf, surf.get_rect(midleft=self.layout.message.midleft))

    def status(self, screen: pygame.Surface, text: str) -> None:
        surf = self.text(self.small, text, DIM)
        screen.blit(surf, surf.get_rect(midleft=self.layout.status.midleft))

    def help(self, screen: pygame.Surface) -> None:
        w, h = self.layout.size
        box = pygame.Rect(0, 0, min(620, w - 40), 60 + 30 * len(HELP))
        box.center = (w // 2, h // 2)
        overlay = pygame.Surface(box.size, pygame.SRCALPHA)
        overlay.fill(OVERLAY)
        screen.blit(overlay, box)
        pygame.draw.rect(screen, BORDER, box, width=2)
        screen.blit(self.text(self.title, "Keys (buttons below do the same)"),
                    (box.left + 20, box.top + 14))
        for i, (key, what) in enumerate(HELP):
            y = box.top + 52 + 30 * i
            screen.blit(self.text(self.body, key), (box.left + 24, y))
            screen.blit(self.text(self.body, what, DIM), (box.left + 220, y))
