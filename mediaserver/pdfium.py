"""PDFium may not be entered from two threads at once (pypdfium2 adds no lock of its own).

Uploads are checked in worker threads and evidence display renders pages in its player's thread,
so every call into pypdfium2 anywhere in the process holds this one lock.
"""

from __future__ import annotations

import threading

LOCK = threading.Lock()
