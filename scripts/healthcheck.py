"""Container HEALTHCHECK: exit 0 when GET /health/live answers 200 (stdlib only, no curl).

Connects to 127.0.0.1:$PORT (default 3000); 127.0.0.1 must be in ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("PORT", "3000")
    url = f"http://127.0.0.1:{port}/health/live"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except Exception as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
