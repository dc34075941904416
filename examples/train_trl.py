"""GRPO with TRL on a run's tasks, on CPU: `python examples/train_trl.py RUN MODEL_DIR HUMAN_URL HUMAN_MODEL`.

RUN holds `apigen-mt export RUN --format tasks`; MODEL_DIR is the local model to train (a chat template TRL can
parse tool calls of, e.g. Qwen3's); the simulated human is any OpenAI-compatible endpoint (HUMAN_URL ends in /v1,
e.g. `vllm serve HUMAN_MODEL`). Needs the `trl` extra. One domain per environment: the tasks are filtered to retail.
"""

import sys

if __name__ == "__main__":
    from datasets import load_from_disk
    from trl import GRPOConfig, GRPOTrainer

    from apigen_mt.pipeline.engines.openai_backend import OpenAIChatModel
    from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
    from apigen_mt.pipeline.rl.trl_env import REWARD_WEIGHTS, reward_functions, trl_environment

    run, model_dir, human_url, human_model = sys.argv[1:5]
    human = OpenAIChatModel(OpenAIBackendConfig(base_url=human_url, model=human_model))
    tasks = load_from_disk(f"{run}/dataset-tasks")["train"].filter(lambda row: row["domain"] == "retail")
    trainer = GRPOTrainer(
        model=model_dir,
        train_dataset=tasks,
        environment_factory=trl_environment("retail", human),
        reward_funcs=reward_functions(),
        args=GRPOConfig(output_dir=f"{run}/grpo", use_cpu=True, max_steps=10, reward_weights=REWARD_WEIGHTS),
    )
    trainer.train()
