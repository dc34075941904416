"""Functional core: sandboxed API environments, simulated participants and the episode loop. No Ray, no
network; the only files read are a domain's data folder and its packaged policy (`domain.py`, `domains/`).
"""
