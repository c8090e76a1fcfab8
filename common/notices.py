"""One-line warnings for the command line: `warning: <what>` on stderr, the counterpart of a one-line error."""
from __future__ import annotations

import sys


def warn(message: str) -> None:
    """Write one `warning: ...` line to stderr (newlines in `message` folded), for data left out but not fatal."""
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
