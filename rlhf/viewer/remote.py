"""Labelling a run on a PostgreSQL server from another machine, with nothing but the store
(``rlhf label postgresql://host/db --run NAME``): the run's config comes from the store, its
clips are rendered here by replaying their stored states.

Trust: whoever can write to a shared store can change the config it holds, and a config
names code (``env.id`` as ``module:Class``, ``env.imports``). The viewer imports only the
package's own example envs and what the labeller allows on their command line
(``--allow-import MODULE``); anything else is refused in one line that names it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from rlhf.config import Config, ConfigError, EnvConfig, load_config
from rlhf.store import Store, StoreError
from rlhf.store_pg import PgLocation

TRUSTED = ("rlhf_envs", "rlhf", "gymnasium")
"""Top-level packages a remote run may import without asking: this package and its
examples, and gymnasium's own envs."""


def requested_imports(env: EnvConfig) -> list[str]:
    """The modules making ``env`` would import: ``env.imports``, ``env.id``'s module
    (``module:Class``), or its namespace (``pkg/Id-v0`` imports ``pkg`` to register it)."""
    asked = list(env.imports)
    if ":" in env.id:
        asked.append(env.id.split(":", 1)[0])
    elif "/" in env.id:
        asked.append(env.id.split("/", 1)[0])
    return asked


def refused_imports(env: EnvConfig, allowed: Sequence[str]) -> list[str]:
    """Of ``requested_imports``, those neither trusted nor allowed by the labeller (a module
    is allowed with its submodules: ``--allow-import mylab`` allows ``mylab.envs``)."""
    def ok(module: str) -> bool:
        return any(module == a or module.startswith(a + ".") for a in (*TRUSTED, *allowed))

    return [m for m in requested_imports(env) if not ok(m)]


def remote_config(location: PgLocation, overrides: Sequence[str] = (),
                  allowed: Sequence[str] = ()) -> Config:
    """The run's config from its store, with the labeller's ``overrides`` (e.g.
    ``viewer.speed=2``); refused when it asks to import modules the labeller did not allow."""
    with Store(location, readonly=True) as store:
        text = store.get_meta("config")
    if text is None:
        raise StoreError(f"{location}: the run's config is not in the store (a run started "
                         "by an older rlhf); label it from its run directory")
    with tempfile.TemporaryDirectory(prefix="rlhf-remote-") as tmp:
        path = Path(tmp) / f"{location.run}-config.yaml"
        path.write_text(text)
        cfg = load_config(path, list(overrides))
    refused = refused_imports(cfg.env, allowed)
    if refused:
        from rlhf.viewer.commands import ViewerError

        raise ViewerError(
            f"{location} asks this viewer to import {', '.join(refused)} (env.id / "
            "env.imports): code anyone who can write to the store could have chosen. If you "
            f"trust it, add --allow-import {refused[0]}")
    # The env is made on this machine: say now, not at the first pair, if it cannot be.
    from rlhf.environment import import_modules, resolve_env_id

    try:
        import_modules(cfg.env.imports)
        resolve_env_id(cfg.env.id)
    except ConfigError as e:
        raise ConfigError(f"{location}: this machine cannot make the run's env ({e}); "
                          "install the run's env package here") from None
    return cfg
