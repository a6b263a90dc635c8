"""Whether a host or URL is loopback: the one test for "this never leaves the machine" (model
servers autoresearch starts, API keys it may skip for local servers)."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback(url: str | None) -> bool:
    """Whether `url` points at this machine's loopback interface."""
    return bool(url) and is_loopback_host(urlparse(url).hostname)
