"""Deadlines by working days: a calendar of China's working days (weekends, public holidays and
the adjusted working days of the State Council's yearly notice) and the rules' time limits,
both as data a brigade can update. These two are a library (no HTTP, no database):

* :mod:`.calendar`: :class:`WorkCalendar`, loaded from a line-per-date text file
  (``calendar-cn.txt`` ships 2026 and 2027) and checked at load, a bad line named;
* :mod:`.limits`: the rules' limits (``limits.toml``): how many days, working or calendar,
  counted from which event, whose duty, and the article that sets it.

Over HTTP and the database: :mod:`.api` (each case's deadlines, what is overdue) and
:mod:`.investigation` (the end of an accident's investigation, which the ordinary
determination counts from).

Import from the modules (``control.deadlines.calendar``...). See docs/delivery.md.
"""
