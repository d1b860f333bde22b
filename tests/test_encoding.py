import pytest
import torch

from adamlab.encoding import (
    IGNORE_INDEX,
    PromptMaskError,
    collate,
    encode_causal,
    encode_prompt,
    render_prompt,
)
from adamlab.models import byte_level_tokenizer
from adamlab.tasks import get_task
from adamlab.training.order import ExampleOrder


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def example():
    return get_task("ag_news").load("train", limit=1)[0]


def test_only_the_answer_and_end_of_turn_are_trained_on(tokenizer, example):
    encoded = encode_causal(tokenizer, example, max_seq_len=4096)
    prompt = encode_prompt(tokenizer, example, max_seq_len=4096).input_ids
    assert encoded.input_ids[: len(prompt)] == prompt
    assert encoded.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    trained = tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])
    assert trained == example.target + "<|im_end|>\n"


def test_mask_prompt_false_trains_on_everything(tokenizer, example):
    encoded = encode_causal(tokenizer, example, max_seq_len=4096, mask_prompt=False)
    assert encoded.labels == encoded.input_ids


def test_truncation_keeps_the_answer_and_is_reported(tokenizer, example):
    encoded = encode_causal(tokenizer, example, max_seq_len=32)
    assert encoded.truncated and len(encoded.input_ids) == 32
    assert tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX]).startswith(example.target)


def test_a_template_whose_prompt_is_not_a_prefix_fails_loudly(example):
    tokenizer = byte_level_tokenizer()
    # Renders the generation prompt differently from the assistant turn, as a mismatched think-block template would.
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
    )
    with pytest.raises(PromptMaskError, match="not a prefix"):
        encode_causal(tokenizer, example, max_seq_len=4096)


def test_plain_layout_without_a_chat_template(example):
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = None
    assert render_prompt(tokenizer, example.messages).endswith("assistant: ")
    encoded = encode_causal(tokenizer, example, max_seq_len=4096)
    assert tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX]) == example.target + "<|im_end|>"


def test_collate_pads_left_or_right_and_masks_padding(tokenizer, example):
    a = encode_causal(tokenizer, example, max_seq_len=40)
    b = encode_causal(tokenizer, example, max_seq_len=30)
    right = collate([a, b], pad_id=tokenizer.pad_token_id)
    left = collate([a, b], pad_id=tokenizer.pad_token_id, padding_side="left")
    assert right["attention_mask"][1].tolist() == [1] * 30 + [0] * 10
    assert left["attention_mask"][1].tolist() == [0] * 10 + [1] * 30
    assert (right["labels"][1, 30:] == IGNORE_INDEX).all()
    assert torch.equal(left["input_ids"][1, 10:], torch.tensor(b.input_ids))


def test_example_order_is_a_function_of_the_step():
    order = ExampleOrder(10, batch_size=4, seed=3)
    batches = [order.batch(step) for step in range(5)]  # 20 examples: two full epochs
    assert sorted(batches[0] + batches[1] + batches[2][:2]) == list(range(10))
    assert sorted(batches[2][2:] + batches[3] + batches[4]) == list(range(10))
    assert batches[3] == ExampleOrder(10, batch_size=4, seed=3).batch(3)  # no history needed
    assert batches[0] != ExampleOrder(10, batch_size=4, seed=4).batch(0)
