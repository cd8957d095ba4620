"""The proxy's road to the upstream: one fresh ``http.client`` connection per recorded call.

* **Forward proxies**: ``HTTPS_PROXY`` / ``HTTP_PROXY`` (either case) are honoured, and ``NO_PROXY``
  exempts hosts, with the standard library's reading of them (``urllib.request.getproxies_environment``,
  ``proxy_bypass_environment``). An https upstream goes through a ``CONNECT`` tunnel (TLS end to end, the
  forward proxy sees only the host name); an http one is sent to the forward proxy in absolute form. A
  loopback upstream (the bundled fake) never goes through one: a forward proxy cannot reach our loopback.
  ``user:password@`` in the proxy URL becomes ``Proxy-Authorization`` on the proxy hop only; it is never
  part of what vcrpy records.
* **Certificates** are checked against the default CA store, which ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
  replace (OpenSSL reads them); ``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` are honoured too, as
  requests and httpx users expect. A failed verification is reported by ``tls_advice``.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

from dspy_bridge._exceptions import UsageError

__all__ = ["ForwardProxy", "Upstream", "tls_advice"]

_LOOPBACK = ("127.", "localhost", "::1")
_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # used when SSL_CERT_FILE is not set


@dataclass(frozen=True, slots=True)
class ForwardProxy:
    """A forward proxy from ``HTTP(S)_PROXY``; ``authorization`` is its ``Proxy-Authorization`` value."""

    host: str
    port: int
    authorization: str | None = None

    def __str__(self) -> str:  # for messages: never the credentials
        return f"http://{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str, variable: str) -> ForwardProxy:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "") or not parts.hostname:
            raise UsageError(
                f"{variable}={parts.scheme}://{parts.hostname or ''}… is not an http:// proxy URL such as "
                "http://proxy.example:3128 (the cassette proxy speaks plain HTTP to a forward proxy, and CONNECT "
                "for https upstreams)"
            )
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        return cls(parts.hostname, parts.port or 80, authorization)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where recordings come from: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """``https://generativelanguage.googleapis.com``; a trailing ``/v1beta`` is tolerated."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"upstream must be an http(s) URL such as https://generativelanguage.googleapis.com, not {url!r}"
            )
        prefix = parts.path.rstrip("/").removesuffix("/v1beta")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, prefix)

    def target(self, path_and_query: str) -> str:
        return self.prefix + path_and_query

    def uri(self, path_and_query: str) -> str:
        """The absolute URI as vcrpy records it (default ports left out)."""
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.target(path_and_query)}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def forward_proxy(self) -> ForwardProxy | None:
        """The forward proxy this process's environment names for the upstream, or None (unset, NO_PROXY,
        loopback)."""
        if self.host.startswith(_LOOPBACK):
            return None
        proxies = getproxies_environment()
        url = proxies.get(self.scheme)
        if not url or proxy_bypass_environment(self.host, proxies):
            return None
        return ForwardProxy.parse(url, f"{self.scheme.upper()}_PROXY")

    def connect(self, timeout: float, via: ForwardProxy | None = None) -> http.client.HTTPConnection:
        """A new connection to the upstream, through ``via`` when given (see ``request_target``)."""
        if self.scheme == "https":
            context = tls_context()
            if via is None:
                return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
            connection = http.client.HTTPSConnection(via.host, via.port, timeout=timeout, context=context)
            tunnel_headers = {"Proxy-Authorization": via.authorization} if via.authorization else None
            connection.set_tunnel(self.host, self.port, headers=tunnel_headers)
            return connection
        if via is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(via.host, via.port, timeout=timeout)

    def request_target(self, path_and_query: str, via: ForwardProxy | None = None) -> str:
        """What goes on the request line: absolute form to a plain-http forward proxy, else the path."""
        if via is not None and self.scheme == "http":
            return self.uri(path_and_query)
        return self.target(path_and_query)


def tls_context() -> ssl.SSLContext:
    """The default context (SSL_CERT_FILE / SSL_CERT_DIR apply), plus REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE."""
    cafile = None
    if not os.environ.get("SSL_CERT_FILE"):
        cafile = next((os.environ[name] for name in _CA_BUNDLE_VARIABLES if os.environ.get(name)), None)
    return ssl.create_default_context(cafile=cafile)


def tls_advice(upstream: Upstream, via: ForwardProxy | None, exc: ssl.SSLCertVerificationError) -> str:
    """What a certificate failure means and what to do; the proxy answers it non-retryable, never records it."""
    reason = exc.verify_message or exc.reason or str(exc)
    hop = f" (through the forward proxy {via})" if via is not None else ""
    return (
        f"the upstream's TLS certificate failed verification: {reason} ({upstream.origin}{hop}). Retrying will "
        "not help. If a corporate proxy or gateway re-signs TLS traffic, point SSL_CERT_FILE (or "
        "REQUESTS_CA_BUNDLE) at a PEM bundle holding its CA certificate, in the environment pytest runs in, and "
        "record again; set HTTPS_PROXY if the network needs a forward proxy. Nothing was recorded."
    )
