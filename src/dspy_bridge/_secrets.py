"""Which environment variables hold secrets, and where the host's Gemini key is read from.

A leaf (stdlib only) so that the pytest plugin, the proxy's host-side client and, later, the pool
(which strips keys from worker environments) share one definition:

* ``KEY_ENV_VARS``: where the host's Gemini key comes from, in order (first non-empty wins);
  ``api_key_from_env`` is that lookup.
* ``PROVIDER_KEY_ENV_VARS``: the other providers' credentials DSPy (through LiteLLM) reads.
* ``is_secret_env_name``: any of those, or any name ending ``_API_KEY``. Deliberately no wider
  (not every ``*_TOKEN`` is a secret a worker must lose).
* ``child_environment``: the one builder of a child's *complete* environment (every worker, the zygote,
  the daemon, the proxy): the host's environment minus every secret name (those above plus the user's
  ``secret_env``), plus our own variables, plus what the user set explicitly (which wins, keys included).
  Children never get ``{**os.environ, ...}``.
* ``secret_values`` / ``redact_values``: the values themselves, removed by exact match from everything
  the host writes (cassettes, test reports), whatever their shape.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off the start-up path of everything that imports this
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "KEY_ENV_VARS",
    "MIN_SECRET_LENGTH",
    "PLACEHOLDER_KEY",
    "PROVIDER_KEY_ENV_VARS",
    "SECRET_MARK",
    "api_key_from_env",
    "child_environment",
    "is_secret_env_name",
    "key_env_hint",
    "redact_values",
    "secret_values",
]

#: Host environment variables the Gemini key is read from, first non-empty wins.
KEY_ENV_VARS: tuple[str, ...] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

#: Other providers' credentials LiteLLM reads (those not ending ``_API_KEY`` matter most here).
PROVIDER_KEY_ENV_VARS: tuple[str, ...] = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_AD_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_BEARER_TOKEN_BEDROCK",
    "COHERE_API_KEY",
    "CO_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "TOGETHERAI_API_KEY",
    "TOGETHER_AI_TOKEN",
    "FIREWORKS_AI_API_KEY",
    "FIREWORKS_AI_TOKEN",
    "DEEPSEEK_API_KEY",
    "XAI_API_KEY",
    "OPENROUTER_API_KEY",
    "PERPLEXITYAI_API_KEY",
    "HUGGINGFACE_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "REPLICATE_API_TOKEN",
    "DATABRICKS_API_KEY",
    "DATABRICKS_TOKEN",
    "WATSONX_APIKEY",
    "WATSONX_TOKEN",
    "CEREBRAS_API_KEY",
    "VOYAGE_API_KEY",
)

_NAMED = frozenset(KEY_ENV_VARS + PROVIDER_KEY_ENV_VARS)


def api_key_from_env(environ: Mapping[str, str]) -> str | None:
    """The host's Gemini key: the first non-empty ``KEY_ENV_VARS`` entry of ``environ``, else ``None``."""
    return next((environ[name] for name in KEY_ENV_VARS if environ.get(name)), None)


def is_secret_env_name(name: str) -> bool:
    """Does an environment variable of this name hold a provider credential (never given to workers)?"""
    upper = name.upper()
    return upper in _NAMED or upper.endswith("_API_KEY")


def key_env_hint() -> str:
    """How messages name the variables the key is read from: ``GEMINI_API_KEY (or GOOGLE_API_KEY)``."""
    first, *others = KEY_ENV_VARS
    return f"{first} (or {', '.join(others)})" if others else first


#: Shorter values are not treated as secrets: replacing them would mangle ordinary text.
MIN_SECRET_LENGTH = 8
#: The key workers are given for the cassette proxy. The proxy drops whatever key a worker sends and adds the
#: real one only on the upstream call, so a worker never holds a secret; this value is never one.
PLACEHOLDER_KEY = "dspy-bridge-placeholder-key"
SECRET_MARK = "<REDACTED:secret>"


def secret_values(environ: Mapping[str, str], extra_names: Iterable[str] = ()) -> tuple[str, ...]:
    """The values of every secret-named variable in ``environ`` (and of ``extra_names``), longest first.

    These are removed by exact match wherever they could be written — cassettes, test reports — whatever
    their shape, so a key that matches no known pattern is still caught.
    """
    extra = {name.upper() for name in extra_names}
    found = {
        value
        for name, value in environ.items()
        if (is_secret_env_name(name) or name.upper() in extra) and len(value) >= MIN_SECRET_LENGTH
    }
    return tuple(sorted(found, key=len, reverse=True))


def redact_values(text: str, secrets: Iterable[str], mark: str = SECRET_MARK) -> str:
    """``text`` with every exact occurrence of a secret replaced by ``mark`` (longest secrets first)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, mark)
    return text


def child_environment(
    environ: Mapping[str, str],
    *,
    secret_env: Iterable[str] = (),
    ours: Mapping[str, str] | None = None,
    explicit: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a child process: never the host's as it is.

    ``environ`` (the host's) minus every ``is_secret_env_name`` and every name in ``secret_env``
    (compared case-insensitively: dropping too much beats leaking), then ``ours`` (the variables the
    child needs from us), then ``explicit`` (what the user asked for by name: it wins, even a key).
    """
    dropped = {name.upper() for name in secret_env}
    env = {
        name: value for name, value in environ.items() if not is_secret_env_name(name) and name.upper() not in dropped
    }
    env.update(ours or {})
    env.update(explicit or {})
    return env
