"""Mediation of accident compensation between parties (a session whose purpose is
``mediation``): the proposals, the agreement and its signatures. Nothing lives here yet; the
mediation issue puts it here."""
