"""API paths that forgive: every `/api/` and `/v2/` path answers with or without its trailing slash, and an unknown
one answers a JSON 404.

Why a middleware: the URLconf spells some paths with a trailing slash (`/api/v1/models/`) and some without
(`/api/v1/monitors`, `/predict`), and a wrong guess met Django's defaults: CommonMiddleware's APPEND_SLASH answers
a GET with a 301 (a POST's body is lost on a redirect, so in DEBUG it raises instead: a 500 for a POST to
`/api/v1/models`), and an unknown path answers Django's HTML 404 (with DEBUG on, its debug page: handler404 is not
consulted then). So before CommonMiddleware, for a path under /api/ or /v2/ that does not resolve, the other
spelling is tried and, when it resolves, the request goes on as if it had been spelt so (request.path_info is
rewritten: no redirect, the method and body kept). When neither resolves the answer is
`404 {"detail": "no such endpoint: <METHOD> <path>"}`.

A path that resolves is left alone: a wrong method is the view's 405 (DRF's JSON), a missing object its 404. Other
paths (the admin, health, metrics) keep Django's behaviour. The prediction paths take their optional slash in
their own patterns (serving/urls.py), since the ASGI front answers them before Django runs at all.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, get_resolver

API_PREFIXES = ("/api/", "/v2/")
API_ROOTS = ("/api", "/v2")
MAX_SHOWN_PATH = 500  # a 404 quotes the path it was asked for, up to this many characters


def is_api_path(path: str) -> bool:
    """Under /api/ or /v2/ (or one of those two themselves)."""
    return path.startswith(API_PREFIXES) or path in API_ROOTS


def resolves(path: str, urlconf: str | None = None) -> bool:
    """The URLconf has a route for this path (whatever its method)."""
    try:
        get_resolver(urlconf).resolve(path)
    except Resolver404:
        return False
    return True


def toggled(path: str) -> str:
    """The other spelling: without the trailing slash when it has one, with one when it has not."""
    return path[:-1] if path.endswith("/") else f"{path}/"


def not_found(request: HttpRequest) -> JsonResponse:
    """The JSON 404 for an API path with no route in either spelling."""
    shown = request.path if len(request.path) <= MAX_SHOWN_PATH else f"{request.path[:MAX_SHOWN_PATH]}..."
    return JsonResponse({"detail": f"no such endpoint: {request.method} {shown}"}, status=404)


class ForgivingUrlsMiddleware:
    """See the module docstring; placed before django.middleware.common.CommonMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if is_api_path(path):
            urlconf = getattr(request, "urlconf", None)
            if not resolves(path, urlconf):
                other = toggled(path)
                if other == "/" or not resolves(other, urlconf):
                    return not_found(request)
                request.path_info = other
                request.path = f"{request.path[: len(request.path) - len(path)]}{other}"  # the script prefix kept
        return self.get_response(request)
