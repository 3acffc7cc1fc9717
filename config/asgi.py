"""The web process as deployed (gunicorn with uvicorn's worker, platform/gunicorn.conf.py).

Prediction requests are answered by serving/front.py, which says why; every other request goes to Django's WSGI
application on a pool of GUNICORN_THREADS threads (a2wsgi), so the admin and the management API behave as under
gunicorn's threaded worker: one thread per request, a database connection per request.
"""

import os

from a2wsgi import WSGIMiddleware
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_wsgi_application()

from serving.front import Front  # noqa: E402 - needs the settings configured above

application = Front(WSGIMiddleware(django_application, workers=int(os.environ.get("GUNICORN_THREADS", "32"))))
