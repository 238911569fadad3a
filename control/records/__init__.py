"""Inquiry records (询问笔录) written during a call: questions and answers, corrections, the
party's reading and signature. Nothing lives here yet; the records issue puts its store (SQL
over a connection, results out) and its thin HTTP handlers here, as ``control/cases/`` does."""
