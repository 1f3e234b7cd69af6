"""The revoked set: bounded, expiring, merged from both wire forms.

Celery workers keep the ids of revoked tasks in a ``LimitedSet`` (at most
50,000 ids, each forgotten 10,800 s after it was added) and exchange them
in Mingle's ``hello``.  Two wire forms exist: a JSON list of ids (Celery
5.7) and a mapping ``id -> [timestamp, id]`` (Celery 4.2 to 5.6).  The
timestamps of the mapping are ``time.monotonic()`` readings of the sending
host: counted from *its* boot, so they mean nothing here.  Trusting them is
how Celery once lost revoked ids (a stamp from a host with a longer uptime
never expires, and a set full of them evicts every local id at once), so
every id received is stamped with the local time of the merge instead
(spec: revoked-set section).

Everything is explicit-time: ``now`` is passed in, never read here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_REVOKED_EXPIRES",
    "DEFAULT_REVOKED_MAX",
    "MAX_TASK_ID_LENGTH",
    "MergeResult",
    "RevokedSet",
]

DEFAULT_REVOKED_MAX = 50_000
DEFAULT_REVOKED_EXPIRES = 10_800.0
#: Longest task id accepted; Celery's ids are UUIDs, but any string is legal.
MAX_TASK_ID_LENGTH = 1024


@dataclass(frozen=True)
class MergeResult:
    """What one merge did: ids added (new or refreshed), ids skipped
    because they were not strings of sane length, and ids dropped because
    the received list was longer than the bound."""

    added: int = 0
    skipped: int = 0
    truncated: int = 0


def _oldest_first(mapping: Mapping[object, object]) -> list[object]:
    """The keys of a mapping-form ``revoked``, oldest stamp first.

    The stamps of one sender are comparable with each other (not with ours),
    so they may order its ids; if any entry lacks a numeric stamp the
    arrival order is kept instead.
    """
    stamped: list[tuple[float, int, object]] = []
    for position, (key, value) in enumerate(mapping.items()):
        stamp = value[0] if isinstance(value, (list, tuple)) and value else None
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
            return list(mapping.keys())
        stamped.append((float(stamp), position, key))
    stamped.sort(key=lambda entry: (entry[0], entry[1]))
    return [key for _, _, key in stamped]


class RevokedSet:
    """Insertion-ordered ids with local stamps; oldest evicted first.

    Adding an id that is already present refreshes its stamp and moves it to
    the newest end, as Celery's ``LimitedSet.add`` does, so the order of the
    underlying dict is always the order of the stamps (given a
    non-decreasing ``now``) and both eviction and expiry pop from the front.
    """

    def __init__(
        self,
        maxlen: int = DEFAULT_REVOKED_MAX,
        expires: float | None = DEFAULT_REVOKED_EXPIRES,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self.maxlen = maxlen
        self.expires = expires
        self._data: OrderedDict[str, float] = OrderedDict()

    # -- mutation ---------------------------------------------------------

    def add(self, task_id: str, now: float) -> None:
        """Flag one id as revoked at local time ``now``."""
        data = self._data
        if task_id in data:
            data.move_to_end(task_id)
        data[task_id] = now
        while len(data) > self.maxlen:
            data.popitem(last=False)

    def update(self, task_ids: Iterable[str], now: float) -> int:
        """Flag many ids; returns how many were added or refreshed."""
        count = 0
        for task_id in task_ids:
            self.add(task_id, now)
            count += 1
        return count

    def merge(self, revoked: object, now: float) -> MergeResult:
        """Merge ids received from another node, in either wire form.

        * a list of ids (Celery 5.7 and wkctl): when it is longer than the
          bound only the last ``maxlen`` ids are kept, since senders list
          oldest first;
        * a mapping ``id -> [timestamp, id]`` (Celery 4.2-5.6): only the keys
          are kept, added in ascending order of the sender's stamps (spec
          [REVOKED-3]) so that a full set evicts the sender's oldest ids
          first; the stamps themselves are never stored (they count from
          another host's boot).

        Items that are not strings (or are longer than ``MAX_TASK_ID_LENGTH``)
        are skipped and counted, never raised on: the node keeps serving.
        """
        if isinstance(revoked, Mapping):
            items: list[object] = _oldest_first(revoked)
        elif isinstance(revoked, (list, tuple)):
            items = list(revoked)
        elif revoked is None:
            return MergeResult()
        else:
            return MergeResult(skipped=1)
        truncated = 0
        if len(items) > self.maxlen:
            truncated = len(items) - self.maxlen
            items = items[-self.maxlen :]
        added = skipped = 0
        for item in items:
            if isinstance(item, str) and 0 < len(item) <= MAX_TASK_ID_LENGTH:
                self.add(item, now)
                added += 1
            else:
                skipped += 1
        return MergeResult(added=added, skipped=skipped, truncated=truncated)

    def purge(self, now: float) -> int:
        """Forget ids older than ``expires`` seconds; returns how many."""
        if self.expires is None:
            return 0
        data = self._data
        limit = now - self.expires
        removed = 0
        while data:
            task_id, stamp = next(iter(data.items()))
            if stamp > limit:
                break
            del data[task_id]
            removed += 1
        return removed

    def discard(self, task_id: str) -> None:
        self._data.pop(task_id, None)

    def clear(self) -> None:
        self._data.clear()

    # -- reading ----------------------------------------------------------

    def as_list(self, now: float | None = None) -> list[str]:
        """The wire form of a reply: ids only, oldest first (purged first
        when ``now`` is given, so expired ids are never sent)."""
        if now is not None:
            self.purge(now)
        return list(self._data)

    def stamp(self, task_id: str) -> float | None:
        return self._data.get(task_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<RevokedSet: {len(self)}/{self.maxlen} ids, expires={self.expires}>"
