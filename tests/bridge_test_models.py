"""Pydantic models a real worker may import in tests (``allowed_modules = ("bridge_test_models",)``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Leg(BaseModel):
    origin: str
    destination: str
    minutes: int


class Flight(BaseModel):
    """A flight with its legs."""

    number: str = Field(description="the IATA flight number")
    legs: list[Leg]
    price: float | None = None
    cabin: Literal["economy", "business"] = "economy"
    tags: dict[str, list[str]] = {}


NOT_A_MODEL = "just a string"
