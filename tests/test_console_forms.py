"""The console's try-a-prediction form is generated from a signature: typed fields, ranges as bounds the server
enforces, categories as choices, inputs the feature store fills left out."""

from __future__ import annotations

from config.model_page import TryPredictionForm

SIGNATURE = {
    "inputs": [
        {"name": "age", "dtype": "int", "min": 18, "max": 99, "nullable": False},
        {"name": "income", "dtype": "float", "min": 0.0, "max": 1e6, "nullable": True},
        {"name": "plan", "dtype": "category", "allowed": ["basic", "pro"], "nullable": False},
        {"name": "trial", "dtype": "bool", "nullable": False},
        {"name": "spend_30d", "dtype": "float", "feature": "customer:spend_30d"},
    ]
}


def test_fields_follow_the_signature():
    form = TryPredictionForm(signature=SIGNATURE)
    assert list(form.fields) == ["routing_key", "in_age", "in_income", "in_plan", "in_trial"]  # the store fills spend
    html = form.as_table()
    assert 'min="18"' in html and 'max="99"' in html and 'step="any"' in html
    assert '<option value="pro">pro</option>' in html
    assert form.initial == {"in_age": 58, "in_income": 500000.0, "in_plan": "basic", "in_trial": "false"}


def test_values_outside_the_range_or_categories_are_refused_by_field():
    form = TryPredictionForm(
        {"in_age": "120", "in_income": "", "in_plan": "gold", "in_trial": "true"}, signature=SIGNATURE
    )
    assert not form.is_valid()
    assert form.errors["in_age"] == ["Ensure this value is less than or equal to 99."]
    assert "Select a valid choice" in form.errors["in_plan"][0]
    assert "in_income" not in form.errors  # nullable: may be left empty


def test_a_valid_row_is_the_signatures_instance():
    form = TryPredictionForm(
        {"in_age": "30", "in_income": "1200.5", "in_plan": "pro", "in_trial": "true", "routing_key": "u1"},
        signature=SIGNATURE,
    )
    assert form.is_valid(), form.errors
    assert form.instance() == {"age": 30, "income": 1200.5, "plan": "pro", "trial": True}
