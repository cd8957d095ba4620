"""Program definitions in canonical form, and their deterministic ids.

Worker, pool and cassettes all need the same answer to "is this the same program?", so the
rule lives in the contract: whitespace in signatures and key order do not matter, and the id is
a hash of the canonical definition — never random or time-based, because cassettes must replay.
Pure functions over plain data; no pydantic (the worker imports this at start-up).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ADAPTERS",
    "PROGRAM_TYPES",
    "canonical_json",
    "canonical_program",
    "normalize_signature",
    "program_id_for",
    "state_digest",
]

PROGRAM_TYPES = ("predict", "chain_of_thought")
ADAPTERS = ("chat", "json")  # "chat" is the default and never part of a definition
_SPACES = r"\s+"


def normalize_signature(signature: Any) -> Any:
    """Collapse whitespace in string signatures ("q ->  a" == "q -> a"); canonicalise structured ones."""
    import re  # lazily, like json below: a mock worker says hello before it needs either

    if isinstance(signature, str):
        # Quoted text (Literal choices) is kept verbatim: 'x,y' and 'x, y' are different choices.
        pieces = re.split(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", signature.strip())
        for index in range(0, len(pieces), 2):  # even indexes are outside quotes
            text = re.sub(_SPACES, " ", pieces[index])
            text = re.sub(r"\s*->\s*", " -> ", text)
            text = re.sub(r"\s*:\s*", ": ", text)
            pieces[index] = re.sub(r"\s*,\s*", ", ", text)
        return "".join(pieces)
    if isinstance(signature, dict):
        out = dict(signature)
        if isinstance(out.get("instructions"), str):
            out["instructions"] = re.sub(_SPACES, " ", out["instructions"].strip())
        return out
    return signature


def canonical_program(args: dict[str, Any]) -> dict[str, Any]:
    """The parts of a create_program request that define the program (what the id hashes).

    Signature programs: signature, program_type, instructions, and — only when given — demos,
    state_digest and a non-default adapter, so programs that use none of them keep their old ids.
    Module programs: module, kwargs, state_digest (never the state itself) and a non-default adapter.
    """
    import re

    adapter = args.get("adapter")
    state = args.get("state")
    if args.get("module") is not None:
        definition: dict[str, Any] = {"module": args["module"], "kwargs": args.get("kwargs") or {}}
    else:
        definition = {
            "signature": normalize_signature(args.get("signature")),
            "program_type": args.get("program_type", "predict"),
        }
        instructions = args.get("instructions")
        if isinstance(instructions, str) and instructions.strip():
            definition["instructions"] = re.sub(_SPACES, " ", instructions.strip())
        if args.get("demos"):
            definition["demos"] = args["demos"]
    if state is not None:
        definition["state_digest"] = state_digest(state)
    if adapter is not None and adapter != "chat":
        definition["adapter"] = adapter
    return definition


def _sha256_hex(data: bytes) -> str:
    """SHA-256 from CPython's built-in module when there is one: ``hashlib`` loads OpenSSL (~3 ms of a mock
    worker's first answer); the digest is the same."""
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # Python 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.11
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def state_digest(state: Any) -> str:
    """16 hex digits of sha256 over the canonical JSON of a saved state (what ``Module.save`` wrote)."""
    return _sha256_hex(canonical_json(state).encode())[:16]


def canonical_json(value: Any) -> str:
    """Stable JSON text: sorted keys, no whitespace, bytes and tuples made JSON-safe."""
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_fallback)


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def program_id_for(args: dict[str, Any]) -> str:
    """The caller's ``id`` if given, else ``prog_`` + 16 hex digits of the definition's hash."""
    explicit = args.get("id")
    if isinstance(explicit, str) and explicit:
        return explicit
    digest = _sha256_hex(canonical_json(canonical_program(args)).encode())
    return f"prog_{digest[:16]}"
