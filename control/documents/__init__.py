"""The HTTP side of case documents (notices, decisions, records to sign): which document a case
has, issuing one, its signatures. Nothing lives here yet. Templates, rendering, numbering,
signing and validation are the top-level ``documents`` package (no HTTP); this area will hold
only the handlers and the SQL of which case has which document."""
