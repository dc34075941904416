"""Functional core: format, execution, policy and LLM-review validators, and trajectory verification."""
