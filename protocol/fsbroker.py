"""The embedded broker's transport: kombu's filesystem transport, made safe
for several processes and cleaned up after the ones that exited.

kombu's ``filesystem://`` transport creates a message file and then writes
into it, and its reader moves files out of the folder without a lock, so a
reader polling every few milliseconds can pick up an empty or half-written
file (lost message, ``JSONDecodeError`` in the consumer) and two readers can
race for one file.  wkctl's embedded broker is exactly that situation: many
local processes polling one folder every 10 ms.  This transport writes each
message under a hidden temporary name and renames it into place (readers
only ever see whole files), and claims a file by renaming it inside the same
folder (atomic: exactly one reader wins) before reading it.

kombu's virtual transport never deletes a queue on its own (no auto-delete,
no exclusive queues), so every process that ever bound a queue to a fanout
exchange keeps receiving a copy of every message after it exited: files,
bindings and latencies grow run after run.  Here every queue has an
**owner** (the declaring process: host, pid and process start time, in
``control/owners/<queue>``):

* a channel that closes deletes the auto-delete and exclusive queues it
  declared (AMQP's semantics on a clean exit);
* a **sweep** removes the queues whose owner process is gone (crashed,
  killed): their bindings, their waiting messages and their owner record,
  plus temporary files a dead process left.  A queue without a live owner
  record (written by an older wkctl, or another host's process) is removed
  once its oldest message has waited :data:`UNOWNED_MAX_AGE` seconds (nobody
  consumes it), and one with neither owner nor binding (late copies a
  publisher wrote while the queue was being deleted) after
  :data:`ORPHAN_MAX_AGE` seconds.  Every
  channel sweeps when it opens and then every :data:`SWEEP_INTERVAL`
  seconds while it polls; ``wkctl broker clean`` sweeps on demand.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

__all__ = [
    "Channel",
    "Owner",
    "QueueInfo",
    "SWEEP_INTERVAL",
    "Survey",
    "Transport",
    "UNOWNED_MAX_AGE",
    "survey",
    "sweep",
]

_SUFFIX = ".msg"
#: Seconds between two sweeps by one polling channel.
SWEEP_INTERVAL = 30.0
#: A queue nobody claims (no owner record) is dead once a message waited this long:
#: a live consumer polls every few milliseconds.
UNOWNED_MAX_AGE = 120.0
#: Messages of a queue with neither owner nor binding are late copies for a
#: deleted queue (a fanout publisher read the binding just before it went):
#: nobody can consume them, they go once this old.
ORPHAN_MAX_AGE = 10.0
#: A half-written message file (``.*.part``) older than this is a dead writer's.
PARTIAL_MAX_AGE = 60.0
_OWNERS = "owners"


# -- owners ----------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, Linux), to tell a
    reused pid from the owner; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: skip past it
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Owner:
    """The process that declared a queue."""

    host: str
    pid: int
    start: str | None

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _start_time(pid))

    def alive(self) -> bool | None:
        """True/False on this host; None for another host's process (unknown)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # someone else's process holds the pid: compare start times
        if self.start is not None:
            now = _start_time(self.pid)
            if now is not None and now != self.start:
                return False  # the pid was reused
        return True

    def as_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "start": self.start})


def _safe_queue(queue: str) -> bool:
    return bool(queue) and os.sep not in queue and not queue.startswith(".") and "\0" not in queue


