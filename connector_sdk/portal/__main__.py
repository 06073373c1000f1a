"""``python -m connector_sdk.portal [--home DIR] serve ...``: the main CLI, which offers ``serve``."""

from __future__ import annotations

from connector_sdk.cli import main

if __name__ == "__main__":
    main()
