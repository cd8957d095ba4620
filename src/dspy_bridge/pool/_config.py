"""Pool configuration: one validated, frozen value object, plus the ``UNSET`` sentinel.

Usage::

    config = PoolConfig(size=4, mode="mock")                 # four mock workers, defaults elsewhere
    config = PoolConfig(size=2, mode="real", request_timeout=120, lm={"model": "gemini/gemini-2.5-flash"})

Every option is checked up front and each error names the option (pydantic does that for us).
"""

from __future__ import annotations

import enum
import random
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dspy_bridge.protocol._commands import CommandError, allow_hosts_args

__all__ = ["UNSET", "PoolConfig", "Unset"]


class Unset(enum.Enum):
    """Type of ``UNSET``: "not given", as opposed to an explicit ``None`` (= no timeout)."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET

DEFAULT_MAX_IN_FLIGHT = {"real": 1, "mock": 16}


class PoolConfig(BaseModel):
    """How many workers, of which kind, and how the pool treats their failures.

    ``max_in_flight`` defaults to 1 for real workers (a DSPy call occupies the worker) and 16 for
    mock ones (they answer in microseconds, so pipelining pays). ``worker_command`` replaces the
    command prefix; the pool always appends ``--mode M --codec C --worker-id ID``.

    Workers never inherit a key: their environment is the host's minus every provider key variable
    (``dspy_bridge._secrets.is_secret_env_name``: ``GEMINI_API_KEY``, ``GOOGLE_API_KEY``, any
    ``*_API_KEY``, ...) and minus the names in ``secret_env``, plus our own variables, plus ``env``.
    ``env`` is explicit, so it wins: a key put there by name does reach the workers. The way to give
    a worker a key is ``configure_lm(api_key=...)`` (or ``lm={"api_key": ...}``): it travels in the
    request and stays in the worker's memory only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- size ---------------------------------------------------------------------------------
    size: int = Field(2, ge=0, description="workers started by start() and kept alive by the restart policy")
    max_overflow: int = Field(0, ge=0, description="extra workers started on demand when every worker is full")
    overflow_idle_timeout: float = Field(10.0, gt=0, description="seconds an idle overflow worker lives")
    # -- what a worker is ---------------------------------------------------------------------
    mode: Literal["real", "mock"] = "mock"
    worker_command: list[str] | None = Field(None, min_length=1, description="command prefix replacing the default")
    codec: Literal["msgpack", "json"] = "msgpack"
    worker_concurrency: int = Field(1, ge=1, description="threads serving requests inside one worker")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="variables set in every worker by name; they win over everything, even a key name",
    )
    secret_env: tuple[str, ...] = Field(
        (), description="more variable names workers never inherit (besides GEMINI_API_KEY, *_API_KEY, ...)"
    )
    start_strategy: Literal["spawn", "zygote", "auto"] = "auto"
    allowed_modules: tuple[str, ...] = Field(
        (), description="module-path prefixes real workers may import user modules from (create_program(module=))"
    )
    preload_modules: tuple[str, ...] = Field(
        (), description="user modules a zygote imports before forking, so forked workers start with them"
    )
    lm: dict[str, Any] | None = Field(
        None, repr=False, description="configure_lm arguments applied to every worker as its default LM"
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description=(
            "the connect guard: None (default) = off; a list = real workers may open network connections only "
            "to these entries, 'host:port' or 'host' (any port), plus Unix sockets; [] allows no host at all. "
            "Any other connection fails in the worker naming host, port and test. Pool.allow_hosts() adds more"
        ),
    )
    # -- time ---------------------------------------------------------------------------------
    request_timeout: float | None = Field(60.0, gt=0, description="seconds per request attempt; None = no limit")
    heartbeat_interval: float | None = Field(
        5.0, gt=0, description="seconds between pings of idle workers (a stopped one is replaced); None = off"
    )
    heartbeat_timeout: float = Field(5.0, gt=0, description="seconds an idle worker has to answer its heartbeat")
    checkout_timeout: float = Field(30.0, gt=0, description="seconds to wait for a free worker slot")
    start_timeout: float = Field(60.0, gt=0, description="seconds from spawn to Hello")
    shutdown_grace: float = Field(2.0, ge=0, description="seconds a worker gets to obey a shutdown request")
    terminate_grace: float = Field(1.0, ge=0, description="seconds a worker gets to obey SIGTERM before SIGKILL")
    # -- load ---------------------------------------------------------------------------------
    max_in_flight: int | None = Field(None, ge=1, description="requests sent to one worker at once")
    ready_when: Literal["first", "all"] = "all"
    restart: Literal["always", "never"] = "always"
    max_requests_per_worker: int | None = Field(None, ge=1, description="recycle a worker after this many")
    # -- failures -----------------------------------------------------------------------------
    breaker_threshold: int = Field(5, ge=1, description="consecutive crashes/start failures that open the breaker")
    breaker_window: float = Field(30.0, gt=0, description="seconds within which those failures must fall")
    breaker_reset: float = Field(5.0, gt=0, description="seconds the breaker stays open before a probe")
    retries: int = Field(2, ge=0, description="extra attempts for errors the worker marks retryable")
    backoff: float = Field(0.05, ge=0, description="first retry delay in seconds (doubles, with jitter)")
    backoff_max: float = Field(2.0, ge=0, description="ceiling of a retry delay in seconds")
    stderr_tail_lines: int = Field(40, ge=1, description="lines of worker stderr kept for crash reports")
    worker_id_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9_.-]*$", description="prefix of worker ids, e.g. the xdist worker 'gw0-'"
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str] | None) -> list[str] | None:
        if hosts is None:
            return None
        try:
            return list(allow_hosts_args(hosts)["hosts"])
        except CommandError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check(self) -> PoolConfig:
        if self.size + self.max_overflow < 1:
            raise ValueError("size + max_overflow must be at least 1: the pool needs somewhere to run requests")
        bad = [name for name in self.secret_env if not name or "=" in name or "\0" in name]
        if bad:
            raise ValueError(f"secret_env holds names no environment variable can have: {bad!r}")
        bad = [name for name in (*self.allowed_modules, *self.preload_modules) if not _is_module_path(name)]
        if bad:
            raise ValueError(f"allowed_modules/preload_modules hold names that are not module paths: {bad!r}")
        if self.lm is not None and not isinstance(self.lm.get("model"), str):
            raise ValueError("lm needs a 'model' string, e.g. {'model': 'gemini/gemini-2.5-flash'}")
        return self

    @property
    def effective_max_in_flight(self) -> int:
        """``max_in_flight`` or its per-mode default."""
        return self.max_in_flight if self.max_in_flight is not None else DEFAULT_MAX_IN_FLIGHT[self.mode]

    def backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: half the cap fixed, half random; never above ``backoff_max``."""
        cap = min(self.backoff_max, self.backoff * (2.0 ** max(attempt - 1, 0)))
        return cap / 2 + random.uniform(0, cap / 2)


def _is_module_path(name: str) -> bool:
    """``myapp`` or ``myapp.rag`` (a preload may name ``module:warm_up``, as the zygote's list allows)."""
    path, _, function = name.partition(":")
    return all(part.isidentifier() for part in path.split(".")) and (not function or function.isidentifier())
