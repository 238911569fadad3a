"""Electronic delivery (电子送达) of documents to parties: consent to it (given when an
invitation is redeemed: ``control/sessions/invitations.py``), notifications, receipts and the
deadlines they start. Nothing lives here yet; the delivery issue puts it here."""
