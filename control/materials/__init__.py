"""Case materials: the typed, encrypted file store (``store``) and its HTTP API (``api``)."""
