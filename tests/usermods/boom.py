"""A user module whose constructor fails, quoting what it was given (as real code sometimes does)."""

from __future__ import annotations

import dspy


class Boom(dspy.Module):
    def __init__(self, token: str) -> None:
        super().__init__()
        raise RuntimeError(f"cannot use token {token}")
