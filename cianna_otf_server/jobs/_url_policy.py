"""Which URLs the server may fetch an image from, and which addresses it may connect to.

A URL reference makes the server a client on the user's behalf, inside the site's network. By
default the service fetches nothing; an operator who enables URL references lists the archives
(URL prefixes or host names) it may read, and even then the server never connects to a
loopback, link-local, private, multicast or reserved address unless told so: the check is made
on the address actually connected to, at every redirect hop, so a public name that resolves
(or is re-bound) to an internal address is refused as well.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["UrlPolicy", "UrlRefused"]


class UrlRefused(Exception):
    """A URL, or the address it leads to, that the policy does not allow (the message says which rule)."""


@dataclass(frozen=True)
class UrlPolicy:
    """The rules for URL references.

    Attributes
    ----------
    enabled : bool
        Whether IMAGE may be an http(s) URL at all.
    allowed : tuple of str
        URL prefixes (``https://archive.example.org/surveys/``) or host names (``archive.example.org``;
        ``.example.org`` for every host under it) that may be fetched; empty: any public host.
    allow_private : bool
        Whether loopback, link-local and private addresses may be connected to (an on-site archive;
        the tests' local server).
    """

    enabled: bool = False
    allowed: tuple[str, ...] = ()
    allow_private: bool = False

    @classmethod
    def from_settings(cls, enabled: bool, allowed: Sequence[str] = (), allow_private: bool = False) -> UrlPolicy:
        return cls(bool(enabled), tuple(a.strip() for a in allowed if a.strip()), bool(allow_private))

    def check_url(self, url: str) -> None:
        """Refuse a URL the rules do not allow (scheme, host, allow-list); the address is checked at connect time."""
        if not self.enabled:
            raise UrlRefused("this service does not fetch images by URL; upload the file instead")
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise UrlRefused(f"not a valid URL: {exc}") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise UrlRefused(f"IMAGE URLs must be http or https, not {parts.scheme}:")
        if not host:
            raise UrlRefused("the URL has no host")
        if parts.username or parts.password:
            raise UrlRefused("URLs with a user name or password are not fetched")
        if self.allowed and not any(self._matches(rule, url, host) for rule in self.allowed):
            raise UrlRefused("this service fetches images only from its listed archives "
                             f"({', '.join(self.allowed)})")

    @staticmethod
    def _matches(rule: str, url: str, host: str) -> bool:
        if "://" in rule:  # a URL prefix: scheme and host compared without case
            scheme, _, rest = rule.partition("://")
            prefix_host, slash, path = rest.partition("/")
            wanted = f"{scheme.lower()}://{prefix_host.lower()}{slash}{path}"
            scheme_u, _, rest_u = url.partition("://")
            host_u, slash_u, path_u = rest_u.partition("/")
            return f"{scheme_u.lower()}://{host_u.lower()}{slash_u}{path_u}".startswith(wanted)
        rule = rule.lower()
        if rule.startswith("."):
            return host.endswith(rule) or host == rule[1:]
        return host == rule

    def check_address(self, address: str) -> None:
        """Refuse an IP address outside the public internet unless private addresses are allowed."""
        if self.allow_private:
            return
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or not ip.is_global):
            raise UrlRefused("the URL leads to an address this service does not connect to")

    def connect(self, address: tuple[str, int], timeout: object = None,
                source_address: tuple[str, int] | None = None) -> socket.socket:
        """`socket.create_connection` that checks every address the host resolves to before connecting.

        The connection goes to an address that was checked (not to a second lookup of the name),
        so a name re-bound between the check and the connection cannot reach an internal host.
        """
        host, port = address
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from None
        for info in infos:
            self.check_address(info[4][0])
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                if isinstance(timeout, (int, float)):  # http.client may pass its 'default' sentinel
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"cannot connect to {host}")
