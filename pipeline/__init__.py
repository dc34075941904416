"""Imperative shell: config, LLM backends, Ray actors, run driver, storage, export and the CLI."""
