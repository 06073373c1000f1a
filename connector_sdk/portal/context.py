"""The state one portal app shares between its requests: the host, the sync jobs and the security settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Annotated

from fastapi import Depends, Request

from connector_sdk.host import Host
from connector_sdk.portal.jobs import SyncJobs
from connector_sdk.portal.security import LoginThrottle, SessionSigner


@dataclass
class Portal:
    host: Host
    jobs: SyncJobs
    signer: SessionSigner
    admin_token: str | None = None
    loopback_only: bool = True
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()

    @property
    def auth_required(self) -> bool:
        return self.admin_token is not None


def get_portal(request: Request) -> Portal:
    """FastAPI dependency: the app's :class:`Portal`."""
    return request.app.state.portal


PortalDep = Annotated[Portal, Depends(get_portal)]
