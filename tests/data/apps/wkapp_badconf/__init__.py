"""An app whose configuration module does not exist: importing works,
reading the configuration fails."""

from celery import Celery

app = Celery("wkapp_badconf")
app.config_from_object("wkapp_no_such_settings_module")
