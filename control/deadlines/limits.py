"""The rules' time limits as data (``limits.toml``), checked when loaded."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LIMITS = Path(__file__).with_name("limits.toml")
UNITS = ("working", "calendar")
WHO = ("department", "party")


class LimitsError(ValueError):
    """A limits file that cannot be used (``中文 / English``)."""


@dataclass(frozen=True)
class Limit:
    id: str
    name: str
    days: int
    unit: str  # working | calendar
    start: str  # the event the count starts from
    who: str  # department | party
    basis: str

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "days": self.days,
            "unit": self.unit,
            "from": self.start,
            "who": self.who,
            "basis": self.basis,
        }


def parse_limits(text: str, source: str) -> dict[str, Limit]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LimitsError(f"期限文件 {source} 语法错误 / limits {source}: {exc}") from None
    out: dict[str, Limit] = {}
    for i, item in enumerate(raw.get("limit", [])):
        where = f"期限文件 {source} 的 limit[{i}] / limits {source}, limit[{i}]"
        if not isinstance(item, dict):
            raise LimitsError(f"{where}: 应为表 / not a table")
        try:
            limit = Limit(
                str(item["id"]),
                str(item["name"]),
                item["days"],
                str(item["unit"]),
                str(item["from"]),
                str(item["who"]),
                str(item.get("basis", "")),
            )
        except KeyError as exc:
            raise LimitsError(f"{where}: 缺少 {exc.args[0]} / missing {exc.args[0]}") from None
        if isinstance(limit.days, bool) or not isinstance(limit.days, int) or not 1 <= limit.days:
            raise LimitsError(f"{where}: days 应为正整数 / days: a positive integer")
        if limit.unit not in UNITS:
            raise LimitsError(f"{where}: unit 应为 working 或 calendar / unit: working or calendar")
        if limit.who not in WHO:
            raise LimitsError(f"{where}: who 应为 department 或 party / who: department or party")
        if limit.id in out:
            raise LimitsError(f"{where}: {limit.id} 重复 / {limit.id} twice")
        out[limit.id] = limit
    return out


def load_limits(path: Path | None = None) -> dict[str, Limit]:
    path = path or DEFAULT_LIMITS
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LimitsError(f"无法读取期限文件 {path} / cannot read limits {path}: {exc}") from None
    return parse_limits(text, path.name)
