"""Functional core, Phase 1: context samplers, proposer prompts and parsing, feedback loop, recombination."""
