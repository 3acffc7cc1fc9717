"""The demo's monitoring: a drift monitor on the demo classifier, with traffic that drifts, ground truth and
business events, so the admin's monitoring dashboard has something to show. Idempotent: seeded once."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.utils import timezone
from sklearn import datasets
from sklearn.model_selection import train_test_split

from monitoring.models import Monitor
from monitoring.services.events import EventItem, business_events_record
from monitoring.services.feedback import FeedbackItem, feedback_join_pending, feedback_record
from monitoring.services.monitors import monitor_create, monitor_run
from registry.models import RegisteredModel
from serving import services as serving
from serving.models import PredictionLog
from serving.prediction_log import prediction_log

DEMO_MODEL = "breast-cancer-logreg"
DEMO_MONITOR = "demo-drift"


def _traffic(frame, labels, prefix: str, scale: float) -> list[str]:
    ids, feedback = [], []
    for i, (row, label) in enumerate(zip(frame.to_dict(orient="records"), labels, strict=True)):
        shifted = {k: float(v) * scale for k, v in row.items()}
        result = serving.predict(
            model_name=DEMO_MODEL, payload={"instances": [shifted]}, alias="production", routing_key=f"{prefix}-{i}"
        )
        ids.append(result.request_id)
        feedback.append(FeedbackItem(request_id=result.request_id, actual=int(label)))
    prediction_log().flush()
    feedback_record(items=feedback)
    feedback_join_pending()  # the seeded dashboard shows joined feedback at once, not after beat's next join
    return ids


def seed_monitoring_demo(write=print) -> None:
    model = RegisteredModel.objects.filter(name=DEMO_MODEL).first()
    if model is None or not model.aliases.filter(name="production").exists():
        write(f"{DEMO_MODEL}: no production version, no monitoring demo")
        return
    if Monitor.objects.filter(model=model, name=DEMO_MONITOR).exists():
        write(f"{DEMO_MODEL}: monitoring demo already seeded")
        return
    monitor = monitor_create(
        model=model, name=DEMO_MONITOR, window_hours=24, correction="bh", min_wasserstein=0.1,
        quality_thresholds={"accuracy": 0.9}, every_minutes=60,
    )  # fmt: skip
    X, y = datasets.load_breast_cancer(return_X_y=True, as_frame=True)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.25, random_state=42)
    first = _traffic(X_test.iloc[:100], y_test.iloc[:100], "demo-user", 1.0)
    monitor_run(monitor=monitor)
    # That day ends; the next one's traffic comes from a recalibrated instrument (every feature reads 40% high).
    PredictionLog.objects.filter(request_id__in=first).update(created_at=timezone.now() - timedelta(days=2))
    _traffic(X_test.iloc[40:140], y_test.iloc[40:140], "demo-user", 1.4)
    rng = np.random.default_rng(0)
    events = [
        EventItem(key=f"demo-user-{i}", name="follow_up_booked", value=float(rng.integers(1, 4)), event_id=f"demo-{i}")
        for i in range(0, 100, 3)
    ]
    business_events_record(items=events)
    report = monitor_run(monitor=monitor)
    # seed_demo is a one-shot command: stop the log's background writer as a clean shutdown does, so its database
    # connection does not outlive the command.
    prediction_log().close()
    verdict = "dataset drift" if report.dataset_drift else "no dataset drift"
    write(f"{DEMO_MODEL}: monitor {DEMO_MONITOR!r} seeded, latest report: {verdict} ({report.drift_share:.0%})")
