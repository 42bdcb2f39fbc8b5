"""LLM providers behind one interface (see base.py). Implemented by the provider work."""
