"""China's working days as data: weekends are rest days, public holidays are rest days, and the
adjusted working days (调休上班) the State Council's notice names are working days though they
fall on a weekend.

The file is one date a line (``#`` starts a comment)::

    years 2026 2027
    2026-01-01  holiday  元旦        confirmed
    2026-01-04  workday  元旦调休上班  confirmed

``years`` says which years the file covers: a date outside them is refused rather than guessed
(a deadline that runs into an uncovered year needs the brigade to add that year first). The
last word says where the line comes from: ``confirmed`` (the notice published) or ``expected``
(the statutory holiday on its expected date, the notice not yet out). Every line is checked at
load; the first bad one stops the load with its file and line number.

Counting (146号令 and 157号令: 期间开始之日不计算在内): a limit of N working days ends on the
N-th working day after the start; a limit of N calendar days ends N days after the start, moved
to the next working day when that day is a rest day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

DEFAULT_CALENDAR = Path(__file__).with_name("calendar-cn.txt")
KINDS = ("holiday", "workday")
STATUSES = ("confirmed", "expected")
_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s+(\S+)\s+(\S+)\s+(\S+)$")
_MAX_SPAN = 400  # days a computation may walk; far more than any limit here


class CalendarError(ValueError):
    """A calendar file that cannot be used, or a date it does not cover (``中文 / English``)."""


@dataclass(frozen=True)
class Day:
    day: date
    kind: str  # holiday | workday
    name: str
    status: str  # confirmed | expected


@dataclass(frozen=True)
class WorkCalendar:
    years: frozenset[int]
    days: dict[date, Day]
    source: str

    def _covered(self, day: date) -> None:
        if day.year not in self.years:
            covered = "、".join(str(y) for y in sorted(self.years))
            raise CalendarError(
                f"工作日历 {self.source} 不含 {day.year} 年（含 {covered}），"
                "请先补充该年的放假安排 / "
                f"the working-day calendar {self.source} does not cover {day.year}: add that "
                "year's holidays first"
            )

    def is_working_day(self, day: date) -> bool:
        self._covered(day)
        entry = self.days.get(day)
        if entry is not None:
            return entry.kind == "workday"
        return day.weekday() < 5

    def add_working_days(self, start: date, n: int) -> date:
        """The ``n``-th working day after ``start`` (the start day itself is not counted)."""
        if n < 1:
            raise ValueError("n >= 1")
        day, counted = start, 0
        for _ in range(_MAX_SPAN):
            day += timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
                if counted == n:
                    return day
        raise CalendarError(f"无法计算期限 / no end found within {_MAX_SPAN} days")

    def add_calendar_days(self, start: date, n: int) -> date:
        """``n`` days after ``start``; a period ending on a rest day ends on the next working
        day."""
        day = start + timedelta(days=n)
        for _ in range(_MAX_SPAN):
            if self.is_working_day(day):
                return day
            day += timedelta(days=1)
        raise CalendarError(f"无法计算期限 / no end found within {_MAX_SPAN} days")

    def add(self, start: date, n: int, unit: str) -> date:
        return (
            self.add_working_days(start, n)
            if unit == "working"
            else self.add_calendar_days(start, n)
        )

    def rest_days_between(self, start: date, end: date) -> list[Day]:
        """The rest days after ``start`` up to ``end`` that a count skipped: holidays by name,
        weekends as ``周末``."""
        out: list[Day] = []
        day = start
        while day < end:
            day += timedelta(days=1)
            if not self.is_working_day(day):
                entry = self.days.get(day)
                out.append(entry if entry is not None else Day(day, "weekend", "周末", "confirmed"))
        return out


def parse_calendar(text: str, source: str) -> WorkCalendar:
    years: set[int] = set()
    days: dict[date, Day] = {}

    def fail(number: int, zh: str, en: str) -> CalendarError:
        return CalendarError(
            f"工作日历 {source} 第 {number} 行：{zh} / calendar {source}, line {number}: {en}"
        )

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("years"):
            words = line.split()[1:]
            if not words or not all(re.fullmatch(r"20\d\d", w) for w in words):
                raise fail(number, "years 后应为年份（如 2026 2027）", "years: four-digit years")
            years.update(int(w) for w in words)
            continue
        match = _LINE.match(line)
        if match is None:
            raise fail(
                number,
                "应为“日期 种类 名称 来源”四项",
                "expected four fields: date kind name status",
            )
        text_date, kind, name, status = match.groups()
        try:
            day = date.fromisoformat(text_date)
        except ValueError:
            raise fail(number, f"日期 {text_date} 无效", f"{text_date} is not a date") from None
        if kind not in KINDS:
            raise fail(
                number,
                f"种类 {kind} 无效（可用 holiday、workday）",
                f"kind {kind!r} is not holiday or workday",
            )
        if status not in STATUSES:
            raise fail(
                number,
                f"来源 {status} 无效（可用 confirmed、expected）",
                f"status {status!r} is not confirmed or expected",
            )
        if not years:
            raise fail(number, "years 行须在日期之前", "the years line comes before any date")
        if day.year not in years:
            raise fail(
                number, f"{day.year} 年不在 years 行中", f"{day.year} is not in the years line"
            )
        if day in days:
            raise fail(number, f"{text_date} 重复", f"{text_date} is listed twice")
        if kind == "workday" and day.weekday() < 5:
            raise fail(
                number,
                f"{text_date} 是工作日，无需列为调休上班",
                f"{text_date} is a weekday: only a weekend can be an adjusted working day",
            )
        days[day] = Day(day, kind, name, status)
    if not years:
        raise CalendarError(f"工作日历 {source} 缺少 years 行 / calendar {source}: no years line")
    return WorkCalendar(frozenset(years), days, source)


def load_calendar(path: Path | None = None) -> WorkCalendar:
    """Read and check a calendar file (the shipped one by default). Blocks: call it in a
    thread from the event loop."""
    path = path or DEFAULT_CALENDAR
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalendarError(
            f"无法读取工作日历 {path} / cannot read calendar {path}: {exc}"
        ) from None
    return parse_calendar(text, path.name)
