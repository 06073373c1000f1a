"""The admin portal: a browser UI and a REST API over the host, driven by the connectors' manifests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """See :func:`connector_sdk.portal.app.create_app` (imported lazily: FastAPI is an optional dependency)."""
    from connector_sdk.portal.app import create_app as create

    return create(*args, **kwargs)


__all__ = ["create_app"]
