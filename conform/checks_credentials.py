"""Security of the run as a whole ([SEC-6]): no credentials leak (runs last)."""

from __future__ import annotations

from urllib.parse import urlsplit

from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []


@check("sec.no-credentials", "SEC-6", "nothing it sent contains the broker password")
def no_credentials(ctx: Context) -> str:
    parts = urlsplit(ctx.probe.settings.url)
    password = parts.password
    if not password or len(password) < 3:
        raise Skipped("the broker URL has no password to look for")

    def leaks(text: str) -> bool:
        # A user name is no secret: guest:guest must not flag the masked
        # URL amqp://guest:**@host that Celery's report reply carries.
        if parts.username:
            text = text.replace(f"//{parts.username}:", "//:")
        return password in text

    for ev in ctx.recorder.snapshot():
        if ev.hostname == ctx.node and leaks(repr(ev.body)):
            raise Failed(
                f"its {ev.type} event contains the broker password",
                expected="no credentials",
                actual="password found",
            )
    for text in ctx.reply_texts():
        if leaks(text):
            raise Failed(
                "a reply contains the broker password", expected="no credentials", actual="found"
            )
    return "no password in its replies and events"
