"""The HTTP side of case documents: generating a document from the case, its number, its PDF's
revisions, officer and seal signatures, the party's signing after a face match, refusals,
revocation, state and download. Templates, rendering, numbering, signing and validation are the
top-level ``documents`` package (no HTTP); ``desk.py`` holds what a worker keeps of it (the
templates, the CA, the number store, the files), ``store.py`` the SQL, ``api.py`` the handlers."""
