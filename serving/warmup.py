"""Loading production models before traffic arrives (gunicorn's post_worker_init hook and /readyz call this)."""

from __future__ import annotations

from registry.models import ModelAlias
from registry.services import PRODUCTION_ALIAS
from serving.model_cache import ModelLoadFailed, model_cache
from serving.ood import scorer_for
from serving.routing import versions_for_serving


def load_production_models() -> dict[str, str]:
    """Load every version a production alias points at into this process; answer each one's state ("loaded", or
    why it cannot be loaded and when it is tried again). A version that failed lately is not tried again before its
    back-off has passed (serving/model_cache.py), so calling this on every readiness probe is cheap."""
    cache = model_cache()
    states = {}
    version_ids = ModelAlias.objects.filter(name=PRODUCTION_ALIAS).values_list("version_id", flat=True)
    for version in versions_for_serving().filter(pk__in=list(version_ids)).order_by("model__name"):
        try:
            if version.pk not in cache:
                cache.get(version)
                scorer_for(version.pk)  # its OOD profile read now, not by the first request on the processor's thread
            states[str(version)] = "loaded"
        except ModelLoadFailed as exc:  # logged and counted by the cache when the attempt was made
            states[str(version)] = f"{exc.failure.reason}; retried in {exc.retry_after} s"
    return states
