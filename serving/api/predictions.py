"""`GET /api/v1/predictions/{id}`: an asynchronous prediction's status and, once finished, the synchronous endpoint's
answer (serving/asynchronous.py).

A plain view, authenticated as the prediction endpoint is (an API key with predict:<model>, a user's token, the
console's session: serving/hotpath.py), not by the API's permission map: what decides is who asked. Only the caller
that sent the request (the same key, or the same user) or an admin sees it; anyone else gets the 404 an unknown id
gets, so ids cannot be probed.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from serving.asynchronous import FINISHED, as_json, async_prediction_for
from serving.hotpath import Reply, authorize_request, error, to_response
from serving.models import AsyncPrediction


def prediction(request: HttpRequest, prediction_id: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return to_response(error(405, "use GET", Allow="GET"))
    model_name = AsyncPrediction.objects.filter(pk=_uuid_or_none(prediction_id)).values_list("model_name", flat=True)
    scope = f"predict:{model_name.first() or '*'}"
    caller = authorize_request(request, scope)
    if isinstance(caller, Reply) and caller.status != 403:
        return to_response(caller)  # 401, 429, 503: as for a prediction
    user = _user_of(request, "" if isinstance(caller, Reply) else caller)
    row = async_prediction_for(prediction_id=prediction_id, caller="" if isinstance(caller, Reply) else caller,
                               user=user)  # fmt: skip
    ttl = settings.MODELWORKS_ASYNC_RESULT_TTL_S
    if row is None:
        return to_response(error(404, f"no prediction {prediction_id[:64]} of yours: results are deleted {ttl} s "
                                      "after they are ready (MODELWORKS_ASYNC_RESULT_TTL_S)"))  # fmt: skip
    if row.expires_at <= timezone.now():
        return to_response(error(410, f"the result of prediction {row.pk} expired at {row.expires_at.isoformat()}: "
                                      f"results are kept {ttl} s after they are ready"))  # fmt: skip
    headers = {} if row.status in FINISHED else {"Retry-After": "1"}
    return to_response(Reply(200, as_json(row), headers))


def _uuid_or_none(value: str):
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _user_of(request: HttpRequest, caller: str):
    """The user behind a "user:<id>" caller (an admin sees every prediction); None for an API key."""
    if not caller.startswith("user:"):
        return None
    if request.user.is_authenticated and f"user:{request.user.pk}" == caller:
        return request.user
    pk = caller.removeprefix("user:")
    return get_user_model().objects.filter(pk=pk).first() if pk.isdigit() else None
