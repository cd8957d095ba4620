"""Show an answer while it streams: the text so far and a running word count, fed chunk by chunk.

With DSPy's own streaming::

    stream = dspy.streamify(rag, stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")])
    view = LiveAnswer()
    async for item in stream(question="Who painted the Mona Lisa?"):
        if isinstance(item, dspy.streaming.StreamResponse):
            view.feed(item.signature_field_name, item.chunk)
    view.close()

A chunk may end in the middle of a word (or be a single character), so a word is counted when it starts, across
chunk boundaries — never once per chunk. And when the model's chunks are fine, DSPy 3.4's ``StreamListener`` lets
the chat adapter's end marker (``[[ ## completed ## ]]``) through as answer text: the view holds back anything that
may be the start of that marker until it knows, so the marker is neither shown nor counted.
"""

from __future__ import annotations

END_MARKER = "[[ ## completed ## ]]"


class LiveAnswer:
    def __init__(self, field: str = "answer") -> None:
        self.field = field
        self.words = 0
        self._shown: list[str] = []
        self._held = ""  # the tail that may be the start of END_MARKER
        self._ended = False
        self._in_word = False

    def feed(self, field: str, chunk: str) -> None:
        """Take one streamed chunk; chunks of other output fields (the reasoning) are ignored."""
        if field != self.field or self._ended:
            return
        pending = self._held + chunk
        if END_MARKER in pending:
            self._show(pending[: pending.index(END_MARKER)])
            self._held, self._ended = "", True
            return
        keep = next(
            (n for n in range(min(len(pending), len(END_MARKER)), 0, -1) if END_MARKER.startswith(pending[-n:])), 0
        )
        self._show(pending[: len(pending) - keep])
        self._held = pending[len(pending) - keep :]

    def close(self) -> None:
        """The stream ended: what was held back was not the marker after all."""
        self._show(self._held)
        self._held, self._ended = "", True

    @property
    def text(self) -> str:
        """The answer shown so far, without the whitespace around it."""
        return "".join(self._shown).strip()

    def _show(self, text: str) -> None:
        self._shown.append(text)
        for char in text:
            if char.isspace():
                self._in_word = False
            elif not self._in_word:
                self._in_word = True
                self.words += 1
