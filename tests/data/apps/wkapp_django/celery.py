from celery import Celery

app = Celery("wkapp_django", broker="amqp://guest:guest@127.0.0.1:5672//django")
app.conf.control_exchange = "ctl_django"
