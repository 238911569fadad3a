"""Cases and their parties: ``store`` (SQL over a connection, results and refusals), ``api``
(cases), ``parties``, ``audit`` (the HTTP handlers, thin over the store)."""
