"""The zygote's control protocol: what a host and a fork server say to each other, stated once.

Both sides import this module and nothing of each other (as ``multiprocessing.forkserver`` is one module
that both its client and its server speak). The worker side (``dspy_bridge.worker.zygote``) serves it;
the host side (``dspy_bridge.pool._zygote``, and the daemon's control in ``dspy_bridge.pool._daemon``)
asks. Where a daemon listens and who may connect: ``_rendezvous``; which environment: ``_fingerprint``.

The channel is an ``AF_UNIX``/``SOCK_SEQPACKET`` socket: each message is one JSON object with an ``"op"``,
and descriptors passed with SCM_RIGHTS arrive with the message they were sent with::

    host → zygote   hello{protocol, fingerprint?}         zygote → host   ready{pid, preloaded, …} | refused{reason}
                    spawn{req, worker_id, mode, codec,                    spawned{req, pid} + [pidfd]
                          env, cwd, max_concurrency,                      spawn_failed{req, error}
                          max_frame_size?}                                exit{pid, returncode}
                          + [stdin_r, stdout_w, stderr_w]                 error{error}
                    status{} | stop{}                                     status{…} | stopping{pid}

Descriptors received with a message belong to the receiver, which must close every one it does not keep.
"""

from __future__ import annotations

import contextlib
import json
import os

TYPE_CHECKING = False  # typing stays off the zygote's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_PRELOAD",
    "MAX_MESSAGE",
    "SPAWN_FDS",
    "ZYGOTE_PROTOCOL",
    "close_fds",
    "decode_message",
    "encode_message",
]

ZYGOTE_PROTOCOL = 1
# What a zygote imports once unless told otherwise (``module`` or ``module:warm_up_function``).
DEFAULT_PRELOAD = ("dspy", "dspy_bridge.worker._real", "dspy_bridge.worker.zygote:warm_dspy")
MAX_MESSAGE = 1024 * 1024  # a spawn request carries a whole environment; SEQPACKET caps it at the send buffer
SPAWN_FDS = 3  # the child's stdin read end, stdout write end, stderr write end


def encode_message(message: dict[str, Any]) -> bytes:
    """One control message, as one SEQPACKET datagram."""
    return json.dumps(message, separators=(",", ":")).encode()


def decode_message(data: bytes) -> dict[str, Any]:
    """The object in one datagram; ValueError unless it is a JSON object with a string ``op``."""
    message = json.loads(data)
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError(f"control message is not an object with an 'op': {data[:80]!r}")
    return message


def close_fds(fds: list[int]) -> None:
    """Close descriptors received with a message that nobody will keep (already closed ones are fine)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
