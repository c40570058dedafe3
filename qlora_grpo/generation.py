"""The rollout `generation_kwargs` for each generation engine (transformers `generate` or vLLM).

TRL hands `generation_kwargs` to `GenerationConfig(**kw)` on the transformers path and to vLLM's
`SamplingParams(**kw)` on the vLLM path (`fast_inference`, colocated). `SamplingParams` is a msgspec
struct: an unknown key (such as transformers' `suppress_tokens` or `min_new_tokens`) raises
"Unexpected keyword argument" at the first step. So the vision placeholder tokens are suppressed
with `suppress_tokens` for transformers and with a -100 `logit_bias` (vLLM's bound, an effective ban)
for vLLM, and keys vLLM does not know are refused before any model is loaded.
"""

from __future__ import annotations

from contextlib import contextmanager

from qlora_grpo.errors import UserError

#: Fields of vLLM's `SamplingParams`, the keys `SamplingParams(**kw)` accepts, transcribed from
#: vllm/sampling_params.py of vllm-project/vllm commit 00388f6573cc (a recent main; that it equals the
#: 0.33.0 tag requirements-vllm.txt pins is not verified: check again when vLLM is installed).
#: Private fields (leading underscore) are left out: they are set by vLLM itself.
VLLM_SAMPLING_PARAMS_FIELDS = frozenset({
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k",
    "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "prompt_logprob_token_ids", "prompt_logprob_start", "logprob_token_ids",
    "flat_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
    "include_stop_str_in_output", "output_kind", "stream_interval", "skip_clone",
    "output_text_buffer_length", "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args",
    "bad_words", "skip_reading_prefix_cache", "thinking_token_budget", "repetition_detection",
    "routed_experts_prompt_start", "trace_decode_token_ids",
})

#: vLLM clips logit biases to [-100, 100] (`SamplingParams.from_optional`); -100 removes a token in practice.
VLLM_BAN_BIAS = -100.0

#: transformers `generate` names a user may carry over from the hf backend, and vLLM's name for each.
_HF_TO_VLLM = {"min_new_tokens": "min_tokens", "max_new_tokens": "max_tokens", "suppress_tokens": "logit_bias"}


def check_vllm_generation_kwargs(user_kwargs: dict | None) -> None:
    """UserError naming every `generation_kwargs` key that vLLM's SamplingParams would refuse."""
    unknown = sorted(k for k in (user_kwargs or {}) if k not in VLLM_SAMPLING_PARAMS_FIELDS)
    if unknown:
        hints = "; ".join(f"{k} -> {_HF_TO_VLLM[k]}" for k in unknown if k in _HF_TO_VLLM)
        raise UserError(f"generation_kwargs {', '.join(unknown)}: not vLLM SamplingParams fields (fast_inference "
                        f"builds SamplingParams(**generation_kwargs)); use vLLM's names{': ' + hints if hints else ''}, "
                        "or set fast_inference: false")


@contextmanager
def left_padding(processor):
    """Pad on the left inside the block, whatever the processor was set to (restored after).

    Batched greedy generation needs left padding: on right-padded prompts the shorter ones continue
    after pad tokens and give wrong answers without any error. Unsloth's patched trainers set
    `processor.tokenizer.padding_side = "right"` and leave it so.
    """
    tok = getattr(processor, "tokenizer", processor)
    if not hasattr(tok, "padding_side"):  # a processor that does not pad (a test stand-in)
        yield processor
        return
    before = tok.padding_side
    tok.padding_side = "left"
    try:
        yield processor
    finally:
        tok.padding_side = before


def rollout_generation_kwargs(user_kwargs: dict | None, vision_token_ids: list[int], vllm: bool) -> dict:
    """The config's `generation_kwargs` plus the ban on vision placeholder tokens, in the engine's terms.

    A generated `<|image_pad|>` would make the next forward fail ("Image features and image tokens do
    not match"), so those ids never come out of a rollout.
    """
    kw = dict(user_kwargs or {})
    if not vllm:
        return {**kw, "suppress_tokens": sorted(set(kw.get("suppress_tokens") or []) | set(vision_token_ids))}
    check_vllm_generation_kwargs(kw)
    bias = {int(k): float(v) for k, v in (kw.get("logit_bias") or {}).items()}
    bias.update({int(i): VLLM_BAN_BIAS for i in vision_token_ids})
    return {**kw, "logit_bias": bias}
