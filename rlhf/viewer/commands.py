"""What ``rlhf label`` runs: the viewer on a run, a screenshot of it, waiting for a run to
start (for ``rlhf train --label``)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rlhf.config import Config
from rlhf.display import headless_sdl
from rlhf.io import atomic_write_bytes
from rlhf.outputs import check_output_path
from rlhf.render import ClipRenderer
from rlhf.rundir import RunDir, RunDirError
from rlhf.store import Store, StoreError
from rlhf.store_pg import PgLocation


class ViewerError(RuntimeError):
    """The viewer cannot run here (e.g. no display); the message says what to do."""


def run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The run's resolved config, with ``key.path=value`` overrides (e.g. viewer.speed=2)."""
    return RunDir.open(run_dir).load_config(overrides)


def wait_for_run(run_dir: str | Path, poll: float = 0.5,
                 say: Callable[[str], None] = print) -> None:
    """Block until ``run_dir`` holds a config and a readable store (the trainer is
    starting it)."""
    said = False
    while True:
        run = RunDir(Path(run_dir))
        if run.config.is_file():
            try:
                location = run.store_location()
                if not isinstance(location, Path) or location.is_file():
                    Store(location).close()
                    return
            except (StoreError, RunDirError):  # created, not yet committed
                pass
        if not said:
            say(f"rlhf label: waiting for the run to start in {run_dir}")
            said = True
        time.sleep(poll)


def label(run_dir: str | Path | PgLocation, overrides: Sequence[str] = (),
          teacher: str = "human", seed: int | None = None,
          log: Callable[[str], None] | None = None, annotator: str | None = None,
          allowed: Sequence[str] = ()) -> int:
    """Open the viewer on a run (a run directory, or a run on a PostgreSQL server) until
    the person quits; returns labels given (and kept). ``allowed``: modules a server's run
    may import (``rlhf.viewer.remote``)."""
    import pygame

    from rlhf.viewer.app import ViewerApp
    from rlhf.viewer.remote import remote_config

    cfg = (remote_config(run_dir, overrides, allowed) if isinstance(run_dir, PgLocation)
           else run_config(run_dir, overrides))
    app = ViewerApp(run_dir, cfg, teacher=teacher, seed=seed, log=log, annotator=annotator)
    try:
        app.open()
    except pygame.error as e:
        app.close()
        raise ViewerError(f"cannot open the viewer window ({e}); run `rlhf label` where "
                          "there is a display (or over ssh -X), or save a picture with "
                          "--screenshot out.png") from None
    app.run_forever()
    return app.session.answered if app.session is not None else 0


SCREENSHOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tga")
"""What ``pygame.image.save`` writes, chosen by the file name's suffix."""


def screenshot(run_dir: str | Path | PgLocation, out: str | Path, overrides: Sequence[str] = (),
               at: float = 0.5, force: bool = False, allowed: Sequence[str] = ()) -> bool:
    """Draw the first pending pair (its frame at fraction ``at`` of the clip) and the HUD,
    save it as an image at ``out`` (atomically; an existing file only with ``force``, never
    a file of the run directory), and exit. Claims nothing, labels nothing. Returns False
    (after saving the waiting screen) when no pair is pending."""
    remote = isinstance(run_dir, PgLocation)
    out = check_output_path(out, SCREENSHOT_SUFFIXES, "screenshot", force=force,
                            protected=[] if remote else [RunDir.open(run_dir).path])
    # A screenshot needs no window on screen; with no display it could not open one.
    headless_sdl(always=True)
    import pygame

    from rlhf.viewer.app import ViewerApp
    from rlhf.viewer.prepare import prepare_pair
    from rlhf.viewer.remote import remote_config

    cfg = (remote_config(run_dir, overrides, allowed) if isinstance(run_dir, PgLocation)
           else run_config(run_dir, overrides))
    app = ViewerApp(run_dir, cfg, seed=0)
    app.open(background=False)
    try:
        pending = app.store.pending_queries(limit=1)
        if pending:
            renderer = ClipRenderer(app.cfg.env)
            try:
                pair = prepare_pair(app.store, renderer, pending[0], False,
                                    app.layout.frame_box)
            finally:
                renderer.close()
            app.show(pair)
            app.playback.position = at * (pair.length - 1)
        app._refresh_status()
        app.draw()
        image = io.BytesIO()
        pygame.image.save(app.screen, image, out.name)  # the name picks the format
        atomic_write_bytes(out, image.getvalue())
        return bool(pending)
    finally:
        app.close()
