"""User modules as DSPy users write them, imported by real workers in the programs tests (test_programs_*)."""
