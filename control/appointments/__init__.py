"""Appointments: officers' slots and parties' bookings of them (``api``)."""
