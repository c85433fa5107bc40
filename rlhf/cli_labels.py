"""The label commands of the CLI: ``rlhf annotators`` (who labelled, how reliably),
``rlhf export`` and ``rlhf import`` (labels between stores and other tools). Each takes a
run directory, or a PostgreSQL URL with ``--run NAME``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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
    out = check_output_path(args.out, (".jsonl",), "label export (JSON Lines)",
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
    """The ``annotators``, ``export`` and ``import`` subcommands."""
    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("run_dir", metavar="RUN", help="a run directory, or a PostgreSQL URL")
        p.add_argument("--run", help="the run's name on the PostgreSQL server")

    an = sub.add_parser("annotators", help="who labelled a run, and how reliably")
    target(an)
    an.add_argument("--json", action="store_true")
    an.set_defaults(fn=cmd_annotators)

    ex = sub.add_parser("export", help="a run's labels as JSON Lines")
    target(ex)
    ex.add_argument("--out", required=True, help="the .jsonl file to write")
    ex.add_argument("--clips", action="store_true",
                    help="include the clips' arrays, so the file alone can seed another store")
    ex.add_argument("--force", action="store_true", help="replace an existing --out file")
    ex.set_defaults(fn=cmd_export)

    im = sub.add_parser("import", help="add the labels of an rlhf export to a run")
    im.add_argument("file", help="a .jsonl file from rlhf export")
    im.add_argument("--into", dest="run_dir", metavar="RUN", required=True,
                    help="a run directory, or a PostgreSQL URL")
    im.add_argument("--run", help="the run's name on the PostgreSQL server")
    im.set_defaults(fn=cmd_import)
