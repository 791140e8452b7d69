"""Stand-in PDF-check worker sources: one that hangs, one that dies, one without pypdf."""

from __future__ import annotations

HANGING = """
import time
send(b"ready")
while receive() is not None:
    time.sleep(60)
"""

DYING = """
import os
send(b"ready")
while receive() is not None:
    os._exit(9)
"""

WITHOUT_PYPDF = 'send(b"pypdf is not installed")\n'
