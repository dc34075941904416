"""The run driver and both phases: the items a run folder lacks fed to Ray worker actors, the worker-side proposal
and trial, the Phase 2 sources, progress."""
