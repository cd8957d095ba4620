"""The reliability suite: probes that attack the pool, the workers, the recorder and the cassette reader,
and count what they tried and what failed. ``python -m reliability --budget full --out docs/reliability.md``
(``nox -s reliability``) writes the figures; ``tests/test_reliability_slice.py`` runs a small budget."""
