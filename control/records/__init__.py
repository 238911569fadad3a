"""Inquiry records (询问笔录) written during a call: questions and answers with their time and
recording offset, the header from the case, review and corrections the party confirms, every
version hashed into the custody log. ``store.py`` holds the SQL (results or a ``Refusal``),
``api.py`` the thin handlers and their OpenAPI description."""
