"""``python -m dspy_bridge.proxy``: the cassette proxy process (normally started by ``ProxyProcess``)."""

from __future__ import annotations

from dspy_bridge.proxy._server import main

raise SystemExit(main())
