"""The Pool's commands: one thin method per protocol command, arguments built by ``protocol._commands``.

Kept beside the coordinator (``Pool`` inherits them) so ``_pool.py`` stays about lifecycle and the request
path; ``SyncPool`` and ``Bridge`` wrap these same builders, so a command's shape is decided once.
"""

from __future__ import annotations

import warnings
from typing import Any

from dspy_bridge.pool._config import UNSET, Unset
from dspy_bridge.pool._errors import usage_errors
from dspy_bridge.pool._streaming import Requester as _Requester
from dspy_bridge.protocol import _commands as commands

__all__ = ["CommandsMixin"]


class CommandsMixin:
    """``ping``, ``configure_lm``, ``allow_hosts``, ``create_program``, ``delete_program``, ``stub``, ``script``,
    ``execute``."""

    async def ping(self: _Requester, *, session_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("ping", session_id=session_id)
        return result

    async def configure_lm(
        self: _Requester, model: str, *, session_id: str | None = None, api_key: str | None = None, **settings: Any
    ) -> dict[str, Any]:
        """Configure the LM of ``session_id`` (or the pool-wide default); the key stays in memory only."""
        with usage_errors():
            args = commands.configure_lm_args(model, api_key=api_key, **settings)
        result: dict[str, Any] = await self.request("configure_lm", args, session_id=session_id)
        return result

    async def allow_hosts(self: _Requester, hosts: list[str]) -> dict[str, Any]:
        """Let every worker, now and later, also connect to ``hosts`` (``host:port`` or ``host``).

        Turns the connect guard on where it was off (``allowed_hosts=None``); it never turns it off. Real
        workers only: a mock worker answers ``guarded: false``.
        """
        with usage_errors():
            args = commands.allow_hosts_args(hosts)
        result: dict[str, Any] = await self.request("allow_hosts", args)
        return result

    async def create_program(
        self: _Requester,
        signature: str | dict[str, Any] | None = None,
        *,
        program_type: str = "predict",
        instructions: str | None = None,
        program_id: str | None = None,
        session_id: str | None = None,
        **definition: Any,
    ) -> str:
        """Create a program and return its (deterministic) id: a ``signature`` program, or a user ``module``
        (``module=, kwargs=, state=``; also ``demos=``, ``adapter=``: see ``commands.create_program_args``)."""
        with usage_errors():
            args = commands.create_program_args(
                signature, program_type=program_type, instructions=instructions, program_id=program_id, **definition
            )
        result = await self.request("create_program", args, session_id=session_id)
        return str(result["program_id"])

    async def delete_program(self: _Requester, program_id: str, *, session_id: str | None = None) -> None:
        with usage_errors():
            args = commands.delete_program_args(program_id)
        await self.request("delete_program", args, session_id=session_id)

    async def stub(
        self: _Requester,
        program_id: str,
        outputs: dict[str, Any] | None = None,
        *,
        inputs: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> None:
        """Mock workers only: answer ``program_id`` with ``outputs`` (or ``error``), for ``inputs`` or any."""
        with usage_errors():
            args = commands.stub_args(program_id, outputs, inputs=inputs, error=error)
        await self.request("stub_program", args, session_id=session_id)

    async def script(
        self: _Requester,
        script: dict[str, Any],
        *,
        strict: bool = True,
        auto: bool = False,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        """Real workers only: answer ``session_id``'s LM calls per predictor from ``script`` (docs/programs.md,
        "Scripted runs"); the session's pinned worker keeps it, a replacement gets it replayed."""
        with usage_errors():
            args = commands.script_args(script, strict=strict, auto=auto)
        result: dict[str, Any] = await self.request("script", args, session_id=session_id)
        return result

    async def stub_program(self: _Requester, *args: Any, **kwargs: Any) -> None:
        """Deprecated name of ``stub`` (one name on ``Pool``, ``SyncPool`` and ``Bridge``)."""
        warnings.warn("Pool.stub_program() is deprecated; use Pool.stub()", DeprecationWarning, stacklevel=2)
        await CommandsMixin.stub(self, *args, **kwargs)

    async def execute(
        self: _Requester,
        program_id: str,
        inputs: dict[str, Any],
        *,
        session_id: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: float | Unset | None = UNSET,
        **options: Any,
    ) -> dict[str, Any]:
        """Run a program; the result map holds ``outputs``, usage, ... (``Result.from_response`` reads it).
        ``options``: per-call ``config``, ``adapter``, ``trace`` (``commands.execute_args``)."""
        with usage_errors():
            args = commands.execute_args(program_id, inputs, **options)
        result: dict[str, Any] = await self.request(
            "execute_program", args, session_id=session_id, context=context, timeout=timeout
        )
        return result
