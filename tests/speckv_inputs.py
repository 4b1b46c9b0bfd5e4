"""Inputs the SpecKV engine tests share: a prompt long enough to evict, a sliding-window
layout, and a tiny draft with a vocabulary of its own."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from specrag import LoadedModel

PROMPT = (
    "Documents: The capital of France is Paris. The river Seine flows through the city. "
    "Mount Everest is the highest mountain on Earth, and the Pacific is the largest ocean. "
    "In 1969 two astronauts walked on the Moon while a third one waited in orbit above them. "
    "Question: What is the capital of France? Answer: The"
)
MIXED = {
    "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
}


def other_tokenizer_model() -> LoadedModel:
    """A tiny Llama with its own, different byte-level vocabulary."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        [PROMPT, "answers questions about cities and rivers"],
        trainer=trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>", bos_token="</s>")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name="tiny-other-vocab")
