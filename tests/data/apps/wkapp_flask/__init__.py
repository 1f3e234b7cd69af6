"""A web app called ``app`` next to the Celery app called ``celery``."""

from celery import Celery


class WebApp:
    """Stands for a Flask application object."""


app = WebApp()
celery = Celery("wkapp_flask", broker="amqp://guest:guest@127.0.0.1:5672//flask")
celery.conf.control_exchange = "ctl_flask"
