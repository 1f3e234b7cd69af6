"""Layout 1: the app is ``proj.app``."""

from celery import Celery

app = Celery("wkapp_attr_app")
app.conf.update(
    broker_url="redis://127.0.0.1:6379/7",
    broker_transport_options={"visibility_timeout": 10},
    control_exchange="ctl_attr_app",
    event_exchange="ev_attr_app",
    event_queue_prefix="evq_attr_app",
    event_queue_ttl=7.0,
    event_queue_expires=90.0,
    control_queue_ttl=30.0,
    control_queue_expires=20.0,
)
