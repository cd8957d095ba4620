"""The typed records the extraction produces (plain pydantic: importable without DSPy)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field


class LineItem(BaseModel):
    description: str
    quantity: int = Field(ge=0)
    unit_price: float


class Invoice(BaseModel):
    vendor: str
    invoice_number: str
    currency: Literal["EUR", "USD", "GBP"]
    total: float
    due_date: Optional[str] = Field(default=None, description="ISO date, if the invoice states one")  # noqa: UP045
    items: list[LineItem]
