"""The embedded broker's transport: kombu's filesystem transport, made safe
for several processes.

kombu's ``filesystem://`` transport creates a message file and then writes
into it, and its reader moves files out of the folder without a lock, so a
reader polling every few milliseconds can pick up an empty or half-written
file (lost message, ``JSONDecodeError`` in the consumer) and two readers can
race for one file.  wkctl's embedded broker is exactly that situation: many
local processes polling one folder every 10 ms.  This transport writes each
message under a hidden temporary name and renames it into place (readers
only ever see whole files), and claims a file by renaming it inside the same
folder (atomic: exactly one reader wins) before reading it.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

__all__ = ["Channel", "Transport"]

_SUFFIX = ".msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(filesystem.monotonic() * 1000))}_{uuid.uuid4()}.{queue}{_SUFFIX}"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
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
