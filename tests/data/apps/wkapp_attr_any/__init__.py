"""Layout 3: some other attribute of the package is the app."""

from celery import Celery

settings = {"not": "an app"}
my_celery_app = Celery("wkapp_attr_any", broker="amqp://guest:guest@127.0.0.1:5672//attr_any")
my_celery_app.conf.control_exchange = "ctl_attr_any"
