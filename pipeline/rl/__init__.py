"""Reinforcement learning on the generated tasks: the tasks dataset's rows (`tasks`) and TRL's GRPOTrainer
environment (`trl_env`, extra `trl`). The episode and its reward are the core's
(`apigen_mt.validators.task_env.TaskEnv`); these modules only map them onto a library's protocol."""
