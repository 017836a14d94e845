"""A WSGI application whose every request fails outside Django: what gunicorn itself then logs
(``tests/ops/test_gunicorn_log.py``). Django is loaded as for ``config.wsgi``, which the
configuration's worker hook expects."""

from config.wsgi import application as django_application  # noqa: F401


def application(environ, start_response):
    raise RuntimeError("the request failed with token=abcdef123456")
