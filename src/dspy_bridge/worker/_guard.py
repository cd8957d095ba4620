"""The connect guard: a worker reaches only the hosts it was allowed (and Unix sockets), nothing else.

    allow_hosts command ──▶ install(["127.0.0.1:41234"])   (first call adds the audit hook; later ones add hosts)
    any code in the worker ──▶ socket.getaddrinfo / connect / sendto / sendmsg ──▶ audit hook
                                    allowed? pass : raise ConnectionBlocked (names host, port, test, remedy)

An audit hook (PEP 578) sees every socket the interpreter opens, whoever opens it — urllib, httpx,
requests, DSPy's own lm15 transport, asyncio — and cannot be removed once added, so no later command
or user code can turn the guard off; ``allow_hosts`` can only add hosts. ``AF_UNIX`` (and every
non-IP family) is always allowed, so pipes, the zygote's socket and local IPC keep working. A name
lookup (``getaddrinfo``) of a host that is not allowed fails before any DNS query leaves the machine.

``ConnectionBlocked`` is a ``ConnectionRefusedError``: libraries report it as the connection failure it
is (httpx ``ConnectError``, urllib ``URLError``, DSPy ``LMTransportError``), with our message inside.
The hook's fast path is one set lookup of the event name; everything else runs only for socket events.
Only real workers install it: a mock worker runs no user code.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading

from dspy_bridge.protocol._commands import split_host

__all__ = ["ConnectionBlocked", "allowed_hosts", "blocked_in", "install", "installed", "set_test"]

_EVENTS = frozenset({"socket.connect", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg"})
_IP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})
_LOOPBACK = ("localhost", "127.0.0.1", "::1")  # one machine, three spellings: allowing one allows all


class ConnectionBlocked(ConnectionRefusedError):
    """A worker tried to reach a host it was not allowed to; the message says which, from where, and what to do."""

    def __init__(self, host: str, port: int | None, test: str | None, allowed: list[str]) -> None:
        self.host, self.port, self.test = host, port, test
        shown = f"[{host}]" if ":" in host else host
        target = shown if port is None else f"{shown}:{port}"
        self.target = target
        where = f"test {test}" if test else "this worker (outside any test request)"
        reachable = f"{', '.join(allowed)} and Unix sockets" if allowed else "Unix sockets"
        super().__init__(
            f"dspy-bridge blocked a connection to {target} from {where}: this worker may only connect to "
            f"{reachable} (offline means offline). Record it through the cassette proxy (an LM: keep the "
            f"test's LM settings instead of your own api_base), stub it (bridge.stub), or allow the host: "
            f"PoolConfig(allowed_hosts=[{target!r}]) or, under pytest, the ini option "
            f"bridge_allowed_hosts = {target}"
        )

    def info(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "test": self.test}


# -- state (process-wide; written under _lock, read lock-free by the hook) ------------------------------
_lock = threading.Lock()
_rules: dict[str, frozenset[int | None]] = {}  # host → allowed ports (None: any port)
_entries: list[str] = []  # what was allowed, as given (for messages)
_resolved: dict[str, frozenset[str]] = {}  # allowed host name → its addresses (looked up on first need)
_installed = False
_local = threading.local()
_last_live = False  # for threads DSPy starts itself (e.g. a DNS lookup in an executor), like _last_test
_last_test: str | None = None


def installed() -> bool:
    return _installed


def allowed_hosts() -> list[str]:
    return list(_entries)


def install(hosts: list[str]) -> list[str]:
    """Allow ``hosts`` (``host:port`` or ``host``) and make sure the hook is on; returns every allowed entry."""
    global _installed, _rules
    parsed = [(entry, *split_host(entry)) for entry in hosts]
    with _lock:
        rules = {host: set(ports) for host, ports in _rules.items()}
        for entry, host, port in parsed:
            for name in _LOOPBACK if host in _LOOPBACK else (_canonical(host),):
                rules.setdefault(name, set()).add(port)
            if entry not in _entries:
                _entries.append(entry)
        _rules = {host: frozenset(ports) for host, ports in rules.items()}
        _resolved.clear()
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True
        return list(_entries)


def set_test(test: str | None, *, live: bool = False) -> None:
    """The test whose request this thread now serves (named in a ConnectionBlocked message).

    ``live``: that test was marked ``@pytest.mark.integration(live=True)`` — it talks to its own endpoint on
    purpose, so its connections pass (and it is never replayed or recorded).
    """
    global _last_test, _last_live
    _local.test = test
    _local.live = live
    _last_test = test
    _last_live = live


def blocked_in(exc: BaseException | None) -> ConnectionBlocked | None:
    """Our ConnectionBlocked if ``exc`` is one or was caused by one (however many wrappers deep)."""
    seen = 0
    while exc is not None and seen < 32:
        if isinstance(exc, ConnectionBlocked):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                found = blocked_in(inner)
                if found is not None:
                    return found
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


# -- the hook ---------------------------------------------------------------------------------------------
def _hook(event: str, args: tuple[object, ...]) -> None:
    if event not in _EVENTS:
        return
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
        if host is None:
            return  # a passive (bind) lookup: nothing leaves the machine
        _check(host.decode() if isinstance(host, bytes) else str(host), _port(port), lookup=True)
        return
    sock, address = args[0], args[1]
    if address is None or getattr(sock, "family", None) not in _IP_FAMILIES:
        return  # Unix sockets, netlink, a sendmsg without an address...
    if isinstance(address, tuple) and len(address) >= 2:
        _check(str(address[0]), _port(address[1]), lookup=False)


def _port(value: object) -> int | None:
    if isinstance(value, int):
        return value or None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.isdigit():
        return int(value) or None
    return None  # a service name ("https"): the connect that follows is checked with the number


def _check(host: str, port: int | None, *, lookup: bool) -> None:
    if getattr(_local, "live", _last_live):
        return  # a live test's own endpoint, on purpose
    name = _canonical(host)
    try:
        if _allowed(name, port, lookup=lookup):
            return
    except Exception:  # never let a bug here open the door
        pass
    test = getattr(_local, "test", None) or _last_test
    raise ConnectionBlocked(name, port, test, list(_entries))


def _allowed(name: str, port: int | None, *, lookup: bool) -> bool:
    rules = _rules
    ports = rules.get(name)
    if ports is not None and (None in ports or port in ports or (lookup and port is None)):
        return True
    if not _is_ip(name):
        return False  # a name we were not told about: not even its lookup may leave the machine
    # An address: it may belong to an allowed *name* (e.g. "proxy.internal:8080" resolved to 10.0.0.5).
    for host, host_ports in rules.items():
        if _is_ip(host) or not (None in host_ports or port in host_ports):
            continue
        if name in _addresses(host):
            return True
    return False


def _addresses(host: str) -> frozenset[str]:
    found = _resolved.get(host)
    if found is None:
        try:  # re-enters the hook for ``host``, which is allowed
            found = frozenset(_canonical(str(info[4][0])) for info in socket.getaddrinfo(host, None))
        except OSError:
            found = frozenset()
        _resolved[host] = found
    return found


def _canonical(host: str) -> str:
    host = host.strip("[]").lower().split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
