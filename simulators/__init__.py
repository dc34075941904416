"""Functional core: sandboxed API environments, simulated participants and the episode loop. No I/O, no Ray."""
