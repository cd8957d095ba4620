"""What every test module shares: the model, and the parametrisation that runs a test both ways."""

import pytest

MODEL = "gemini/gemini-2.5-flash"

# Every test runs twice: on mock workers (bridge cassette, milliseconds) and on real DSPy workers (HTTP cassette).
MOCK_AND_REAL = pytest.mark.parametrize(
    "kind",
    [pytest.param("mock", marks=pytest.mark.mock), pytest.param("integration", marks=pytest.mark.integration)],
)
