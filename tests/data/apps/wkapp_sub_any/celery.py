from celery import Celery

DEBUG = False
worker_app = Celery("wkapp_sub_any", broker="amqp://guest:guest@127.0.0.1:5672//sub_any")
worker_app.conf.control_exchange = "ctl_sub_any"
