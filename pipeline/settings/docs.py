"""The configuration tables of docs/OPERATIONS.md, generated from the settings' definitions.

A table sits between ``<!-- settings: GROUPS -->`` and ``<!-- end settings -->``, GROUPS being
``all`` or group names separated by commas (``bigquery``). :func:`rendered` returns the document
with every such table regenerated; a test compares it with the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.settings import all_specs
from pipeline.settings.fields import Spec

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"
_BLOCK = re.compile(r"(<!-- settings: ([a-z_, ]+) -->\n)(.*?)(<!-- end settings -->)", re.S)


def _row(spec: Spec) -> str:
    default = spec.default_text()
    return f"| `{spec.variable}` | {f'`{default}`' if default else 'unset'} | {spec.description} |"


def table(groups: str) -> str:
    """The markdown table of ``groups`` (``all`` or names separated by commas)."""
    wanted = {g.strip() for g in groups.split(",")}
    rows = [_row(spec) for group, spec in all_specs() if "all" in wanted or group in wanted]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows]) + "\n"


def rendered(document: str) -> str:
    """``document`` with every generated table replaced by the current definitions."""
    return _BLOCK.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), document)


def write(path: Path = OPERATIONS) -> bool:
    """Regenerate the tables in ``path``; whether anything changed."""
    before = path.read_text()
    after = rendered(before)
    if after != before:
        path.write_text(after)
    return after != before
