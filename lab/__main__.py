"""Command line: ``python -m lab up|down|status|doctor|pgadmin|class``."""
from __future__ import annotations

import argparse
import sys

from . import classroom
from . import cluster as _cluster
from . import ha as _ha
from . import pgadmin
from .doctor import Doctor, report
from .errors import LabError
from .i18n import _


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab", description="PostgreSQL Replication Lab")
    p.add_argument("--home", help=_("lab home (default: $LAB_HOME or .lab/ in the repository)"))
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help=_("create, start or re-attach the cluster"))
    up.add_argument("--replicas", type=int, default=1)
    up.add_argument("--backend", choices=["local", "compose"],
                    help=_("local: server processes; compose: Docker containers "
                           "(default: $LAB_BACKEND, else compose where Docker answers)"))
    down = sub.add_parser("down", help=_("stop every server (data kept)"))
    down.add_argument("--wipe", action="store_true", help=_("also remove all data (like docker compose down -v)"))
    sub.add_parser("status", help=_("one line per node"))
    sub.add_parser("doctor", help=_("what this machine has for the lab, and what to do about what it lacks"))
    pga = sub.add_parser("pgadmin", help=_("pgAdmin 4 on 127.0.0.1 with the cluster's nodes loaded"))
    what = pga.add_mutually_exclusive_group()
    what.add_argument("--stop", action="store_true", help=_("stop pgAdmin (its login and settings are kept)"))
    what.add_argument("--status", action="store_true", help=_("is pgAdmin running, where, and its login"))
    what.add_argument("--install", action="store_true",
                      help=_("install pgAdmin 4 into its own environment (.venv-pgadmin)"))
    cls = sub.add_parser("class", help=_("the instructor's view of a class on JupyterHub (every student's lab)"))
    cls.add_argument("--root", help=_("the class root, holding homes/<student> (default: ${variable}, else {root})")
                     .format(variable=classroom.ROOT_ENV, root=classroom.DEFAULT_ROOT))
    what_cls = cls.add_subparsers(dest="class_cmd", required=True)
    for name, text in [("status", _("one line per student: server, cluster, nodes, checks passed, last activity")),
                       ("progress", _("self-checks passed per chapter, one line per student")),
                       ("reset", _("stop and wipe one student's cluster (their progress is kept)"))]:
        one = what_cls.add_parser(name, help=text)
        if name == "reset":
            one.add_argument("student")
        # --root after the command too; SUPPRESS keeps a --root given before it
        one.add_argument("--root", default=argparse.SUPPRESS, help=_("the class root, holding homes/<student>"))
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            c = _cluster.up(replicas=args.replicas, home=args.home, backend=args.backend)
            print(c.status().to_string(index=False))
        elif args.cmd == "down":
            _ha.down(wipe=args.wipe, home=args.home)  # chapter 08's cluster (<home>/ha), if there is one
            _cluster.down(wipe=args.wipe, home=args.home)
            print(_("cluster wiped") if args.wipe else _("cluster stopped (data kept)"))
        elif args.cmd == "status":
            print(_cluster.attach(args.home).status().to_string(index=False))
        elif args.cmd == "pgadmin":
            return pgadmin_cli(args)
        elif args.cmd == "class":
            return class_cli(args)
        elif args.cmd == "doctor":
            d = Doctor(report(args.home))
            print(d)
            return 0 if d.ok else 1
    except LabError as e:
        print(_("error: {error}").format(error=e), file=sys.stderr)
        return 1
    return 0


def pgadmin_cli(args) -> int:
    """``python -m lab pgadmin [--stop | --status | --install]``: start (attached to the cluster of
    ``--home``), stop, show or install pgAdmin 4."""
    if args.install:
        pgadmin.install()
        return 0
    if args.stop:
        print(_("pgAdmin stopped") if pgadmin.stop(args.home, quiet=True) else _("pgAdmin was not running"))
        return 0
    if args.status:
        info = pgadmin.status(args.home)
        print(info)
        return 0 if info.running else 3
    pgadmin.start(_cluster.attach(args.home))
    return 0


def class_cli(args) -> int:
    """``python -m lab class status | progress | reset <student> [--root DIR]``, as root on the hub host."""
    room = classroom.Classroom(args.root)
    if args.class_cmd == "status":
        df = room.status()
        if not len(df):
            print(_("no students yet in {path}").format(path=room.root / "homes"))
            return 0
        print(df.drop(columns="seen").to_string(index=False))
        for how in df["seen"].unique():  # how it was seen: once, under the table, not on every line
            print(f"({how})")
    elif args.class_cmd == "progress":
        df = room.progress()
        print(df.to_string() if len(df) else _("no students yet in {path}").format(path=room.root / "homes"))
    else:
        print(room.reset(args.student))
    return 0


if __name__ == "__main__":
    sys.exit(main())
