"""Pull a typed ``Invoice`` out of free text."""

from __future__ import annotations

import dspy

from dspy_app.models import Invoice


class ExtractInvoice(dspy.Signature):
    """Extract the invoice described in the text. Use null for a due date the text does not give."""

    text: str = dspy.InputField(desc="an invoice, an e-mail about one, or an OCR dump")
    invoice: Invoice = dspy.OutputField()


class InvoiceExtractor(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.extract = dspy.Predict(ExtractInvoice)

    def forward(self, text: str) -> dspy.Prediction:
        return self.extract(text=text)
