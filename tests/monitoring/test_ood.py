"""Out-of-distribution flags: rows outside a version's reference are flagged, logged and counted (or refused when the
profile says so); rows drawn from the reference never are. The scores are checked against scipy's Mahalanobis."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from django.core.files.storage import storages
from django.core.management import call_command
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from scipy.spatial.distance import mahalanobis

from monitoring import ood
from monitoring.services import references
from serving import services as serving
from serving.models import PredictionLog
from serving.ood import OutOfDistribution
from tests.monitoring.conftest import flush
from tests.serving.conftest import make_key, post


@pytest.fixture(autouse=True)
def fresh_scorers():
    ood.forget()
    yield
    ood.forget()


@pytest.fixture
def profiled(cancer_v1):
    """cancer v1 with its reference sample (from its evaluation sample), which builds its OOD profile."""
    dataset = references.reference_dataset_from_evaluation(version=cancer_v1)
    with storages["artifacts"].open(dataset.path, "rb") as handle:
        reference = pd.read_csv(handle)
    return cancer_v1, reference[[f["name"] for f in cancer_v1.signature["inputs"]]]


def _flagged(model: str, version: str, result: str) -> float:
    labels = {"model": model, "version": version, "result": result}
    return REGISTRY.get_sample_value("modelworks_ood_rows_total", labels) or 0.0


def test_rows_from_the_reference_are_never_flagged_and_rows_outside_it_are(profiled, client, staff):
    version, reference = profiled
    before = _flagged("cancer", "1", "flagged")
    inside = serving.predict(model_name="cancer", payload={"inputs": reference.values.tolist()}, alias="production")

    outside = reference.iloc[:3].copy()
    outside.loc[outside.index[0], "mean radius"] = reference["mean radius"].max() * 2  # beyond its range
    outside.loc[outside.index[1], "worst texture"] = reference["worst texture"].min() - 50
    # Each value within its range, but an impossible combination: the largest radius with the smallest area.
    outside.loc[outside.index[2], ["mean radius", "mean area"]] = [
        reference["mean radius"].max(), reference["mean area"].min()
    ]  # fmt: skip
    flagged = serving.predict(model_name="cancer", payload={"inputs": outside.values.tolist()}, alias="production")
    flush()

    logged = {row.request_id: row for row in PredictionLog.objects.all()}
    clean = logged[inside.request_id]
    assert clean.ood_flagged == 0 and len(clean.ood_scores) == len(reference)
    assert max(clean.ood_scores) <= 1.0
    assert max(clean.ood_scores) == 1.0  # the reference's farthest row is the scale
    odd = logged[flagged.request_id]
    assert odd.ood_flagged == 3 and all(score > 1 for score in odd.ood_scores)
    assert _flagged("cancer", "1", "flagged") - before == 3

    # The dashboard shows it per version.
    from monitoring.selectors import ood_summary

    assert ood_summary("cancer") == [
        {"version": 1, "requests": 2, "rows": len(reference) + 3, "flagged": 3, "refuse_above": None}
    ]
    client.force_login(staff)
    page = client.get(reverse("admin:monitoring_model_dashboard", args=["cancer"])).content.decode()
    section = page[page.index("Out-of-distribution flags") :]
    assert re.search(rf"<td>v1</td><td>2</td><td>{len(reference) + 3}</td>\s*<td><strong[^>]*>3</strong>", section)


def test_refusing_rows_outside_the_reference(profiled, client, settings):
    version, reference = profiled
    out = io.StringIO()
    call_command("ood_profile", "cancer", "1", "--refuse-above", "1.5", stdout=out)
    assert "refusing rows above 1.5" in out.getvalue()
    key = make_key("predict:cancer")
    row = reference.iloc[0].to_dict()
    far = {**row, "mean radius": reference["mean radius"].max() * 3}
    largest = reference.loc[reference["mean radius"].idxmax()].to_dict()
    near = {**largest, "mean radius": largest["mean radius"] * 1.01}  # flagged, under the refusal threshold
    answer = post(client, "/api/v1/models/cancer/predict", {"instances": [row, far]},
                  HTTP_AUTHORIZATION=f"Api-Key {key}")  # fmt: skip
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == "rows lie outside the version's reference data"
    assert [(e["row"], e["features"]) for e in body["errors"]] == [(1, ["mean radius"])]
    answered = post(client, "/api/v1/models/cancer/predict", {"instances": [near]},
                    HTTP_AUTHORIZATION=f"Api-Key {key}")  # fmt: skip
    assert answered.status_code == 200
    flush()
    assert 1 < PredictionLog.objects.get(request_id=answered.json()["request_id"]).ood_scores[0] <= 1.5

    call_command("ood_profile", "cancer", "1", "--flag-only", stdout=io.StringIO())
    assert serving.predict(model_name="cancer", payload={"instances": [far]}, version=1).predictions
    settings.MODELWORKS_OOD_SCORING = False
    unscored = serving.predict(model_name="cancer", payload={"instances": [far]}, version=1)
    flush()
    assert PredictionLog.objects.get(request_id=unscored.request_id).ood_scores is None
    with pytest.raises(Exception, match="at least 1"):
        call_command("ood_profile", "cancer", "1", "--refuse-above", "0.5")


def test_a_refused_request_is_not_served(profiled):
    version, reference = profiled
    call_command("ood_profile", "cancer", "1", "--refuse-above", "1", stdout=io.StringIO())
    far = reference.iloc[:1].assign(**{"mean area": reference["mean area"].max() * 10})
    with pytest.raises(OutOfDistribution) as refused:
        serving.predict(model_name="cancer", payload={"inputs": far.values.tolist()}, version=1)
    assert refused.value.status == 422 and refused.value.errors[0]["features"] == ["mean area"]


def test_a_round_of_requests_is_scored_together_as_each_would_be_alone(profiled):
    """The request processor scores the rows of one round's requests for a version in one call: every request gets
    its own rows' verdict (flags, logged scores, a refusal) exactly as scored alone."""
    import json

    from serving.front import Pending, answer_round
    from serving.hotpath import predict_steps

    version, reference = profiled
    call_command("ood_profile", "cancer", "1", "--refuse-above", "1.5", stdout=io.StringIO())
    inside = reference.iloc[:2].to_dict(orient="records")
    largest = reference.loc[reference["mean radius"].idxmax()].to_dict()
    flagged = {**largest, "mean radius": largest["mean radius"] * 1.01}  # flagged, under the refusal threshold
    refused = {**inside[1], "mean area": reference["mean area"].max() * 10}
    bodies = [[inside[0]], [flagged, inside[1]], [refused], inside]
    alone = [ood.scorer_source(version.pk).score([list(row.values()) for row in rows]) for rows in bodies]
    pending = [Pending(predict_steps("cancer", json.dumps({"instances": rows}).encode(), version=None, alias=None,
                                     request_id=None)) for rows in bodies]  # fmt: skip
    answer_round(pending, max_rows=64)
    assert [p.reply.status for p in pending] == [200, 200, 422, 200]
    assert [e["features"] for e in pending[2].reply.payload["errors"]] == [["mean area"]]
    flush()
    for i in (0, 1, 3):
        logged = PredictionLog.objects.get(request_id=pending[i].reply.payload["request_id"])
        assert logged.ood_scores == pytest.approx(alone[i].scores, abs=1e-4)
        assert logged.ood_flagged == alone[i].flagged
    assert [alone[i].flagged for i in (0, 1, 3)] == [0, 1, 0]


