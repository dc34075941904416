"""`apigen-mt eval`: a config's agent played against a task set through the run driver (as `trajectories`, but
stage 1 drops no task), then its report (evaluate.py, report.py); `--compare` puts eval runs side by side
(compare.py). The numbers themselves are the core's: `validators.pass_at_k`."""
