"""The calendar and the limits a server works with, and the dates it counts in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from .calendar import WorkCalendar, load_calendar
from .limits import Limit, load_limits

# China keeps one time zone and no daylight saving: the dates limits count are Beijing dates
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")


def china_date(iso: str) -> date:
    """The Beijing date of a stored UTC timestamp (``now_iso``)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(CHINA).date()


def china_today() -> date:
    return datetime.now(CHINA).date()


def china_time(iso: str) -> str:
    """A stored timestamp as printed on documents: ``2026年12月1日 10时30分``."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(CHINA)
    return f"{at.year}年{at.month}月{at.day}日 {at.hour:02d}时{at.minute:02d}分{at.second:02d}秒"


def cn_date(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


@dataclass(frozen=True)
class Rules:
    calendar: WorkCalendar
    limits: dict[str, Limit]
    warn_days: int = 1

    def due(self, limit_id: str, start: date) -> date:
        limit = self.limits[limit_id]
        return self.calendar.add(start, limit.days, limit.unit)

    def skipped(self, start: date, end: date) -> str:
        """The rest days a count from ``start`` to ``end`` skipped, for a refusal's text:
        ``国庆节 10月1日至10月7日、周末 10月11日``."""
        groups: list[tuple[str, date, date]] = []
        for day in self.calendar.rest_days_between(start, end):
            if groups and groups[-1][0] == day.name and (day.day - groups[-1][2]).days == 1:
                groups[-1] = (groups[-1][0], groups[-1][1], day.day)
            else:
                groups.append((day.name, day.day, day.day))
        return "、".join(
            f"{name} {a.month}月{a.day}日" + (f"至{b.month}月{b.day}日" if b != a else "")
            for name, a, b in groups
        )


def load_rules(calendar: str = "", limits: str = "", warn_days: int = 1) -> Rules:
    """Both files read and checked (blocks: call it in a thread from the event loop)."""
    return Rules(
        load_calendar(Path(calendar) if calendar else None),
        load_limits(Path(limits) if limits else None),
        warn_days,
    )
