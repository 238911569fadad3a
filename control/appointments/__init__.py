"""Appointments: officers' slots and parties' bookings of them: ``store`` (SQL over a
connection, results and refusals) and ``api`` (the HTTP handlers, thin over the store)."""
