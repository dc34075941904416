"""The models a run uses: vLLM engines on Ray, OpenAI-compatible endpoints, scripted test doubles,
the embedded local models, and what each family's chat template and endpoint accept."""
