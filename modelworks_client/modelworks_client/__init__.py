"""modelworks-client: a Modelworks platform from a notebook or a CI job.

from modelworks_client import Client
mw = Client("http://localhost:8000", token="mwk_...")      # or MODELWORKS_URL / MODELWORKS_TOKEN
v = mw.register(pipeline, "churn", eval_data=df, target="y", gates=["accuracy >= 0.8"])
mw.predict("churn", df.drop(columns="y").head())
job = mw.predict_async("churn", rows); mw.prediction_frame(job.id)   # over the server's queue
model = mw.load_model("models:/churn@production")
"""

from modelworks_client.client import AsyncPrediction, Client, DriftReport, Rollout, Version
from modelworks_client.errors import (
    ApiError,
    ArtifactTampered,
    Conflict,
    GateRejected,
    InvalidReference,
    ModelworksError,
    NotFound,
    PermissionDenied,
    RolloutTimeout,
    UntrustedArtifact,
)
from modelworks_client.refs import ModelRef, parse_ref

__all__ = [
    "ApiError",
    "AsyncPrediction",
    "ArtifactTampered",
    "Client",
    "Conflict",
    "DriftReport",
    "GateRejected",
    "InvalidReference",
    "ModelRef",
    "ModelworksError",
    "NotFound",
    "PermissionDenied",
    "Rollout",
    "RolloutTimeout",
    "UntrustedArtifact",
    "Version",
    "parse_ref",
]
__version__ = "0.1.0"
