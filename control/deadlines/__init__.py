"""Deadlines by working days: a calendar of China's working days (weekends, public holidays and
the adjusted working days of the State Council's yearly notice) and the rules' time limits,
both as data a brigade can update. A library: nothing here knows HTTP or the database.

* :mod:`.calendar`: :class:`WorkCalendar`, loaded from a line-per-date text file
  (``calendar-cn.txt`` ships 2026 and 2027) and checked at load, a bad line named;
* :mod:`.limits`: the rules' limits (``limits.toml``): how many days, working or calendar,
  counted from which event, whose duty, and the article that sets it.

Import from the modules (``control.deadlines.calendar``...). See docs/delivery.md.
"""
