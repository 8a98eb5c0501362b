"""Template filters of the audit log page."""

import json

from django import template

register = template.Library()


@register.filter
def as_json(value) -> str:
    """A stored `before`/`after` snapshot as indented JSON (`"team": null`, `true`), not the
    Python repr of a dict (`'team': None`). Escaped by the template like any text."""
    return json.dumps(value, indent=2, ensure_ascii=False)
