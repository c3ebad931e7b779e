"""What the lab ran on your servers, in the form you would type it yourself.

The lab does an experiment in one call (``lab.failover.failover(cluster)``); underneath it runs
ordinary commands: SQL in ``psql`` (``SELECT pg_promote()``, ``ALTER SYSTEM SET
synchronous_standby_names = ...``) and programs in a terminal (``pg_ctl``, ``pg_basebackup -R``,
``pg_rewind --source-server ...``, ``docker compose ...``).  Every one that changes a server is
recorded here, passwords masked:

>>> lab.transcript()                     # the last 20 commands              # doctest: +SKIP
>>> with lab.show_commands():            # print each command as it runs    # doctest: +SKIP
...     cluster.primary.set(work_mem="8MB")
replica1=# ALTER SYSTEM SET work_mem = '8MB';

SQL shows as ``<node>=# <statement>;`` (psql's prompt; ``cluster.node(name).psql()`` is the
command that opens that prompt), a program as ``<where>$ <command line>``.  Queries that only
read (the lab's polling) are not recorded.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import re
import shlex
import threading
import time

from .errors import Text, need_int, need_number, need_str
from .i18n import N_, _, current

_LOG: "collections.deque[Entry]" = collections.deque(maxlen=5000)
_guard = threading.Lock()
_echo = [0]   # how many show_commands() blocks are open (print as recorded)

_SECRETS = [
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I), r"\1****"),
    (re.compile(r"(PASSWORD\s+)('(?:[^']|'')*'|\S+)", re.I), r"\1'****'"),
    (re.compile(r"\b(PGPASSWORD=)\S+"), r"\1****"),
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@"), r"\1****@"),
]


def mask(text: str) -> str:
    """``text`` with every password replaced by ****."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def mask_log(text: str) -> str:
    """A server log with the passwords of connection strings replaced by ****: the server logs
    ``parameter "primary_conninfo" changed to "... password=..."`` when a replica is retargeted.
    (Only ``password=`` and URIs: "password authentication failed" is PostgreSQL's own message.)"""
    for pattern, repl in (_SECRETS[0], _SECRETS[3]):
        text = pattern.sub(repl, text)
    return text


@dataclasses.dataclass(frozen=True)
class Entry:
    at: float          # time.time()
    where: str         # a node's name, or "host"
    kind: str          # "sql" or "shell"
    text: str          # masked

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.at))
        prompt = f"{self.where}=# " if self.kind == "sql" else f"{self.where}$ "
        return f"[{stamp}] {prompt}{self.text}"


def _record(where: str, kind: str, text: str, masked: bool = False) -> None:
    entry = Entry(time.time(), where or "host", kind, text.strip() if masked else mask(text.strip()))
    with _guard:
        _LOG.append(entry)
    if _echo[0]:
        print(entry.line(), flush=True)


_READ_ONLY = re.compile(r"^\s*(SELECT|SHOW|WITH|EXPLAIN|VALUES|TABLE)\b", re.I)
_CHANGING_FUNCTIONS = re.compile(r"\bpg_(promote|reload_conf|create_\w+|drop_\w+|switch_wal|wal_replay_\w+|"
                                 r"terminate_backend|cancel_backend|checkpoint|rotate_logfile|"
                                 r"replication_slot_advance|logical_slot_get_changes)\s*\(", re.I)


def changes_a_server(statement: str) -> bool:
    """Is ``statement`` one to record: anything but a plain read (SELECT, SHOW ...), or a read that
    calls a function that changes the server (``SELECT pg_promote()``, ``pg_reload_conf()`` ...)."""
    return not _READ_ONLY.match(statement) or bool(_CHANGING_FUNCTIONS.search(statement))


def sql(where: str, statement: str) -> None:
    """Record a statement run on node ``where`` (the text the server received)."""
    text = " ".join(statement.split()) if "\n" in statement else statement
    _record(where, "sql", text if text.rstrip().endswith(";") else text.rstrip() + ";")


def shell(where: str, argv, env: "dict | None" = None) -> None:
    """Record a program run (``argv``) for node ``where`` (or "host"); ``env``: the variables a
    student would set for it (shown as a prefix, masked)."""
    prefix = " ".join(mask(f"{k}={shlex.quote(str(v))}") for k, v in (env or {}).items())
    line = shlex.join(mask(str(a)) for a in argv)  # each argument masked before quoting
    _record(where, "shell", f"{prefix} {line}" if prefix else line, masked=True)


def note(where: str, text: str) -> None:
    """Record what the lab did in another way than a command, as the command that does the same
    (e.g. the promote file plus SIGUSR1, which is what ``pg_ctl promote`` does)."""
    _record(where, "shell", text)


_QUIET_TOOLS = {"pg_controldata", "cat", "test", "ls", "stat", "head", "tail", "du", "find"}


def worth_showing(argv) -> bool:
    """A program the lab runs beside a server that a student would type (pg_waldump, pg_basebackup,
    touch standby.signal ...), not one it only polls (pg_controldata, cat of a file ...)."""
    if not argv:
        return False
    prog = str(argv[0]).rsplit("/", 1)[-1]
    return prog not in _QUIET_TOOLS and "--version" not in argv


def from_entrypoint(where: str, output: str) -> None:
    """The programs replica/entrypoint.sh ran (its ``entrypoint[...]: run: ...`` lines:
    pg_basebackup, pg_rewind ...), from its output or a container's log."""
    for line in (output or "").splitlines():
        head, sep, cmd = line.partition("]: run: ")
        if sep and "entrypoint[" in head:
            note(where, cmd)


