"""Every Celery task the platform registers is bounded: a soft time limit (the task can clean up), a hard one above
it (the worker kills it), and an `expires` unless a late run still matters (issue 20, item 4)."""

from __future__ import annotations

from config.celery import app

# Tasks a late run of is still owed, and why; every other task must expire.
LATE_RUN_MATTERS = {
    "registry.deliver_webhook": "a delivery is owed; its retries wait out a countdown, the attempt count bounds it",
    "monitoring.deliver_webhook": "an alert is owed; its retries wait out a countdown, the attempt count bounds it",
    "features.run_materialization_job": "someone asked for it; its job row says queued until it runs",
    "serving.batch_plan": "someone started a batch job; its row says pending until this runs",
    "serving.batch_work": "a batch job's chunk runner: a long batch queue is normal, and its chunks wait in Postgres",
    "serving.deliver_prediction_callback": "an asynchronous prediction's answer is owed; retries as webhooks do",
    "registry.convert_onnx": "someone asked for it; its version says the conversion is pending until it runs",
}


def _platform_tasks() -> dict:
    app.loader.import_default_modules()  # what a worker does at start: every app's tasks.py (autodiscovery)
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def test_every_task_has_a_soft_and_a_hard_time_limit_and_expires_unless_a_late_run_matters():
    tasks = _platform_tasks()
    assert len(tasks) >= 16, sorted(tasks)  # the walk found the apps' tasks, not just Celery's own
    unbounded = {}
    for name, task in sorted(tasks.items()):
        soft, hard = task.soft_time_limit, task.time_limit
        if not soft or not hard or soft >= hard:
            unbounded[name] = f"soft_time_limit={soft} time_limit={hard}: need 0 < soft < hard"
        elif name not in LATE_RUN_MATTERS and not task.expires:
            unbounded[name] = "no expires, and not listed as a task whose late run still matters"
        elif name in LATE_RUN_MATTERS and task.expires:
            unbounded[name] = f"listed as owed late, yet expires after {task.expires} s"
    assert unbounded == {}
    assert set(LATE_RUN_MATTERS) <= set(tasks)  # no stale entries


def test_every_beat_entry_expires_no_later_than_its_task():
    """Beat's own `expires` wins for a scheduled run; the task's covers `.delay()` from anywhere else (Celery merges
    it into the message's options), so the two must not disagree about when a run is useless."""
    tasks = _platform_tasks()
    for entry in app.conf.beat_schedule.values():
        task = tasks[entry["task"]]
        beat_expires = entry.get("options", {}).get("expires")
        assert beat_expires and task.expires and beat_expires <= task.expires, entry["task"]
    assert tasks["rollouts.rollout_tick"]._get_exec_options()["expires"] == 30
