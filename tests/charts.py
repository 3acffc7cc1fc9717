"""Reading the console's charts out of a page: each is a JSON block (config/charts.py) that Chart.js draws."""

from __future__ import annotations

import json
import re

_BLOCK = re.compile(r'<script id="mw-chart-\d+" type="application/json">(.*?)</script>', re.S)


def chart_specs(html: str) -> list[dict]:
    return [json.loads(block) for block in _BLOCK.findall(html)]
