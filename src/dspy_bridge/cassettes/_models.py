"""The cassette schema as pydantic models: the reference for what a valid cassette is, and the source of
the messages that explain a broken one. ``_shape.well_formed`` answers the common case without importing
pydantic (a mock worker's first cassette answer must not pay for it); only a file it doubts comes here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dspy_bridge.protocol._taxonomy import ErrorType

__all__ = ["CassetteModel"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetaModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    created: str
    dspy_bridge_version: str
    dspy_version: str | None = None
    model: str | None = None
    recorded_against: str = "unknown"


class RequestModel(_Strict):
    command: Annotated[str, Field(min_length=1)]
    session: str | None = None
    program: dict[str, Any] | None = None
    model: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class ErrorModel(_Strict):
    type: ErrorType
    message: str
    retryable: bool = False
    details: dict[str, Any] | None = None


class ChunkModel(_Strict):
    field: str
    text: str


class ResponseModel(_Strict):
    ok: bool
    result: Any = None
    error: ErrorModel | None = None
    chunks: list[ChunkModel] | None = None  # a streamed answer's chunks, in order (optional: version 1 still)

    @model_validator(mode="after")
    def _result_xor_error(self) -> ResponseModel:
        if self.ok and self.error is not None:
            raise ValueError("a response with ok: true must not carry an error")
        if not self.ok and self.error is None:
            raise ValueError("a response with ok: false needs an error {type, message}")
        return self


class InteractionModel(_Strict):
    request: RequestModel
    response: ResponseModel


class CassetteModel(_Strict):
    version: int
    meta: MetaModel
    interactions: list[InteractionModel] = Field(default_factory=list)
