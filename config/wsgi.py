"""WSGI entry point: the HTTP side (REST API, dashboard, admin, health, metrics, static files).

Production serves it with gunicorn (``config/gunicorn.conf.py``); WebSockets are the ASGI
side's (``config.asgi``), background jobs run in their own process (``manage.py run_jobs``).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()
