"""Reading the JSON-lines metric logs that :class:`mosaicbert.training.callbacks.JSONLinesLogger` writes."""

from __future__ import annotations

import json


def read_jsonl(path: str) -> list[dict]:
    """The rows of a :class:`JSONLinesLogger` file, skipping a line cut short by a crash."""
    rows = []
    with open(path, errors="replace") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
