"""A small DSPy application: RAG over a local corpus, typed extraction, a ReAct agent, an optimized program."""
