"""The label commands of the CLI: ``rlhf label`` (the viewer), ``rlhf annotators`` (who
labelled, how reliably), ``rlhf export`` and ``rlhf import`` (labels between stores and
other tools). Each takes a run directory, or a PostgreSQL URL with ``--run NAME``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlhf.config import ConfigError
from rlhf.outputs import check_output_path
from rlhf.rundir import RunDir
from rlhf.store import Store, StoreError
from rlhf.store_pg import PgLocation, is_url, without_password


def store_location(target: str, run: str | None) -> Path | PgLocation:
    """``RUN`` on the command line: a run directory, or a PostgreSQL URL with ``--run``."""
    if is_url(target):
        if run is None:
            raise StoreError(f"{without_password(target)}: name the run on that server "
                             "with --run NAME")
        return PgLocation(target, run)
    if run is not None:
        raise StoreError(f"--run names a run on a PostgreSQL server; {target} is a run "
                         "directory (drop --run)")
    return RunDir.open(target).store_location()


def cmd_label(args: argparse.Namespace) -> int:
    from rlhf.viewer import label, screenshot, wait_for_run

    overrides = list(args.overrides)
    if args.speed is not None:
        overrides.append(f"viewer.speed={args.speed}")
    if args.run is not None and not is_url(args.run_dir):
        raise ConfigError("--run names a run on a PostgreSQL server; drop it for a run "
                          "directory")
    target = store_location(args.run_dir, args.run) if is_url(args.run_dir) else args.run_dir
    if args.screenshot:
        found = screenshot(target, args.screenshot, overrides, force=args.force,
                           allowed=args.allow_import)
        print(f"rlhf: saved {args.screenshot}"
              + ("" if found else " (no pending pair: it shows the waiting screen)"))
        return 0
    if args.force:
        raise ConfigError("--force goes with --screenshot OUT (to replace an existing image)")
    if args.wait:
        wait_for_run(args.run_dir)
    log = print if args.verbose else None
    given = label(target, overrides, teacher=args.name, seed=args.seed, log=log,
                  annotator=args.annotator, allowed=args.allow_import)
    print(f"rlhf: {given} labels given in this session, all saved in {args.run_dir}")
    return 0


def _annotator(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r}: an annotator is 1-64 printable "
                                         "characters, e.g. --annotator alice")
    return name


def cmd_annotators(args: argparse.Namespace) -> int:
    from rlhf.annotators import annotator_stats, format_table

    with Store(store_location(args.run_dir, args.run), readonly=True) as store:
        rows = annotator_stats(store.answered())
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    elif not rows:
        print(f"rlhf annotators: no labels yet in {args.run_dir}")
    else:
        print(format_table(rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rlhf.exchange import export_labels

    protected = [] if is_url(args.run_dir) else [args.run_dir]
    out = check_output_path(args.out, (".jsonl", ".parquet"), "label export",
                            force=args.force, protected=protected)
    with Store(store_location(args.run_dir, args.run), readonly=True) as store:
        n = export_labels(store, out, clips=args.clips)
    print(f"rlhf: exported {n} labels to {out}" + (" with their clips" if args.clips else ""))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from rlhf.exchange import import_labels

    with Store(store_location(args.run_dir, args.run)) as store:
        added, skipped = import_labels(store, Path(args.file))
    print(f"rlhf: imported {added} labels into {args.run_dir}"
          + (f" ({skipped} already there)" if skipped else ""))
    return 0


def add_label_commands(sub: Any) -> None:
    """The ``label``, ``annotators``, ``export`` and ``import`` subcommands."""
    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", metavar="RUN", help="a run directory, or a PostgreSQL URL")
        p.add_argument("--run", help="the run's name on the PostgreSQL server")

    lb = sub.add_parser("label", help="label a run's pairs in the viewer window")
    lb.add_argument("run_dir")
    lb.add_argument("overrides", nargs="*", help="key.path=value, e.g. viewer.width=1600")
    lb.add_argument("--screenshot", metavar="PNG",
                    help="draw the first pending pair and the HUD to a PNG and exit")
    lb.add_argument("--force", action="store_true",
                    help="with --screenshot: replace an existing image file")
    lb.add_argument("--name", default="human", help="teacher name stored with each label")
    lb.add_argument("--run", help="with a PostgreSQL URL for RUN_DIR: the run's name there")
    lb.add_argument("--allow-import", action="append", default=[], metavar="MODULE",
                    help="a module a server's run may make this viewer import (its env)")
    lb.add_argument("--annotator", type=_annotator,
                    help="who is labelling, stored with each label (default: your user name)")
    lb.add_argument("--speed", type=float, help="initial playback speed (default 1)")
    lb.add_argument("--seed", type=int, help="seed of the left/right assignment")
    lb.add_argument("--wait", action="store_true",
                    help="wait for the run directory to appear (the trainer is starting)")
    lb.add_argument("--verbose", action="store_true", help="print each answer as it is saved")
    lb.set_defaults(fn=cmd_label)

    an = sub.add_parser("annotators", help="who labelled a run, and how reliably")
    target(an)
    an.add_argument("--json", action="store_true")
    an.set_defaults(fn=cmd_annotators)

    ex = sub.add_parser("export", help="a run's labels as JSON Lines or Parquet")
    target(ex)
    ex.add_argument("--out", required=True, help="the .jsonl or .parquet file to write")
    ex.add_argument("--clips", action="store_true",
                    help="include the clips' arrays, so the file alone can seed another store")
    ex.add_argument("--force", action="store_true", help="replace an existing --out file")
    ex.set_defaults(fn=cmd_export)

    im = sub.add_parser("import", help="add the labels of an rlhf export to a run")
    im.add_argument("file", help="a .jsonl or .parquet file from rlhf export")
    im.add_argument("--into", dest="run_dir", metavar="RUN", required=True,
                    help="a run directory, or a PostgreSQL URL")
    im.add_argument("--run", help="the run's name on the PostgreSQL server")
    im.set_defaults(fn=cmd_import)
