"""Real handler set: DSPy 3.4 programs calling a real LM, one LM per session.

Start-up imports DSPy once (before Hello), so the first request pays nothing extra. Each
session's ``configure_lm`` builds its own ``dspy.LM``; ``execute_program`` runs the module inside
``dspy.context(lm=...)`` and never touches the global ``dspy.configure``, so sessions stay
isolated and handler threads (``--max-concurrency``) are safe.

Choices a reader would otherwise have to rediscover:

* **Engine.** DSPy 3.4 reaches Gemini through its vendored lm15 socket transport and imports
  LiteLLM only for models or settings lm15 cannot carry; we never import LiteLLM ourselves
  (``get_stats`` reports ``litellm_imported``). ``LITELLM_LOCAL_MODEL_COST_MAP`` defaults to
  ``True`` here: otherwise DSPy's first LM call fetches a pricing map from GitHub (5 s timeout),
  which a sandboxed worker must not do. Set it to ``False`` in the worker env to opt back in.
* **The API key** arrives only in ``configure_lm(api_key=...)`` and goes only into the ``dspy.LM``
  (which must hold it to call the provider). It is never stored in session settings, logged or
  returned; error messages are scrubbed of it, of any key variable's value (only ever present when
  the user put one in ``PoolConfig.env`` by name) and of anything key-shaped (``_lm_errors.scrub``).
  Workers never inherit a key from the host's environment, so an LM configured without
  ``api_key`` that fails for want of one says so and names the remedy (``NO_KEY_REMEDY``).
* **DSPy's response cache is hermetic** (``_hermetic``): one memory-only cache per session, installed as
  ``dspy.cache`` at start, never a directory on disk (``DSPY_CACHEDIR`` and ``~/.dspy_cache`` are never
  created or read), so no test sees another's answers and a stale answer never bypasses a cassette. An LM
  with ``cache=False`` never reads or writes it (DSPy checks the LM's own flag on every call); hits are
  counted per predictor (``cache_hits``). An answer that holds a key (one the worker knows, or anything
  key-shaped) is never cached (``_refuse_caching``). Each new session also starts from DSPy's default
  settings (``SettingsBaseline``): a ``dspy.configure`` in one test's code does not reach the next.
* **Scripted sessions** (``script`` command, ``_scripted``): the session's runs use a scripted LM that
  answers each predictor from the test's script; the module, its tools and DSPy's adapters really run.
* **History is off** (``disable_history=True`` per call): nothing in the protocol reads it, and
  DSPy would otherwise keep up to 10 000 prompt/response entries per LM, per module and globally
  in a long-lived worker. Token usage comes from ``dspy.track_usage`` instead.
* **The connect guard** (``_guard``, switched on by the ``allow_hosts`` command): the worker may
  then reach only the allowed hosts. A blocked connection fails the request at once with the
  guard's message, ``retryable`` false — DSPy's own retries are told not to retry it either
  (``_no_retry_when_blocked``), since a forbidden host does not become allowed by waiting.
* **Gemini base URL.** lm15's Gemini provider appends ``/models/{model}:generateContent`` to
  ``api_base``, so an ``api_base`` for a ``gemini/`` model must end in ``/v1beta``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Literal

from dspy_bridge._secrets import is_secret_env_name
from dspy_bridge.protocol._signature import FieldSpec
from dspy_bridge.protocol._taxonomy import ErrorType
from dspy_bridge.worker import _guard
from dspy_bridge.worker._base import BaseHandlers, HandlerFailure, Program, Session
from dspy_bridge.worker._dspy_types import (
    import_resolver,
    needs_python_types,
    output_types,
    plain,
    python_type,
    signature_dict,
    wire_inputs,
)
from dspy_bridge.worker._genai import route_google_genai
from dspy_bridge.worker._streaming import CHUNK_SINK

__all__ = ["NO_KEY_REMEDY", "DSPyHandlers", "plain", "python_type"]

NO_KEY_REMEDY = (
    "configure_lm was called without api_key, and workers never get keys from the host's environment "
    "(GEMINI_API_KEY, GOOGLE_API_KEY and every other provider key variable are removed from it): pass "
    "configure_lm(..., api_key=...) (or PoolConfig(lm={..., 'api_key': ...})) — it travels in the request "
    "and is kept in the worker's memory only — or, to opt out, set the variable by name in PoolConfig.env"
)


class DSPyHandlers(BaseHandlers):
    """Handlers that build ``dspy.LM`` per session and run ``dspy.Predict`` / ``dspy.ChainOfThought``."""

    mode = "real"
    extra_capabilities = ("dspy", "stream")
    #: Module prefixes pydantic models (``pkg.module:Model`` types) may be imported from; the worker adds the
    #: ones the pool allows (``$DSPY_BRIDGE_ALLOWED_MODULES``, ``PoolConfig.allowed_modules``).
    allowed_modules: tuple[str, ...] = ()

    def __init__(self, worker_id: str) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import dspy

        self._dspy = dspy
        from dspy_bridge.worker._calls import count_retries
        from dspy_bridge.worker._hermetic import SessionCaches, SettingsBaseline
        from dspy_bridge.worker._modules import allowed_prefixes

        self.allowed_modules = tuple(dict.fromkeys((*type(self).allowed_modules, *allowed_prefixes())))
        self._caches = SessionCaches.install(self._refuse_caching)
        self._settings = SettingsBaseline()
        count_retries()
        super().__init__(worker_id)

    @property
    def dspy_version(self) -> str | None:
        return str(self._dspy.__version__)

    # -- LM ----------------------------------------------------------------------------------
    def _refuse_caching(self, value: Any) -> bool:
        """Never cache an LM answer that holds a key: one this worker knows of, or anything key-shaped (a
        provider echoing the key in an error or a completion)."""
        from dspy_bridge.cassettes._scrub import redact_text

        try:
            text = repr(value)
        except Exception:  # an answer we cannot inspect is not cached
            return True
        return redact_text(text) != text or any(secret in text for secret in self._secrets() if len(secret) >= 8)

    def session(self, session_id: str | None, *, create: bool = True) -> Session:
        """A new session starts from the worker's baseline DSPy settings (``_hermetic.SettingsBaseline``)."""
        if session_id not in self.sessions and create:
            self._settings.restore()
        return super().session(session_id, create=create)

    def _make_lm(self, settings: dict[str, Any], api_key: str | None) -> Any:
        from dspy_bridge.worker._lm_errors import scrub

        model: str = settings["model"]
        api_base = settings.get("api_base")
        if api_base is not None:
            if not isinstance(api_base, str) or not api_base.startswith(("http://", "https://")):
                raise HandlerFailure(
                    ErrorType.INVALID_REQUEST,
                    f"api_base must be an http(s) URL, got {api_base!r}",
                    details={"argument": "api_base"},
                )
            if model.startswith("gemini/") and not api_base.rstrip("/").endswith("/v1beta"):
                raise HandlerFailure(
                    ErrorType.INVALID_REQUEST,
                    f"api_base {api_base!r} for a gemini/ model must end in '/v1beta' "
                    "(e.g. 'https://generativelanguage.googleapis.com/v1beta'); DSPy appends "
                    "'/models/<model>:generateContent' to it",
                    details={"argument": "api_base"},
                )
        options: dict[str, Any] = {
            name: settings[name]
            for name in ("temperature", "max_tokens", "num_retries", "cache", "timeout")
            if name in settings
        }
        if api_key is not None:
            options["api_key"] = api_key
        if api_base is not None:
            options["api_base"] = api_base
        try:
            lm = self._dspy.LM(model, **options)
        except (ValueError, TypeError, self._dspy.LMError) as exc:
            message = scrub(f"DSPy refused the LM settings: {exc}", [api_key, *self._secrets()])
            raise HandlerFailure(ErrorType.INVALID_REQUEST, message) from None
        route_google_genai(model, api_base, api_key)
        return lm

    def known_secrets(self) -> list[str]:
        return self._secrets()

    def _secrets(self) -> list[str]:
        """Every key this worker knows of: the sessions' LM keys (from ``configure_lm(api_key=...)``, in memory
        only) and the values of key variables, which are there only if ``PoolConfig.env`` named them."""
        found = [value for name, value in os.environ.items() if is_secret_env_name(name) and value]
        for session in list(self.sessions.values()):
            key = getattr(session.lm, "kwargs", {}).get("api_key") if session.lm is not None else None
            if isinstance(key, str) and key:
                found.append(key)
        return found

    # -- programs ----------------------------------------------------------------------------
    def _field(self, spec: FieldSpec, kind: Literal["input", "output"]) -> tuple[Any, Any]:
        make = self._dspy.InputField if kind == "input" else self._dspy.OutputField
        options = {"desc": spec.description, "prefix": spec.prefix}
        field = make(**{key: value for key, value in options.items() if value})
        resolve = import_resolver(self.allowed_modules)
        return python_type(spec.type, resolve, schema=spec.schema, name=spec.name), field

    def _build_module(self, program: Program) -> Any:
        from dspy_bridge.worker import _modules

        if program.kind == "module":
            target = program.definition["module"]
            return _modules.build_user_module(
                self._dspy, target, program.definition["kwargs"], program.args.get("state")
            )
        built = self._build_signature_module(program)
        if program.args.get("demos"):
            _modules.apply_demos(
                self._dspy, built, program.args["demos"], program.spec.input_names if program.spec else []
            )
        if program.args.get("state") is not None:
            _modules.load_state(built, program.args["state"])
        return built

    def _predictors(self, program: Program) -> list[dict[str, Any]]:
        from dspy_bridge.worker._modules import describe_predictors

        return describe_predictors(program.module)

    def _with_prefixes(self, built: Any, signature: Any) -> Any:
        """A structured signature's field ``prefix`` reaches DSPy (as ``dspy.InputField(prefix=...)`` would)."""
        if isinstance(signature, dict):
            for side in ("inputs", "outputs"):
                for item in signature.get(side) or ():
                    if isinstance(item, dict) and isinstance(item.get("prefix"), str):
                        built = built.with_updated_fields(item["name"], prefix=item["prefix"])
        return built

    def _build_signature_module(self, program: Program) -> Any:
        dspy = self._dspy
        spec = program.spec
        assert spec is not None
        signature = program.definition["signature"]
        try:
            if isinstance(signature, str) and not needs_python_types([f.type for f in (*spec.inputs, *spec.outputs)]):
                built = dspy.Signature(signature, spec.instructions or None)
            else:
                fields = {f.name: self._field(f, "input") for f in spec.inputs}
                fields.update({f.name: self._field(f, "output") for f in spec.outputs})
                built = dspy.make_signature(fields, spec.instructions or None)
        except HandlerFailure:
            raise
        except Exception as exc:  # DSPy's parser raises ValueError, TypeError, SyntaxError...
            raise HandlerFailure(
                ErrorType.INVALID_REQUEST,
                f"DSPy cannot build a signature from {signature!r}: {type(exc).__name__}: {exc}",
                details={"argument": "signature"},
            ) from None
        built = self._with_prefixes(built, signature)
        if program.definition.get("program_type") == "chain_of_thought":
            return dspy.ChainOfThought(built)
        return dspy.Predict(built)

    def _run(
        self,
        session_id: str | None,
        lm_session: Session,
        program: Program,
        inputs: dict[str, Any],
        context: dict[str, Any],
    ) -> dict[str, Any]:
        from dspy_bridge.worker._base import CALL_OPTIONS
        from dspy_bridge.worker._hermetic import session_cache
        from dspy_bridge.worker._lm_errors import failure_for, scrub, watch_truncation
        from dspy_bridge.worker._modules import full_result, run_program
        from dspy_bridge.worker._scripted import scripted_lm

        dspy = self._dspy
        session = self.session(session_id)
        script = session.script
        if script is not None:
            script.check_names([name for p in session.programs.values() for name, _ in _named(p.module)])
        lm = scripted_lm(dspy, script) if script is not None else lm_session.lm
        if session.lm_cache is None:
            session.lm_cache = session_cache()
        options = context.get(CALL_OPTIONS) or {}
        final_signature = _final_signature(program.module)
        if final_signature is not None:
            inputs = wire_inputs(final_signature, inputs)
        truncations: list[str] = []
        try:
            sink = context.get(CHUNK_SINK)  # a stream: true request (see worker/_streaming.py)
            kwargs = getattr(lm, "kwargs", {})
            route_google_genai(str(getattr(lm, "model", "")), kwargs.get("api_base"), kwargs.get("api_key"))
            with watch_truncation() as truncations:
                prediction, tracker, trace = run_program(dspy, program, lm, inputs, options, sink, session.lm_cache)
        except HandlerFailure:
            raise
        except Exception as exc:
            _raise_script_miss(script)
            secrets = self._secrets()
            failure = failure_for(exc, secrets=secrets, truncated=bool(truncations))
            if failure is None:
                failure = HandlerFailure(
                    ErrorType.INTERNAL,
                    scrub(f"{type(exc).__name__} while running {program.program_id}: {exc}", secrets),
                    details={"traceback": scrub(traceback.format_exc(), secrets)},
                )
            blocked = _guard.blocked_in(exc)
            if blocked is not None:  # say it plainly, and never retry: waiting does not allow a host
                details = {**(failure.details or {}), "connection_blocked": blocked.info()}
                failure = HandlerFailure(failure.type, scrub(str(blocked), secrets), retryable=False, details=details)
            elif failure.type is ErrorType.LM_AUTH and not getattr(lm, "kwargs", {}).get("api_key"):
                failure = HandlerFailure(
                    failure.type,
                    f"{NO_KEY_REMEDY}. The LM said: {failure.message}",
                    retryable=failure.retryable,
                    details={**(failure.details or {}), "remedy": "configure_lm(api_key=...) or PoolConfig.env"},
                )
            raise failure from None
        _raise_script_miss(script)  # strict: even when the module swallowed the error
        result = full_result(program.module, prediction, tracker, trace, int((options.get("config") or {}).get("n", 1)))
        types = output_types(final_signature) if final_signature is not None else {}
        result["output_types"] = {name: types[name] for name in result["outputs"] if name in types}
        result["model"] = lm.model
        if script is not None:
            result["source"] = "script"
        return result

    # -- commands ----------------------------------------------------------------------------
    def handle(self, command: str, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> Any:
        # named if this request's code opens a forbidden connection; a live test's connections pass
        _guard.set_test(context.get("test_id"), live=context.get("live") is True)
        return super().handle(command, args, session_id, context)

    def _allow_hosts(self, hosts: list[str]) -> dict[str, Any]:
        allowed = _guard.install(hosts)
        _no_retry_when_blocked()
        return {"guarded": True, "allowed": allowed}

    def cmd_create_program(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        """The base result plus every field's type text and JSON Schema (``signature``, ``schema``)."""
        result = super().cmd_create_program(args, session_id, context)
        signature = _final_signature(self.program(session_id, result["program_id"]).module)
        if signature is not None:
            described = signature_dict(signature)
            result["signature"] = described
            result["schema"] = {
                side: {field["name"]: field["schema"] for field in described[side]} for side in ("inputs", "outputs")
            }
        return result

    def cmd_render_prompts(
        self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]
    ) -> dict[str, Any]:
        """Each predictor's messages as the adapter formats them (placeholder inputs, no LM call)."""
        from dspy_bridge.protocol._commands import CommandError, render_prompts_args, unknown_keys
        from dspy_bridge.worker._prompts import render_prompts

        problem = unknown_keys("render_prompts", args, ("program_id", "adapter"))
        try:
            if problem:
                raise CommandError(problem)
            checked = render_prompts_args(**args)
        except CommandError as exc:
            raise HandlerFailure(ErrorType.INVALID_REQUEST, str(exc)) from None
        program = self.program(session_id, checked["program_id"])
        adapter = checked.get("adapter") or program.args.get("adapter") or "chat"
        return {
            "program_id": program.program_id,
            "adapter": adapter,
            "dspy_version": self.dspy_version,
            "predictors": render_prompts(self._dspy, program.module, adapter),
        }

    def cmd_script(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        """From now on this session's LM calls are answered from ``args["script"]`` (``_scripted``)."""
        from dspy_bridge.worker._scripted import script_from_args

        script = script_from_args(args)
        self.session(session_id).script = script
        return {"scripted": sorted(script.answers), "strict": script.strict, "auto": script.auto}

    def cmd_get_stats(self, args: dict[str, Any], session_id: str | None, context: dict[str, Any]) -> dict[str, Any]:
        stats = super().cmd_get_stats(args, session_id, context)
        stats["dspy_version"] = self.dspy_version
        stats["litellm_imported"] = "litellm" in sys.modules
        stats["lm_cache"] = {
            "scope": "session",
            "disk_dir": None,  # never: see _hermetic
            "sessions": sum(1 for session in self.sessions.values() if session.lm_cache is not None),
        }
        stats["allowed_hosts"] = _guard.allowed_hosts() if _guard.installed() else None
        return stats


def _raise_script_miss(script: Any) -> None:
    """A script's first problem in this run fails it (``invalid_request``): a field the signature lacks, or (when
    strict) an unscripted call — even when the module caught the error."""
    misses = script.take_misses() if script is not None else []
    if misses:
        raise HandlerFailure(
            ErrorType.INVALID_REQUEST,
            misses[0],
            details={
                "argument": "script",
                "reason": "unscripted_call" if misses[0].startswith("unscripted LM call") else "script_mismatch",
            },
        )


def _no_retry_when_blocked() -> None:
    """Make DSPy's retry loop give up at once on a blocked connection (else it sleeps 1+2+4 s first).

    DSPy 3.4 asks ``dspy.clients.execution.is_retryable_lm_error`` whether to retry; it sees our error
    as an ``LMTransportError`` (retryable). We wrap that one function; if a later DSPy moves it, the
    guard still blocks — only the retries' wait comes back.
    """
    try:
        from dspy.clients import execution
    except ImportError:
        return
    original = getattr(execution, "is_retryable_lm_error", None)
    if original is None or getattr(original, "_bridge_guarded", False):
        return

    def is_retryable_lm_error(error: Exception) -> bool:
        return _guard.blocked_in(error) is None and bool(original(error))

    is_retryable_lm_error._bridge_guarded = True  # type: ignore[attr-defined]
    is_retryable_lm_error._bridge_counted = getattr(original, "_bridge_counted", False)  # type: ignore[attr-defined]
    execution.is_retryable_lm_error = is_retryable_lm_error


def _named(module: Any) -> list[tuple[str, Any]]:
    return list(module.named_predictors()) if hasattr(module, "named_predictors") else []


def _final_signature(module: Any) -> Any:
    """The signature of the predictor whose outputs a signature program returns (``ChainOfThought``'s
    includes ``reasoning``), or ``None``."""
    predictors = module.named_predictors() if hasattr(module, "named_predictors") else []
    return predictors[-1][1].signature if predictors else getattr(module, "signature", None)
