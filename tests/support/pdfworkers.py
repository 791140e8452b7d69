"""Stand-in PDF-check workers (their source): one that hangs, one that dies, one without pypdf."""

from __future__ import annotations

_SERVE = """
import struct, sys, time, os
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
stdout.write(b"ready\\n"); stdout.flush()
while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    stdin.read(struct.unpack(">I", head)[0])
    {action}
"""

HANGING = _SERVE.format(action="time.sleep(60)")
DYING = _SERVE.format(action="os._exit(9)")
WITHOUT_PYPDF = 'import sys; sys.stdout.write(\'{"ok": null, "why": "pypdf is not installed"}\\n\')'