# ------------------------------------------------------------------------------------ the maths, against an oracle

SIGNATURE = {"inputs": [{"name": "a", "dtype": "float"}, {"name": "colour", "dtype": "category"},
                        {"name": "b", "dtype": "int"}, {"name": "c", "dtype": "float", "nullable": True}]}  # fmt: skip
_rng = np.random.default_rng(7)
_a = _rng.normal(10, 2, 200)
REFERENCE = pd.DataFrame({"a": _a, "colour": _rng.choice(["red", "blue"], 200),
                          "b": np.round(_a * 3 + _rng.normal(0, 2, 200)), "c": _rng.uniform(-1, 1, 200)})  # fmt: skip
PROFILE = ood.build_profile(SIGNATURE, REFERENCE)
SCORER = ood.ProfileScorer(PROFILE)


_NUMBERS = REFERENCE[["a", "b", "c"]].astype(float)
_MEAN, _STD = _NUMBERS.mean(), _NUMBERS.std(ddof=0)
_Z = ((_NUMBERS - _MEAN) / _STD).to_numpy()
_PRECISION = np.linalg.inv(np.cov(_Z, rowvar=False, bias=True) + ood.RIDGE * np.eye(3))
_THRESHOLD = max(mahalanobis(r, np.zeros(3), _PRECISION) for r in _Z)


def _oracle(row: list) -> tuple[float, list[str]]:
    """The score as the docs define it, computed independently (pandas statistics, scipy's distance)."""
    values = {"a": row[0], "b": row[2], "c": row[3]}
    point = np.array([0.0 if v is None else (v - _MEAN[k]) / _STD[k] for k, v in values.items()])
    score, outside = mahalanobis(point, np.zeros(3), _PRECISION) / _THRESHOLD, []
    for name, value in values.items():
        low, high = _NUMBERS[name].min(), _NUMBERS[name].max()
        if value is not None and not low <= value <= high:
            outside.append(name)
            score = max(score, 1 + max(low - value, value - high) / (high - low))
    if row[1] not in ("red", "blue"):
        outside.append("colour")
        score = max(score, ood.UNSEEN_CATEGORY_SCORE)
    return score, outside


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-20, 40), st.sampled_from(["red", "blue", "green"]), st.integers(-30, 120),
            st.none() | st.floats(-3, 3),
        ),
        min_size=1, max_size=5,
    )
)  # fmt: skip
def test_scores_match_the_oracle(rows):
    rows = [list(row) for row in rows]
    verdict = SCORER.score(rows)
    for row, score, names in zip(rows, verdict.scores, verdict.out_of_range, strict=True):
        expected, outside = _oracle(row)
        assert score == pytest.approx(expected, rel=1e-3, abs=1e-3)
        assert sorted(names) == sorted(outside)


def test_every_reference_row_scores_at_most_one():
    verdict = SCORER.score(REFERENCE[["a", "colour", "b", "c"]].astype(object).values.tolist())
    assert verdict.flagged == 0 and max(verdict.scores) == 1.0
