"""An app that configures no broker: Celery would use its default one."""

from celery import Celery

app = Celery("wkapp_nobroker")
app.conf.control_exchange = "ctl_nobroker"
