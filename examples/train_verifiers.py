"""GRPO through the verifiers environment, on CPU: `python examples/train_verifiers.py RUN MODEL_DIR HUMAN_URL
HUMAN_MODEL [PARSER]`.

RUN holds `apigen-mt export RUN --format tasks`; MODEL_DIR is the local model to train, PARSER the tool-call
format of its chat template (default xlam; hermes for Qwen); the simulated human is any OpenAI-compatible endpoint
(HUMAN_URL ends in /v1). Needs the `verifiers` extra. `load_environment` is what a verifiers trainer (prime-rl on
GPUs) loads; here TRL's GRPOTrainer plays each rollout through it with the model being trained. One domain per
environment: the tasks are filtered to retail.
"""

import sys

if __name__ == "__main__":
    from datasets import load_from_disk
    from trl import GRPOConfig, GRPOTrainer

    from apigen_mt.pipeline.engines.openai_backend import OpenAIChatModel
    from apigen_mt.pipeline.engines.openai_config import OpenAIBackendConfig
    from apigen_mt.pipeline.rl.verifiers_env import load_environment
    from apigen_mt.pipeline.rl.verifiers_train import REWARD_WEIGHTS, reward_functions, task_keys, verifiers_rollout

    run, model_dir, human_url, human_model = sys.argv[1:5]
    parser = sys.argv[5] if len(sys.argv) > 5 else "xlam"
    human = OpenAIChatModel(OpenAIBackendConfig(base_url=human_url, model=human_model))
    tasks = load_from_disk(f"{run}/dataset-tasks")["train"].filter(lambda row: row["domain"] == "retail")
    env = load_environment(tasks, human_model=human)
    trainer = GRPOTrainer(
        model=model_dir,
        train_dataset=task_keys(env),
        rollout_func=verifiers_rollout(env, parser=parser),
        reward_funcs=reward_functions(),
        args=GRPOConfig(output_dir=f"{run}/grpo-verifiers", use_cpu=True, max_steps=10, reward_weights=REWARD_WEIGHTS),
    )
    trainer.train()
