"""What Postgres can store: text and jsonb hold no NUL character (\\u0000), and only valid UTF-8 (no lone
surrogates, which JSON's \\ud800 escapes produce). Services check client-written values with this before writing, so
such input answers 400 naming the field instead of failing in the database driver with a 500."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (not valid UTF-8)"
    return None


def unstorable(value: Any) -> str | None:
    """Where in `value` (a JSON-like structure) a string Postgres cannot store sits, and why; None when all is fine.
    Iterative, so any nesting depth the JSON parser produced is walked without recursion."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = _bad_text(item)
            if problem:
                return f"{path or 'the value'} holds {problem}"
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _bad_text(key) if isinstance(key, str) else None
                if problem:
                    # ascii(): the answer must not carry the character either (it cannot be encoded as UTF-8)
                    return f"the key {ascii(key)}{' in ' + path if path else ''} holds {problem}"
                stack.append((f"{path}[{ascii(key)}]", child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def check_storable(**fields: Any) -> None:
    """Raise ValidationError naming every field whose value cannot be stored (field=value, ...)."""
    errors = {}
    for field, value in fields.items():
        problem = unstorable(value)
        if problem:
            errors[field] = [f"cannot be stored: {problem}"]
    if errors:
        raise ValidationError(errors)
