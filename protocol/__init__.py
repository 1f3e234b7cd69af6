"""wkctl's reference library of the Celery worker-to-worker protocol.

The protocol rules live in small sans-IO modules (no broker, thread or socket
inside, time passed in explicitly); :mod:`wkctl.protocol.binding` drives them
over a real kombu connection.
"""

from .broker import BrokerSettings, embedded_settings, mask_url
from .wire import Limits, Names, Rejected, decode_body

__all__ = [
    "BrokerSettings",
    "Limits",
    "Names",
    "Rejected",
    "decode_body",
    "embedded_settings",
    "mask_url",
]
