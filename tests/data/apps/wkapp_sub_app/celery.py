from celery import Celery

app = Celery("wkapp_sub_app", broker="amqp://guest:guest@127.0.0.1:5672//sub_app")
app.conf.control_exchange = "ctl_sub_app"
