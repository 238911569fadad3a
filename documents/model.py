"""The plain data a document is made from, and the check of required fields.

A document is generated from one JSON-shaped mapping (what ``control/`` reads from its tables or
what ``remotecase documents render`` reads from a file). Its top-level keys:

``department``  {name, brigade, seal_name?}: who issues; ``brigade`` keys the numbering
``case``        {id, kind, time, place, weather?, road?, start_time?, end_time?, inquiry_no?, ...}
``parties``     list of {id, name, role?, sex?, birth_date?, id_type?, id_number?, address?,
                phone?, licence?, responsibility?, vehicle: {type, plate, insurer?, policy?}?}
``officers``    list of {id, name, badge?, role?}: questioner first, then recorder
``findings``    {collision?, facts, evidence?, analysis?, cause?, ...}
``turns``       list of {q, a, time, offset}: question/answer turns of an inquiry
``penalty``     {facts, legal_basis, penalty, amount?, ...}; ``mediation`` {...}; ``delivery``
                {...}; ``talk`` {...}: the parts of the kinds that need them

Paths in templates are dotted (``case.place``) and ``[]`` walks every element of a list
(``parties[].responsibility``): each element must have the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import MissingFields

Data = Mapping[str, Any]


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() != ""
    if isinstance(value, list | dict):
        return len(value) > 0
    return True


def resolve(data: Any, path: str) -> Any:
    """The value at a dotted path without ``[]``, or None."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is None:
            return None
    return node


def missing_at(data: Any, path: str) -> list[str]:
    """The concrete paths under ``path`` (``[]`` expanded) that are absent or empty."""
    if "[]" not in path:
        return [] if _present(resolve(data, path)) else [path]
    head, _, tail = path.partition("[]")
    head = head.rstrip(".")
    items = resolve(data, head)
    if not isinstance(items, list) or not items:
        return [head]
    tail = tail.lstrip(".")
    out: list[str] = []
    for i, item in enumerate(items):
        if tail:
            out.extend(f"{head}[{i}].{p}" for p in missing_at(item, tail))
        elif not _present(item):
            out.append(f"{head}[{i}]")
    return out


def check_fields(title: str, data: Data, fields: list[tuple[str, str]]) -> None:
    """Raise :class:`MissingFields` naming every required field (path, label) that is missing."""
    missing: list[tuple[str, str]] = []
    for path, label in fields:
        for concrete in missing_at(data, path):
            shown = label
            if "[" in concrete:
                # name which element: 当事人[2] is easier to act on than an index path alone
                idx = concrete[concrete.index("[") + 1 : concrete.index("]")]
                shown = f"第{int(idx) + 1}项的{label}"
            missing.append((concrete, shown))
    if missing:
        raise MissingFields(title, missing)