# --- what the entrypoints say, in the lab's language -------------------------------------------
# master/entrypoint.sh, replica/entrypoint.sh and master/init-master.sh run in containers too, where
# they log in English (`docker logs`); where the lab shows their lines (node.logs(), rewind_log) it
# puts them in the student's language: each `log "..."` of the scripts, its shell variables as named
# placeholders (tests/test_i18n.py checks that this list and the scripts' lines are the same).
# "run: ..." lines are commands and stay as they are.
ENTRYPOINT_SAYS = [
    N_("{file}: this node is now a replica of {primary}: running replica/entrypoint.sh"),
    N_("{file}: a standalone node with existing data: starting it as it is"),
    N_("empty data directory: initdb"),
    N_("running init-master.sh against a private server"),
    N_("existing data found: starting the primary"),
    N_("{file} says this node is a primary, but {pgdata} holds no database: refusing to start"),
    N_("{file}: this node is a primary (promoted): starting its data as it is"),
    N_("the primary at {host}:{port} did not answer within {seconds}s: start it first"),
    N_("base backup done: {pgdata} is a hot standby of {host}:{port}"),
    N_("rewinding with pg_rewind onto the primary's timeline"),
    N_("removing a stale postmaster.pid (PID {pid}) left by the crashed server"),
    N_("CHECKPOINT refused (no pg_checkpoint role): waiting for the primary's own"),
    N_("the primary has not finished a checkpoint since its promotion: waiting for it before pg_rewind"),
    N_("still no checkpoint on the primary after {seconds} s: trying pg_rewind anyway (run CHECKPOINT on the "
       "primary)"),
    N_("pg_rewind done: continuing as a standby of {host}:{port} (slot {slot})"),
    N_("a previous base backup did not finish: wiping {pgdata} before retrying"),
    N_("empty data directory: taking a base backup from {host}:{port} (slot {slot})"),
    N_("the data directory is broken (pg_controldata cannot read it): wiping it for a fresh base backup"),
    N_("existing standby data found, primary not reachable yet: starting and continuing replication from where "
       "it stopped"),
    N_("{pgdata} holds a database that is not a standby and the primary cannot be checked: refusing to touch it"),
    N_("this data belongs to another cluster (system identifier {here}, the primary's is {primary}): wiping it "
       "for a fresh base backup"),
    N_("{pgdata} holds a database that is not a standby (a promoted or former primary?): refusing to overwrite "
       "it; set REPLICA_REJOIN=1 to rewind it onto the primary, or wipe it"),
    N_("existing standby data found (timeline {timeline}, same system): continuing replication from where it "
       "stopped"),
    N_("timeline {here} here, {primary} on the primary: this node may have diverged"),
    N_("pg_rewind could not rejoin it: wiping it for a fresh base backup"),
    N_("creating role {user} and database {database}"),
    N_("creating table test_replication in {database}"),
    N_("done"),
]
_ENTRYPOINT_LINE = re.compile(r"^((?:entrypoint\[[^\]]*\]|init-master): )(.*)$")


def _pattern(message: str) -> "re.Pattern":
    parts = re.split(r"\{(\w+)\}", message)  # text, name, text, name, ..., text
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)))


_ENTRYPOINT_PATTERNS = [(_pattern(m), m) for m in ENTRYPOINT_SAYS]


def entrypoint_says(text: str) -> str:
    """A log with the entrypoints' lines in the lab's language (as they are in English)."""
    if current() == "en" or "entrypoint[" not in text and "init-master: " not in text:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        m = _ENTRYPOINT_LINE.match(body)
        if m:
            for pattern, message in _ENTRYPOINT_PATTERNS:
                said = pattern.fullmatch(m.group(2))
                if said:
                    line = m.group(1) + _(message).format(**said.groupdict()) + line[len(body):]
                    break
        out.append(line)
    return "".join(out)


def mark() -> float:
    """A point in time to show only what came after: ``lab.transcript(since=t)``."""
    return time.time()


def entries(since: "float | None" = None, where: "str | None" = None) -> "list[Entry]":
    with _guard:
        out = list(_LOG)
    return [e for e in out if (since is None or e.at >= since) and (where is None or e.where == where)]


def transcript(last: int = 20, since: "float | None" = None, node: "str | None" = None) -> Text:
    """The commands the lab ran (newest last): the ``last`` ones, or all ``since`` a
    ``lab.transcript_mark()``; only those of ``node`` if given.  SQL as at psql's prompt,
    programs as at a shell's; passwords masked."""
    need_int(last, "last", 1, 5000)
    if since is not None:
        need_number(since, "since", 0, None, "seconds since the epoch (lab.transcript_mark())")
    if node is not None and not isinstance(node, str):
        node = need_str(getattr(node, "name", None), "node", example=_("'replica1' or cluster.primary"))
    chosen = entries(since, node)
    chosen = chosen if since is not None else chosen[-last:]
    if not chosen:
        return Text(_("(nothing recorded yet: the lab records the commands that change a server)"))
    return Text("\n".join(e.line() for e in chosen))


@contextlib.contextmanager
def show_commands():
    """Print every command the lab runs inside the block, as it runs."""
    with _guard:
        _echo[0] += 1
    try:
        yield
    finally:
        with _guard:
            _echo[0] -= 1
