"""The result files every benchmark writes: ``<stem>.md`` (the table, with its command) and
``<stem>.json`` (standard JSON: no NaN or Infinity), each written atomically."""

from __future__ import annotations

from pathlib import Path

from medrecon.io.atomic import write_text_atomic
from medrecon.io.jsonio import json_text


def write_results(folder: Path, stem: str, markdown: str, doc: dict) -> None:
    """Write ``folder/stem.md`` and ``folder/stem.json`` (replacing earlier results)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"{stem}.md", markdown, overwrite=True)
    write_text_atomic(folder / f"{stem}.json", json_text(doc, indent=1), overwrite=True)
