"""Recordings as the control plane serves them: listing, verification, export, retention
(``api``) and exports kept encrypted at rest (``sealed_exports``). Recording itself and the
custody log are the top-level ``recorder`` package."""
