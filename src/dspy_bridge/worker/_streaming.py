"""Streaming on the worker side: chunk frames before the final Response of a ``stream: true`` request.

    serve() ── execute_program {stream: true} ──▶ context[CHUNK_SINK] = ChunkSink(writer, request id)
                                                        │
      real:  dspy.streamify(module, StreamListener per output field of every predictor) ─▶ sink(field, text)
      mock:  the recorded ``chunks`` of the cassette answer, frame by frame ─────────────▶ sink(field, text)
             (a recording made without streaming, a stub, a synthetic answer: one chunk per output field)
                                                        │
    {"type": "chunk", "id": <request id>, "field": <output field>, "text": <text>}  ── frames fd ──▶ host

Chunks are written by the thread running the request, before its Response, so they leave in the order
they were made and always ahead of the Response (``FrameWriter`` writes each frame whole).
A field that produced no chunk (a cached LM answer, a non-string field DSPy's listeners skip) is sent
once, whole, after the streamed ones: every output field arrives as at least one chunk.
Nothing heavy at import: the mock worker loads this at start-up; DSPy is imported by the real worker only.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself stays off the mock worker's start-up path
if TYPE_CHECKING:
    from typing import Any

    from dspy_bridge.protocol._streams import FrameWriter

__all__ = ["CHUNK_SINK", "ChunkSink", "chunk_text", "rechunk", "run_streamed"]

#: Private context key under which the loop hands a streamed request's handler its ``ChunkSink``.
CHUNK_SINK = "_chunk_sink"


def chunk_text(value: Any) -> str:
    """The text of a whole output value sent as one chunk: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, ensure_ascii=False)


def rechunk(chunks: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The same text per field, in the same field order, cut into ``size``-character chunks.

    Consecutive chunks of one field are joined first, so a recorded stream of 3 chunks replays as
    ``len(text)`` chunks with ``size=1``: a stream consumer must not care where the cuts fall.
    """
    runs: list[list[str]] = []  # [field, text] per run of consecutive chunks of one field
    for chunk in chunks:
        field, text = str(chunk["field"]), str(chunk["text"])
        if runs and runs[-1][0] == field:
            runs[-1][1] += text
        else:
            runs.append([field, text])
    return [
        {"field": field, "text": text[start : start + size]}
        for field, text in runs
        for start in range(0, max(len(text), 1), size)
    ]


class ChunkSink:
    """Writes the chunk frames of one request; ``fields`` are those that got at least one chunk.

    ``size`` (a test's ``stream_chunks=N``) re-cuts replayed and whole-field chunks into N characters.
    """

    __slots__ = ("fields", "replayed", "request_id", "sent", "size", "writer")

    def __init__(self, writer: FrameWriter, request_id: int) -> None:
        self.writer = writer
        self.request_id = request_id
        self.sent = 0
        self.fields: set[str] = set()
        self.replayed = False
        self.size: int | None = None

    def __call__(self, field: str, text: str) -> None:
        self.writer.write({"type": "chunk", "id": self.request_id, "field": field, "text": text})
        self.sent += 1
        self.fields.add(field)

    def replay(self, chunks: list[dict[str, Any]]) -> None:
        """Send recorded chunks (``[{field, text}, ...]``) one frame each, in order."""
        self.replayed = True
        for chunk in rechunk(chunks, self.size) if self.size else chunks:
            self(str(chunk["field"]), str(chunk["text"]))

    def complete(self, outputs: Any) -> None:
        """Send every output field that got no chunk yet as one chunk (in the outputs' order)."""
        if isinstance(outputs, dict):
            whole = [
                {"field": str(field), "text": chunk_text(value)}
                for field, value in outputs.items()
                if str(field) not in self.fields
            ]
            for chunk in rechunk(whole, self.size) if self.size else whole:
                self(chunk["field"], chunk["text"])


def run_streamed(dspy: Any, module: Any, inputs: dict[str, Any], sink: ChunkSink) -> Any:
    """Run ``module(**inputs)`` under ``dspy.streamify``, sending each listener chunk to ``sink``.

    One ``StreamListener`` per output field of every predictor (named explicitly, so a field name shared
    by two predictors is no error; ``allow_reuse`` for modules that call a predictor more than once).
    Runs on the calling (handler) thread's own event loop; ``dspy.context`` and ``track_usage`` carry over
    through contextvars. Fields no listener streamed are then sent whole; returns the final ``Prediction``.
    """
    import asyncio

    from dspy.streaming import StreamListener, StreamResponse

    from dspy_bridge.worker._dspy_types import plain

    listeners = [
        StreamListener(field, predict=predictor, predict_name=name, allow_reuse=True)
        for name, predictor in module.named_predictors()
        for field in predictor.signature.output_fields
    ]
    streaming = dspy.streamify(module, stream_listeners=listeners, async_streaming=True)

    async def consume() -> Any:
        final = None
        async for item in streaming(**inputs):
            if isinstance(item, StreamResponse):
                if item.chunk:
                    sink(item.signature_field_name, item.chunk)
            elif isinstance(item, dspy.Prediction):
                final = item
        return final

    prediction = asyncio.run(consume())
    if prediction is None:  # streamify always ends with the Prediction; never guess silently
        raise RuntimeError("dspy.streamify ended without a final Prediction")
    sink.complete({str(key): plain(value) for key, value in prediction.toDict().items()})
    return prediction
