"""Loading production models before traffic arrives (gunicorn's post_worker_init hook and /readyz call this)."""

from __future__ import annotations

import logging

from registry.models import ModelAlias
from registry.services import PRODUCTION_ALIAS
from serving.model_cache import model_cache
from serving.routing import versions_for_serving

logger = logging.getLogger(__name__)


def load_production_models() -> list[str]:
    """Load every version a production alias points at into this process; answer the ones that failed."""
    cache = model_cache()
    failed = []
    version_ids = ModelAlias.objects.filter(name=PRODUCTION_ALIAS).values_list("version_id", flat=True)
    for version in versions_for_serving().filter(pk__in=list(version_ids)):
        if version.pk in cache:
            continue
        try:
            cache.get(version)
        except Exception:
            logger.exception("could not load %s", version)
            failed.append(str(version))
    return failed
