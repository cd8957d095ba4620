"""Typed extraction: the program's output rebuilds into a valid ``Invoice`` with the right Python types."""

from __future__ import annotations

from dspy_app.models import Invoice, LineItem
from helpers import MOCK_AND_REAL, MODEL

TEXT = """\
Northwind Traders - Invoice NW-2024-117
Bill to: Contoso Ltd.
  2 x Ergonomic chair      @ 249.50 EUR
  1 x Standing desk        @ 610.00 EUR
Total due: 1109.00 EUR, payable by 2024-07-31.
"""

INVOICE = {
    "vendor": "Northwind Traders",
    "invoice_number": "NW-2024-117",
    "currency": "EUR",
    "total": 1109.0,
    "due_date": "2024-07-31",
    "items": [
        {"description": "Ergonomic chair", "quantity": 2, "unit_price": 249.5},
        {"description": "Standing desk", "quantity": 1, "unit_price": 610.0},
    ],
}


@MOCK_AND_REAL
def test_an_invoice_is_extracted_as_a_typed_model(bridge, lm_answers, kind):
    lm_answers({"invoice": INVOICE})
    bridge.configure_lm(MODEL)
    extractor = bridge.create_program(module="dspy_app.extract:InvoiceExtractor")

    invoice = bridge.execute(extractor, model=Invoice, text=TEXT)

    assert isinstance(invoice, Invoice)
    assert (invoice.vendor, invoice.invoice_number, invoice.currency) == ("Northwind Traders", "NW-2024-117", "EUR")
    assert isinstance(invoice.total, float) and invoice.total == 1109.0
    assert invoice.due_date == "2024-07-31"
    assert [type(item) for item in invoice.items] == [LineItem, LineItem]
    assert sum(item.quantity * item.unit_price for item in invoice.items) == invoice.total
