"""A tiny random-weight Llama for tests and benchmarks of the vLLM backend. Never a model for real data.

Two layers, head dimension 64 (vLLM's CPU attention kernels need at least that), a byte-level BPE
tokenizer trained on the fly from a small built-in corpus, and a ChatML chat template that takes
`tools=`. Its replies are noise; under structured outputs they are still valid JSON, which is what the
engine tests need. Building it takes a second or two and needs no network.
"""

from __future__ import annotations

import json
from pathlib import Path

TEST_MODEL_MARKER = "apigen_mt_tiny_test_model.json"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML with the tools listed in the system turn and earlier calls written as xLAM JSON lists, so the
# backend's `tools=` path (not the xLAM fallback) is what this model exercises.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' %}"
    "{%- set system_text = messages[0].content %}{%- set rest = messages[1:] %}"
    "{%- else %}{%- set system_text = 'You are a helpful assistant.' %}{%- set rest = messages %}{%- endif %}"
    "{{- '<|im_start|>system\\n' + system_text }}"
    "{%- if tools %}"
    '{{- \'\\n\\n# Tools\\nReply with a JSON list of calls [{"name": ..., "arguments": {...}}]'
    " or with plain text.' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- for message in rest %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.tool_calls %}{{- message.tool_calls | map(attribute='function') | list | tojson }}"
    "{%- else %}{{- message.content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _training_corpus() -> list[str]:
    """Enough English, JSON and digits that common words and JSON punctuation get their own tokens."""
    words = (
        "the user wants to cancel exchange return modify order item address payment method gift card "
        "credit paypal reservation flight cabin baggage passenger status pending delivered processed "
        "name arguments content tool call reply please thank you can I help with your today what is "
        "email zip city state country price quantity product id options color size true false null"
    ).split()
    lines = [" ".join(words[i : i + 8]) for i in range(0, len(words), 3)]
    lines += [
        json.dumps({"name": word, "arguments": {"order_id": f"#W{1000 + index}", "count": index}})
        for index, word in enumerate(words)
    ]
    lines += [" ".join(str(n) for n in range(k, k + 40)) for k in range(0, 400, 40)]
    return lines * 4


def build_tiny_test_model(path: str | Path, *, seed: int = 0) -> Path:
    """Write the tiny test model (weights, config, tokenizer, chat template) to `path`; reuse one already there."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    target = Path(path)
    if (target / TEST_MODEL_MARKER).is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL_TOKENS,
        # Every byte must be a token, or structured outputs could not spell some JSON.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(target)

    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(target)
    generation = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id)
    generation.save_pretrained(target)
    # Written last: a folder interrupted half-way is rebuilt on the next call.
    (target / TEST_MODEL_MARKER).write_text(json.dumps({"kind": "tiny random-weight test model", "seed": seed}))
    return target