def _read_owner(path: Path) -> Owner | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Owner(str(data["host"]), int(data["pid"]), data.get("start"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- what the folder holds -------------------------------------------------------------


@dataclass
class QueueInfo:
    name: str
    owner: Owner | None = None
    alive: bool | None = None
    messages: int = 0
    bytes: int = 0
    oldest_age: float | None = None
    #: exchanges the queue is bound to
    bindings: int = 0
    stale: bool = False
    #: why it is stale (empty when it is not)
    reason: str = ""


@dataclass
class Survey:
    """The embedded broker's folder: every queue, and the totals."""

    root: Path
    files: int = 0
    bytes: int = 0
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    #: temporary files dead processes left (half-written or claimed messages)
    leftovers: list[Path] = field(default_factory=list)

    def queue(self, name: str) -> QueueInfo:
        """The record of queue ``name``, created on first sight."""
        return self.queues.setdefault(name, QueueInfo(name))

    @property
    def bindings(self) -> int:
        return sum(q.bindings for q in self.queues.values())

    @property
    def stale(self) -> list[QueueInfo]:
        return [q for q in self.queues.values() if q.stale]

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "files": self.files,
            "bytes": self.bytes,
            "queues": len(self.queues),
            "bindings": self.bindings,
            "stale": [q.name for q in self.stale],
            "leftovers": len(self.leftovers),
            "queue_list": [
                {
                    "name": q.name,
                    "owner": None
                    if q.owner is None
                    else {"host": q.owner.host, "pid": q.owner.pid},
                    "alive": q.alive,
                    "messages": q.messages,
                    "bytes": q.bytes,
                    "bindings": q.bindings,
                    "stale": q.stale,
                    "reason": q.reason,
                }
                for q in sorted(self.queues.values(), key=lambda q: q.name)
            ],
        }


def _tables(control: Path) -> Iterable[tuple[Path, list[Any]]]:
    for table in sorted(control.glob("*.exchange")):
        try:
            yield table, json.loads(table.read_text(encoding="utf-8") or "[]")
        except (OSError, ValueError):
            continue


def survey(queues_dir: Path, control: Path, now: float | None = None) -> Survey:
    """Read the folder: queues, their owners, messages, bindings, and which are stale."""
    now = time.time() if now is None else now
    out = Survey(queues_dir.parent)
    _scan_files(out, queues_dir, control, now)
    for _, table in _tables(control):
        for row in table:
            if isinstance(row, list) and len(row) == 3 and isinstance(row[2], str) and row[2]:
                out.queue(row[2]).bindings += 1
    owners = control / _OWNERS
    for q in out.queues.values():
        _judge(q, owners)
    _stale_owner_records(out, owners, now)
    return out


def _scan_files(out: Survey, queues_dir: Path, control: Path, now: float) -> None:
    """Count every file and its bytes; per queue, its messages and the age of
    the oldest; hidden temporary files of dead processes are leftovers."""
    for folder in (queues_dir, control, control / _OWNERS):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not entry.is_file():
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            out.files += 1
            out.bytes += st.st_size
            if folder != queues_dir:
                continue
            name = entry.name
            if name.startswith("."):
                if _is_leftover(name, now - st.st_mtime):
                    out.leftovers.append(Path(entry.path))
                continue
            if not name.endswith(_SUFFIX):
                continue
            q = out.queue(name.partition(".")[2][: -len(_SUFFIX)])
            q.messages += 1
            q.bytes += st.st_size
            age = now - st.st_mtime
            q.oldest_age = age if q.oldest_age is None else max(q.oldest_age, age)


def _judge(q: QueueInfo, owners: Path) -> None:
    """Whether a queue is stale: its owner exited, or it has no live owner and
    its messages have waited too long."""
    if _safe_queue(q.name):
        q.owner = _read_owner(owners / q.name)
    if q.owner is not None:
        q.alive = q.owner.alive()
        if q.alive is False:
            q.stale, q.reason = True, f"its owner (pid {q.owner.pid}) exited"
    if q.stale or q.alive is True:
        return
    age = q.oldest_age or 0.0
    if q.owner is None and q.bindings == 0 and age > ORPHAN_MAX_AGE:
        # copies that a publisher wrote while the queue was being deleted
        q.stale, q.reason = True, "no owner and no binding (late copies for a deleted queue)"
    elif age > UNOWNED_MAX_AGE:
        q.stale = True
        q.reason = f"no live owner, and a message has waited {age:.0f} s"


def _stale_owner_records(out: Survey, owners: Path, now: float) -> None:
    """Owner records of queues that have neither messages nor bindings left,
    and half-written records of dead processes, are leftovers."""
    try:
        for entry in os.scandir(owners):
            if entry.name.startswith("."):  # a record being written: a leftover once old
                try:
                    age = now - entry.stat().st_mtime
                except OSError:
                    continue
                if _is_leftover(entry.name, age):
                    out.leftovers.append(Path(entry.path))
            elif entry.name not in out.queues:
                owner = _read_owner(Path(entry.path))
                if owner is None or owner.alive() is False:
                    out.leftovers.append(Path(entry.path))
    except OSError:
        pass


def _is_leftover(name: str, age: float) -> bool:
    """A hidden temporary file of a dead process: ``.<msg>.part`` (writer)
    or ``.<msg>.<pid>.claimed`` (reader)."""
    if name.endswith(".part"):
        return age > PARTIAL_MAX_AGE
    if name.endswith(".claimed"):
        pid = name[: -len(".claimed")].rpartition(".")[2]
        if pid.isdigit():
            return Owner(socket.gethostname(), int(pid), None).alive() is False
    return False


def _unbind(control: Path, names: set[str]) -> None:
    """Remove every binding of ``names`` from every exchange table (locked)."""
    for table in control.glob("*.exchange"):
        try:
            with table.open("rb+", buffering=0) as f:
                filesystem.lock(f, filesystem.LOCK_EX)
                try:
                    rows = loads(bytes_to_str(f.read()) or "[]")
                    kept = [
                        r for r in rows if not (isinstance(r, list) and r[2:3] and r[2] in names)
                    ]
                    if len(kept) != len(rows):
                        f.seek(0)
                        f.write(str_to_bytes(dumps(kept)))
                        f.truncate()
                finally:
                    filesystem.unlock(f)
        except (OSError, ValueError):
            continue


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass  # another sweeper (or the reader) got there first


def sweep(queues_dir: Path, control: Path, *, everything: bool = False) -> Survey:
    """Remove stale queues (``everything``: every queue) and dead processes'
    leftovers; returns the survey it acted on."""
    found = survey(queues_dir, control)
    doomed = {q.name for q in (found.queues.values() if everything else found.stale)}
    if doomed:
        _unbind(control, doomed)
        for entry in os.scandir(queues_dir):
            if entry.name.endswith(_SUFFIX) and (
                entry.name.partition(".")[2][: -len(_SUFFIX)] in doomed
            ):
                _remove(Path(entry.path))
        for name in doomed:
            if _safe_queue(name):
                _remove(control / _OWNERS / name)
    for path in found.leftovers:
        _remove(path)
    return found


# -- the transport -----------------------------------------------------------------------


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic files, queue owners and sweeps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: auto-delete / exclusive queues this channel declared: deleted at close
        self._transient: set[str] = set()
        self._next_sweep = 0.0
        self._maybe_sweep()

    # -- ownership and clean-up --

    @property
    def _owners(self) -> Path:
        return Path(self.control_folder) / _OWNERS

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        try:
            sweep(Path(self.data_folder_in), Path(self.control_folder))
        except OSError:
            pass  # a folder that vanished mid-sweep: the next sweep tries again

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        super()._new_queue(queue, **kwargs)
        if not _safe_queue(queue):
            return
        if kwargs.get("auto_delete") or kwargs.get("exclusive"):
            self._transient.add(queue)
        try:
            self._owners.mkdir(parents=True, exist_ok=True)
            partial = self._owners / f".{queue}.{os.getpid()}.part"
            partial.write_text(Owner.me().as_json(), encoding="utf-8")
            os.replace(partial, self._owners / queue)
        except OSError as exc:
            raise ChannelError(f"Cannot record the owner of queue {queue!r}") from exc

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> Any:
        result = super().queue_delete(queue, if_unused=if_unused, if_empty=if_empty, **kwargs)
        self._transient.discard(queue)
        if _safe_queue(queue):
            self._purge(queue)
            owner = _read_owner(self._owners / queue)
            if owner is not None and owner.pid == os.getpid():
                _remove(self._owners / queue)
        return result

    def close(self) -> None:
        # AMQP deletes auto-delete and exclusive queues when their consumer
        # or connection goes; kombu's virtual transport never does.
        for queue in list(self._transient):
            owner = _read_owner(self._owners / queue)
            if owner is not None and owner.pid != os.getpid():
                continue  # another process declared it since and uses it
            try:
                self.queue_delete(queue)
            except Exception:  # noqa: BLE001 - closing must go on; the sweep catches the rest
                pass
        super().close()

    # -- atomic files --

    # kombu's own bases disagree on this signature (AbstractChannel names the
    # argument "message", the filesystem Channel "payload" and adds **kwargs):
    # this follows the class it overrides.
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(filesystem.monotonic() * 1000))}_{uuid.uuid4()}.{queue}{_SUFFIX}"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        self._maybe_sweep()
        wanted = f"{queue}{_SUFFIX}"
        folder = self.data_folder_in
        for filename in sorted(os.listdir(folder)):
            if filename.startswith(".") or filename.partition(".")[2] != wanted:
                continue
            source = os.path.join(folder, filename)
            claimed = os.path.join(folder, f".{filename}.{os.getpid()}.claimed")
            try:
                os.rename(source, claimed)  # atomic: only one reader gets it
            except OSError:
                continue  # another reader claimed it first
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
            finally:
                try:
                    os.remove(claimed)
                except OSError:
                    pass
            return loads(bytes_to_str(payload))
        raise Empty()

    def _size(self, queue: str) -> int:
        wanted = f"{queue}{_SUFFIX}"
        return sum(
            1
            for name in os.listdir(self.data_folder_in)
            if not name.startswith(".") and name.partition(".")[2] == wanted
        )


class Transport(filesystem.Transport):
    Channel = Channel
