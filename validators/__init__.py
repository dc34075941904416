"""Functional core: blueprint stage 1 (format, execution, policy), trajectory verification, and rejection
sampling with pass^k. The LLM review committee (Phase 1, stage 2) is `blueprints/review.py`.
"""
