"""Traffic-safety education sessions (cases of kind ``education``): many drivers watching one
officer, with attendance proved by face (docs/education.md).

``roster.py`` and ``sheets.py`` (companies, managers and drivers; CSV/XLSX import), ``viewers.py``
(an education case's course, viewers and links), ``attendance.py`` (the rules, pure),
``desk.py`` (the rules fed from rooms and the verifier, kept in SQLite), ``records.py`` (sealed
attendance records and certificates), ``api.py`` (the handlers)."""
