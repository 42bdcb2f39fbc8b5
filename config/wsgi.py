import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from config.request_body import BodyDeadline

# A request body that does not arrive within REQUEST_BODY_TIMEOUT_S ends with 408.
application = BodyDeadline(get_wsgi_application())
