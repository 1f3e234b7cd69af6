"""The bounded containers of the events State: ``LRUCache`` and ``CallableDefaultdict``.

Both keep Celery's API (``celery.utils.functional.LRUCache`` and the
callable ``tasks_by_type`` / ``tasks_by_worker`` indexes of
``celery.events.state``).  Neither takes a lock: the code that shares a
State between threads does (see :mod:`wkctl.protocol.state`).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

__all__ = ("LRUCache", "CallableDefaultdict")


class LRUCache(MutableMapping[Any, Any]):
    """Bounded mapping evicting the least recently used key (Celery's LRUCache API).

    Like Celery's: ``data`` is the underlying :class:`OrderedDict`, ``limit``
    the bound, ``cache[key]`` marks the key as used, ``key in cache`` and
    ``data`` access do not.  Unlike Celery's, every removal (eviction, ``del``,
    ``pop``, ``popitem``, ``clear``) is reported to ``on_remove(key, value)``
    so the State can keep its indexes exact, and iteration works on a snapshot
    so a monitor thread can iterate while events are applied.
    """

    def __init__(
        self,
        limit: int | None = None,
        on_remove: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.limit = limit
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.on_remove = on_remove

    def __getitem__(self, key: Any) -> Any:
        data = self.data
        value = data[key]
        data.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        data = self.data
        if key not in data:
            limit = self.limit
            if limit and len(data) >= limit:
                old_key, old_value = data.popitem(last=False)
                if self.on_remove is not None:
                    self.on_remove(old_key, old_value)
        data[key] = value

    def __delitem__(self, key: Any) -> None:
        value = self.data.pop(key)
        if self.on_remove is not None:
            self.on_remove(key, value)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.data))

    def keys(self) -> Any:
        return self.data.keys()

    def values(self) -> Any:
        return list(self.data.values())

    def items(self) -> Any:
        return list(self.data.items())

    iterkeys = keys
    itervalues = values
    iteritems = items

    def popitem(self, last: bool = True) -> tuple[Any, Any]:
        key, value = self.data.popitem(last)
        if self.on_remove is not None:
            self.on_remove(key, value)
        return key, value

    def clear(self) -> None:
        items = list(self.data.items())
        self.data.clear()
        if self.on_remove is not None:
            for key, value in items:
                self.on_remove(key, value)

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.limit = state["limit"]
        self.data = state["data"]
        self.on_remove = None

    def __repr__(self) -> str:
        return f"<LRUCache limit={self.limit} size={len(self.data)}>"


class CallableDefaultdict(defaultdict[Any, Any]):
    """``defaultdict`` that is also callable, as Celery's ``tasks_by_type``.

    ``state.tasks_by_type[name]`` is the (weak) set of tasks of that type;
    ``state.tasks_by_type(name, limit=None, reverse=True)`` yields
    ``(uuid, task)`` pairs in time order (it used to be a method).
    """

    def __init__(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fun = fun
        super().__init__(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fun(*args, **kwargs)
