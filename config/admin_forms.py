"""Form fields for the console: lists, mappings, vocabularies and durations typed the way people write them.

The stored values are JSON (lists, objects, seconds); these fields only translate between that and text a person
can read and type — one rule per line, `key = value` lines, ticked scopes, "30d". They check the shape; the meaning
(does a rule parse, is a scope known) is checked by the same services the API calls, whose messages the admin shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.utils.html import format_html, format_html_join

from config.durations import HELP as DURATION_HELP
from config.durations import format_duration, parse_duration


class LinesField(forms.CharField):
    """A list of strings, one per line (blank lines ignored)."""

    def __init__(self, *, rows: int = 4, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(widget=forms.Textarea(attrs={"rows": rows, "cols": 60}), strip=False, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list):
            return [str(item) for item in value]
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(initial or []) != self.to_python(data)


class KeyValueField(forms.CharField):
    """A mapping of names to text, one `name = value` per line."""

    def __init__(self, *, rows: int = 4, numbers: bool = False, **kwargs: Any) -> None:
        self.numbers = numbers
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "one per line: name = number" if numbers else "one per line: name = value")
        super().__init__(widget=forms.Textarea(attrs={"rows": rows, "cols": 60}), strip=False, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return "\n".join(f"{key} = {item}" for key, item in value.items())
        return value

    def to_python(self, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return dict(value)
        mapping: dict[str, str] = {}
        problems = []
        for number, line in enumerate(str(value or "").splitlines(), start=1):
            if not line.strip():
                continue
            key, equals, item = line.partition("=")
            if not equals or not key.strip():
                problems.append(f"line {number} ({line.strip()!r}) is not name = value")
                continue
            if key.strip() in mapping:
                problems.append(f"line {number}: {key.strip()!r} is given twice")
                continue
            if self.numbers:
                try:
                    mapping[key.strip()] = float(item)
                except ValueError:
                    problems.append(f"line {number}: {key.strip()} = {item.strip()!r} is not a number")
                continue
            mapping[key.strip()] = item.strip()
        if problems:
            raise forms.ValidationError(problems)
        return mapping

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial or {}) != self.to_python(data)
        except forms.ValidationError:
            return True


class DurationField(forms.CharField):
    """Seconds, typed and shown as "30d", "12h", "90m" or plain seconds."""

    def __init__(self, *, min_seconds: int = 0, **kwargs: Any) -> None:
        self.min_seconds = min_seconds
        kwargs.setdefault("help_text", DURATION_HELP)
        super().__init__(widget=forms.TextInput(attrs={"size": 8, "placeholder": "30d"}), **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return format_duration(value)
        return value

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        try:
            seconds = parse_duration(str(value) if not isinstance(value, int) else value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        if seconds < self.min_seconds:
            raise forms.ValidationError(f"must be at least {format_duration(self.min_seconds)}")
        return seconds

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(initial) != self.to_python(data)
        except forms.ValidationError:
            return True


class VocabularyField(forms.MultipleChoiceField):
    """Terms ticked from a vocabulary computed when the form is shown (e.g. scopes naming today's models)."""

    def __init__(self, *, vocabulary: Callable[[], Iterable[tuple[str, str]]], **kwargs: Any) -> None:
        super().__init__(choices=vocabulary, widget=forms.CheckboxSelectMultiple, **kwargs)


class NumbersByNameWidget(forms.MultiWidget):
    """One labelled number box per name, in a row."""

    def __init__(self, names: list[str], placeholders: dict[str, Any] | None = None) -> None:
        self.names = names
        placeholders = placeholders or {}
        super().__init__([
            forms.NumberInput(attrs={"step": "any", "style": "width:6em", "placeholder": placeholders.get(name, "")})
            for name in names
        ])  # fmt: skip

    def decompress(self, value: Any) -> list[Any]:
        value = value if isinstance(value, dict) else {}
        return [value.get(name) for name in self.names]

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer: Any = None) -> str:
        context = self.get_context(name, value, attrs)
        cells = format_html_join(
            "",
            '<label class="numbers-by-name" style="margin-right:1em">{} {}</label>',
            (
                (label, forms.NumberInput(sub["attrs"]).render(sub["name"], sub["value"], sub["attrs"]))
                for label, sub in zip(self.names, context["widget"]["subwidgets"], strict=True)
            ),
        )
        return format_html('<div class="numbers-by-name">{}</div>', cells)


class NumbersByNameField(forms.MultiValueField):
    """A mapping of some fixed names (e.g. quality metrics) to numbers; names left empty are left out."""

    def __init__(self, names: list[str], *, placeholders: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.names = names
        kwargs.setdefault("required", False)
        fields = [forms.FloatField(required=False, label=name) for name in names]
        widget = NumbersByNameWidget(names, placeholders)
        super().__init__(fields, widget=widget, require_all_fields=False, **kwargs)

    def compress(self, data_list: list[Any]) -> dict[str, float]:
        return {name: value for name, value in zip(self.names, data_list or [], strict=False) if value is not None}


def add_service_errors(form: forms.BaseForm, exc: Any) -> None:
    """A service's ValidationError shown on the form: each problem under its field, or at the top when the field is
    not on the form (the message then names it)."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, problems in exc.message_dict.items():
        if field in form.fields:
            form.add_error(field, problems)
        else:
            form.add_error(None, [f"{field}: {problem}" for problem in problems])


class FeatureListField(forms.CharField):
    """A feature view's features, one per line: `name: dtype`, optionally followed by `# description`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "one per line: name: dtype (float, int, bool or string), then # description "
                                       "if you like; e.g. mean_radius: float  # cell nucleus radius")  # fmt: skip
        super().__init__(widget=forms.Textarea(attrs={"rows": 6, "cols": 60}), strip=False, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            lines = []
            for feature in value:
                if not isinstance(feature, dict):
                    return value
                line = f"{feature.get('name')}: {feature.get('dtype', 'float')}"
                lines.append(f"{line}  # {feature['description']}" if feature.get("description") else line)
            return "\n".join(lines)
        return value

    def to_python(self, value: Any) -> list[dict[str, str]]:
        if isinstance(value, list):
            return value
        features, problems = [], []
        for number, line in enumerate(str(value or "").splitlines(), start=1):
            text, _, description = line.partition("#")
            if not text.strip():
                continue
            name, colon, dtype = text.partition(":")
            if not colon or not name.strip() or not dtype.strip():
                problems.append(f"line {number} ({line.strip()!r}) is not name: dtype")
                continue
            feature = {"name": name.strip(), "dtype": dtype.strip()}
            if description.strip():
                feature["description"] = description.strip()
            features.append(feature)
        if problems:
            raise forms.ValidationError(problems)
        return features

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.prepare_value(initial) != self.prepare_value(self.to_python(data))
        except forms.ValidationError:
            return True
