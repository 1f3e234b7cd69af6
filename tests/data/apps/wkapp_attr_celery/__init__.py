"""Layout 2: the app is ``proj.celery`` (an attribute, not a submodule)."""

from celery import Celery

celery = Celery("wkapp_attr_celery", broker="amqp://guest:guest@127.0.0.1:5672//attr_celery")
celery.conf.control_exchange = "ctl_attr_celery"
