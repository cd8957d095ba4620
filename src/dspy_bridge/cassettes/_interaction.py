"""``Interaction``: one recorded request and its response, with its position in the cassette.

Its own module because both ``Cassette`` (which holds them) and ``Replay`` (which plays them)
need it, and ``Replay`` must not import ``Cassette``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off a mock worker's replay path
if TYPE_CHECKING:
    from typing import Any

from dspy_bridge.cassettes._match import REPLAYED_COMMANDS

__all__ = ["Interaction"]


class Interaction:
    """One recorded request and its response, with its position in the file."""

    __slots__ = ("index", "request", "response")

    def __init__(self, index: int, request: dict[str, Any], response: dict[str, Any]) -> None:
        self.index = index
        self.request = request
        self.response = response

    @property
    def command(self) -> str:
        return str(self.request["command"])

    @property
    def replayable(self) -> bool:
        """Mock workers answer this command from cassettes (the rest they handle themselves)."""
        return self.command in REPLAYED_COMMANDS

    def as_dict(self) -> dict[str, Any]:
        return {"request": self.request, "response": self.response}

    def __repr__(self) -> str:
        return f"<Interaction #{self.index} {self.command} session={self.request.get('session')!r}>"
