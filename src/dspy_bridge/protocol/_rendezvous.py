"""Where a zygote daemon listens and who may talk to it: a private directory, a 0600 socket, same uid.

The socket lives in a per-user runtime directory (``$XDG_RUNTIME_DIR/dspy-bridge``, else
``/tmp/dspy-bridge-<uid>``; ``DSPY_BRIDGE_RUNTIME_DIR`` overrides) created with mode 0700, and the socket
itself has mode 0600; the daemon also compares each peer's uid (``SO_PEERCRED``) with its own, which
refuses even root. The daemon (worker side) listens and checks peers; the host side looks the path up.
Both follow these rules, so they are written once, here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from pathlib import Path

__all__ = ["RUNTIME_DIR_ENV", "SOCKET_NAME", "check_peer", "listen", "peer_refusal", "runtime_dir", "socket_path"]

RUNTIME_DIR_ENV = "DSPY_BRIDGE_RUNTIME_DIR"
SOCKET_NAME = "zygote.sock"


def runtime_dir(create: bool = True) -> Path:
    """The per-user directory holding the socket, lock and log; refused if anyone else could enter it."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        path = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "dspy-bridge"
    else:
        path = Path("/tmp") / f"dspy-bridge-{os.geteuid()}"
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=False)
    if create or os.path.lexists(path):
        _check_private_dir(path)
    return path


def _check_private_dir(path: Path) -> None:
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symlink or file squats the daemon's runtime dir)")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); refusing it")
    if info.st_mode & 0o077:
        raise PermissionError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; the daemon's directory must be 0700 "
            f"(fix with: chmod 700 {path})"
        )


def socket_path(directory: Path | None = None) -> Path:
    """Where the daemon listens; looking it up never creates the runtime directory (starting does)."""
    return (directory or runtime_dir(create=False)) / SOCKET_NAME


def listen(path: str | os.PathLike[str]) -> socket.socket:
    """A listening SOCK_SEQPACKET socket at ``path`` with mode 0600, replacing a stale socket file."""
    path = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o177)  # never visible to others, not even between bind and chmod
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(64)
    return sock


def peer_refusal(peer_uid: int, own_uid: int) -> str | None:
    """Why a peer of uid ``peer_uid`` may not use a daemon run by ``own_uid`` (None: it may)."""
    if peer_uid == own_uid:
        return None
    return (
        f"permission denied: the dspy-bridge daemon belongs to uid {own_uid} and serves no other user "
        f"(you are uid {peer_uid}); start your own with `dspy-bridge daemon start`"
    )


def check_peer(sock: socket.socket) -> tuple[str | None, int | None]:
    """(refusal or None, peer pid) from the kernel's record of who connected (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return peer_refusal(uid, os.geteuid()), pid
