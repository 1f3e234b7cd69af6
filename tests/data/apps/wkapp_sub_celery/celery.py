from celery import Celery

celery = Celery("wkapp_sub_celery", broker="amqp://guest:guest@127.0.0.1:5672//sub_celery")
celery.conf.control_exchange = "ctl_sub_celery"
