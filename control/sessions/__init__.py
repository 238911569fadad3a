"""A case's calls: sessions (``api``, SQL in ``store``), call control (``calls``), invitations
(``invitations``), signalling tokens (``tokens``), the signalling WebSocket (``signalling``)
and evidence shown into the call (``display``)."""
