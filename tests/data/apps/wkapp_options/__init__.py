"""Settings other than ``broker_url``: separate read/write URLs, TLS options,
and events published with a serializer wkctl does not read."""

from celery import Celery

app = Celery("wkapp_options")
app.conf.update(
    broker_read_url="amqps://guest:guest@broker.example:5671//read",
    broker_write_url="amqps://guest:guest@broker.example:5671//write",
    broker_use_ssl={"cert_reqs": 2, "ca_certs": "/etc/ssl/ca.pem"},
    event_serializer="pickle",
    control_exchange="ctl_options",
)
