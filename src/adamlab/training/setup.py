"""What a trial starts from: its task, its model (with LoRA) and its encoded training data, built the same way
for training, for the step-size estimate of a planned run, and for studies."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from ..encoding import Encoded, encode_causal, encode_classifier, pack_documents
from ..models import SCRATCH_MODELS, LoadedModel, apply_lora, check_sequence_length, load_model, model_head
from ..tasks import get_task
from ..tasks.base import Task
from .config import TrainConfig
from .stream import StreamedBatches


@dataclass
class TrialInputs:
    task: Task
    loaded: LoadedModel
    encoded: list[Encoded]  # the training examples, tokenised as the loss sees them (none when streamed)
    stream: StreamedBatches | None = None  # a streamed corpus's training rows, read as the steps ask for them


def prepare_trial(config: TrainConfig) -> TrialInputs:
    """Seed, load the task and model, apply LoRA and encode the training data. The global RNG is seeded first
    because LoRA's initialisation (the run's w0) draws from it."""
    from accelerate.utils import set_seed

    set_seed(config.seed)
    task = get_task(config.task, **config.task_args)
    if task.num_labels is None and model_head(config.model) == "classifier":
        raise ValueError(f"task {task.name!r} needs a causal LM; {config.model} is an encoder (it can only classify)")
    if config.model in SCRATCH_MODELS and config.lora is not None:
        raise ValueError(f"{config.model} is pre-trained from scratch, every parameter trained: pass --lora none")
    loaded = load_model(config.model, num_labels=task.num_labels, dtype=config.dtype,
                        quantize_4bit=config.quantize_4bit, seed=config.seed, tokenizer=config.tokenizer)
    check_sequence_length(loaded, config.max_seq_len)
    if config.lora is not None:
        loaded = apply_lora(loaded, config.lora)
    encode = encode_classifier if loaded.head == "classifier" else partial(encode_causal,
                                                                            mask_prompt=config.mask_prompt)
    if config.stream:  # validate() allows it for language modelling only; nothing is read before step 1
        return TrialInputs(task, loaded, [], StreamedBatches(task, config.train_source, config.train_limit,
                                                             loaded.tokenizer, config.max_seq_len, config.batch_size))
    # Subsets are drawn with a fixed seed, not the run's: every seed of a comparison sees the same data.
    examples = task.load("train", config.train_source, config.train_limit)
    if task.kind == "language_modeling":  # documents packed into rows of max_seq_len next-token targets
        return TrialInputs(task, loaded, pack_documents(loaded.tokenizer, [e.text for e in examples], config.max_seq_len))
    return TrialInputs(task, loaded, [encode(loaded.tokenizer, e, config.max_seq_len) for e in examples])
