"""`manage.py experiment ...` as an operator runs it."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.models import Experiment
from registry.models import ModelAlias

pytestmark = pytest.mark.django_db


def test_the_whole_life_of_an_experiment_from_the_terminal(challenger, capsys):
    call_command(
        "experiment", "create", "cli-test", "--model", "cancer", "--arm", "control=1:80", "--arm", "forest=2:20",
        "--metric", "conversion:purchase", "--guardrail", "quality", "--min-sample", "500", "--start",
    )  # fmt: skip
    assert "cli-test: running on cancer's production traffic" in capsys.readouterr().out
    call_command("experiment", "weights", "cli-test", "control=50", "forest=50")
    assert "forest: weight 50, buckets [[5000, 10000]]" in capsys.readouterr().out  # grew into the freed range
    call_command("experiment", "results", "cli-test")
    out = capsys.readouterr().out
    assert "sample ratio ok" in out and "conversion to 'purchase'" in out and "accuracy (feedback)" in out
    assert "hold only when read once at the planned sample size" in out
    assert "Results since the last weight change" in out  # the weights changed while it ran
    call_command("experiment", "results", "cli-test", "--period", "all")
    assert "MIXED ALLOCATIONS: These results mix periods with different allocations" in capsys.readouterr().out
    call_command("experiment", "results", "cli-test", "--json")
    assert json.loads(capsys.readouterr().out)["sample_size"]["planned"] == 500
    call_command("experiment", "list")
    assert "cli-test\tcancer\trunning\tcontrol=v1:50, forest=v2:50" in capsys.readouterr().out
    call_command("experiment", "conclude", "cli-test", "--winner", "forest")
    assert "cli-test: concluded, winner forest; cancer@production -> v2" in capsys.readouterr().out
    assert ModelAlias.objects.get(name="production").version.version == 2


def test_mistakes_exit_non_zero_with_one_readable_line(challenger):
    with pytest.raises(CommandError, match="^no model named 'nope'$"):
        call_command("experiment", "create", "x", "--model", "nope", "--arm", "a=1:1", "--metric", "quality")
    with pytest.raises(CommandError, match="^a=1: expected NAME=VERSION:WEIGHT"):
        call_command("experiment", "create", "x", "--model", "cancer", "--arm", "a=1", "--metric", "quality")
    with pytest.raises(CommandError, match="^arms: give at least two arms: the first is the control$"):
        call_command("experiment", "create", "x", "--model", "cancer", "--arm", "a=1:1", "--metric", "quality")
    with pytest.raises(CommandError, match="^no experiment named 'ghost'$"):
        call_command("experiment", "start", "ghost")
    assert not Experiment.objects.exists()
