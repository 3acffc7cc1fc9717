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


class BodyCutShort(OSError):
    """The client went away (or timed out, config/web_worker.py) before the whole body was read."""


class WholeBodies:
    """Django reads a body that ends early as a broken one, not as a short one.

    a2wsgi hands Django the end of the body when the client disconnects (or the web worker gives up on a slow body):
    Django then parsed what had arrived as if it were all of it, and a form cut short was saved (measured: a model
    created from `name=...&task=...` out of a 1,000-byte body). Raised as OSError, it is Django's UnreadablePostError:
    CSRF refuses the request, DRF fails it; nothing is written from it.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def receiving() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BodyCutShort("the client went away before the whole request body was read")
            return message

        await self.app(scope, receiving, send)


application = Front(
    WholeBodies(WSGIMiddleware(django_application, workers=int(os.environ.get("GUNICORN_THREADS", "32"))))
)
