"""Revoked ids ([REVOKED-n]) through the ``revoke`` command."""

from __future__ import annotations

import uuid

from .checks_common import _fresh, _revoked_now
from .registry import Failed, check
from .runner import Context

__all__: list[str] = []


@check("revoke.adds", "PIDBOX-15", "a revoke adds the ids to its revoked set", also=("REVOKED-2",))
def revoke_adds(ctx: Context) -> str:
    single = _fresh("revoke")
    several = [_fresh("revoke"), str(uuid.uuid4())]
    ctx.require_control()
    ctx.cast("revoke", {"task_id": single, "terminate": False, "signal": "SIGTERM"})
    ctx.cast("revoke", {"task_id": several, "terminate": False, "signal": "SIGTERM"})
    # The node handles its pidbox queue in order: the revokes come first.
    held = set(_revoked_now(ctx))
    missing = [i for i in [single, *several] if i not in held]
    if missing:
        raise Failed(
            "revoked ids are not in its revoked reply",
            expected=[single, *several],
            actual=f"missing {missing}",
        )
    return "one id and a list of ids revoked"
