"""The one view: the JSON body's rows through the estimator, the answers as JSON."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import skops.io as sio
from django.http import HttpRequest, HttpResponse, JsonResponse

# As the platform does (serving/apps.py): the rows come as arrays in the model's own feature order.
warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)

_data = Path(os.environ["BARE_MODEL_PATH"]).read_bytes()
MODEL = sio.loads(_data, trusted=sio.get_untrusted_types(data=_data))
FEATURES = [str(name) for name in MODEL.feature_names_in_]


def predict(request: HttpRequest) -> JsonResponse:
    rows = json.loads(request.body)["instances"]
    X = np.asarray([[row[name] for name in FEATURES] for row in rows], dtype=float)
    probabilities = MODEL.predict_proba(X)
    predictions = MODEL.predict(X)
    return JsonResponse({"predictions": predictions.tolist(), "probabilities": probabilities.tolist()})


def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")
