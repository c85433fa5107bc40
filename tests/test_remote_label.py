"""Labelling one PostgreSQL run from two "machines": separate processes in separate working
directories, with no run directory, only the server's URL and the run's name. Every answer
is stored once, with the annotator who gave it; a run that names code the labeller did not
allow is refused."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.store import Store
from rlhf.store_pg import PgLocation

ROOT = Path(__file__).resolve().parent.parent

# One labeller's machine: open the viewer from the store alone, answer N pairs with the
# keyboard (posted key presses, headless), quit.
LABELLER = """
import json, sys, time
import pygame
from rlhf.store_pg import PgLocation
from rlhf.viewer.app import ViewerApp
from rlhf.viewer.remote import remote_config

url, run, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
location = PgLocation(url, run)
app = ViewerApp(location, remote_config(location), seed=len(name), annotator=name)
app.open()
try:
    for _ in range(n):
        if not app.run_until(lambda: app.current is not None, 60):
            break
        before = app.session.answered
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT, mod=0,
                                             unicode="", scancode=0))
        app.run_until(lambda: app.session.answered != before, 20)
    print(json.dumps({"answered": app.session.answered}))
finally:
    app.close()
"""


def _labeller(url: str, run: str, name: str, n: int, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", LABELLER, url, run, name, str(n)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_machines_label_one_postgresql_run(pg_url, tmp_path):
    from bench_viewer import build_run

    run = f"remote-{time.time_ns()}"
    build_run(tmp_path / "trainer" / "run", queries=16, n_clips=8,
              overrides=(f"store.url={pg_url}", f"store.run={run}"))
    machines = []
    for name in ("alice", "bob"):
        (tmp_path / name).mkdir()
        machines.append(_labeller(pg_url, run, name, 6, tmp_path / name))
    answered = {}
    for name, proc in zip(("alice", "bob"), machines, strict=True):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        answered[name] = json.loads(out.strip().splitlines()[-1])["answered"]
        assert not any((tmp_path / name).iterdir())  # nothing written on that machine
    assert answered == {"alice": 6, "bob": 6}
    with Store(PgLocation(pg_url, run), readonly=True) as store:
        labels = store.labels()
        counts = store.counts()
    assert counts.labels == 12 and counts.label_events == 12  # each answer stored once
    assert len({lab.query_id for lab in labels}) == 12  # no query answered twice
    assert sorted(lab.annotator for lab in labels) == ["alice"] * 6 + ["bob"] * 6


def test_a_run_naming_untrusted_code_is_refused_unless_allowed(pg_url, tmp_path):
    from rlhf.config import config_yaml, load_config
    from rlhf.errors import ConfigError
    from rlhf.viewer import ViewerError
    from rlhf.viewer.remote import remote_config

    location = PgLocation(pg_url, f"hostile-{time.time_ns()}")
    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["env.imports=[evil_module]"])
    with Store(location, create=True) as store:
        store.put_meta("config", config_yaml(cfg))
    with pytest.raises(ViewerError, match="import evil_module .*--allow-import evil_module"):
        remote_config(location)
    assert "evil_module" not in sys.modules
    # The labeller's own choice: allowed, then imported (it is not installed here: one line).
    with pytest.raises(ConfigError, match="cannot make the run's env.*evil_module"):
        remote_config(location, allowed=["evil_module"])
    shown = subprocess.run([sys.executable, "-m", "rlhf.cli", "label", pg_url, "--run",
                            location.run], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "SDL_VIDEODRIVER": "dummy",
                                "PYTHONPATH": str(ROOT)}, timeout=120)
    assert shown.returncode == 2 and "evil_module" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1



def test_namespaced_ids_count_as_imports_and_a_missing_env_is_named(pg_url):
    from rlhf.config import config_yaml, load_config
    from rlhf.errors import ConfigError
    from rlhf.viewer import ViewerError
    from rlhf.viewer.remote import remote_config, requested_imports

    # 'pkg/Id-v0' makes gymnasium's resolution import 'pkg': it is asked for like any other.
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    cfg.env.id = "sneaky_pkg/Arm-v0"
    assert requested_imports(cfg.env) == ["sneaky_pkg"]
    location = PgLocation(pg_url, f"ns-{time.time_ns()}")
    with Store(location, create=True) as store:
        store.put_meta("config", config_yaml(cfg))
    with pytest.raises(ViewerError, match="import sneaky_pkg"):
        remote_config(location)
    # Allowed but not installed here: one line that says to install it, before any pair.
    with pytest.raises(ConfigError, match="cannot make the run's env.*install the run's env"):
        remote_config(location, allowed=["sneaky_pkg"])


def test_the_viewer_rides_out_a_server_restart(tmp_path):
    """The server crashes while a pair is on screen: the answer is not saved and the window
    says so; once the server is back, the same viewer saves the next answer."""
    import pygame
    from bench_viewer import build_run
    from pg import Cluster

    from rlhf.viewer.app import ViewerApp

    def left() -> None:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_LEFT, mod=0,
                                             unicode="", scancode=0))

    cluster = Cluster()
    try:
        run = build_run(tmp_path / "run", queries=6, n_clips=8,
                        overrides=(f"store.url={cluster.url}", "store.run=restart"))
        app = ViewerApp(run.path, seed=0, annotator="me")
        app.open()
        try:
            assert app.run_until(lambda: app.current is not None, 30)
            cluster.stop("immediate")
            left()
            app.run_until(lambda: False, 2.0)
            assert app.running and app.session.answered == 0
            assert "cannot be reached" in app.message or "Not saved" in app.message
            cluster.start()
            left()
            assert app.run_until(lambda: app.session.answered == 1, 20), app.message
        finally:
            app.close()
        with Store(PgLocation(cluster.url, "restart"), readonly=True) as store:
            assert [lab.annotator for lab in store.labels()] == ["me"]
    finally:
        cluster.close()
