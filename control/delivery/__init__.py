"""Electronic delivery (电子送达) of documents to parties, after their signed consent
(送达地址确认书): the notice through a channel (``channels.py``), opening, acknowledgement and the
sealed receipt (``receipts.py``), the fallback when it fails; the review (复核) a delivery opens
(``reviews.py``) and the penalty procedure's order (``penalty.py``). See docs/delivery.md."""
