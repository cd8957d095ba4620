"""Route google-genai calls made by user code in a worker through the same cassette proxy as DSPy's.

A user module or tool may call Gemini directly with ``google.genai.Client()``. That SDK reads its base URL
from ``GOOGLE_GEMINI_BASE_URL`` and its key from ``GOOGLE_API_KEY``/``GEMINI_API_KEY`` when a client is
made (google-genai ``_base_url.get_base_url`` and ``_api_client.get_env_api_key``). When a session's LM goes
through a loopback proxy (the plugin's cassette proxy, whose key is a placeholder the proxy replaces), the
worker points those variables at it, so such calls are recorded, replayed offline and scrubbed like DSPy's.
Only the proxy's placeholder key is ever written to the environment (``_secrets.PLACEHOLDER_KEY``): a real key
given in ``configure_lm`` stays in the session's LM, and a session without a key never inherits one from here.
"""

from __future__ import annotations

import os
import threading
from urllib.parse import urlsplit

from dspy_bridge._secrets import PLACEHOLDER_KEY

__all__ = ["BASE_URL_ENV", "route_google_genai"]

BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
_KEY_ENV = "GEMINI_API_KEY"
_API_VERSION_ENV = "GOOGLE_GENAI_API_VERSION"
_API_VERSION_SUFFIX = "/v1beta"  # google-genai appends its own api version to the base URL
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_lock = threading.Lock()


def route_google_genai(model: str, api_base: object, api_key: object) -> bool:
    """Point google-genai at ``api_base`` if it is the loopback cassette proxy (its placeholder key) for a
    ``gemini/`` model; True if it did.

    Clients made after this call use it; the variables are process-wide, so the latest session's proxy
    wins (every session of a test run shares the one proxy).
    """
    if not model.startswith("gemini/") or not isinstance(api_base, str) or api_key != PLACEHOLDER_KEY:
        return False
    parts = urlsplit(api_base)
    if parts.scheme != "http" or parts.hostname not in _LOOPBACK:
        return False
    base = api_base.rstrip("/")
    if base.endswith(_API_VERSION_SUFFIX):
        base = base[: -len(_API_VERSION_SUFFIX)]
    with _lock:
        os.environ[BASE_URL_ENV] = base + "/"
        os.environ[_KEY_ENV] = api_key
        os.environ.pop("GOOGLE_API_KEY", None)  # google-genai prefers it over GEMINI_API_KEY
        os.environ.pop("GOOGLE_GENAI_USE_VERTEXAI", None)  # Vertex AI would bypass the base URL
        # google-genai 3.x defaults to v1; DSPy, the proxy's cassettes and the fake speak v1beta
        os.environ.setdefault(_API_VERSION_ENV, "v1beta")
    return True
