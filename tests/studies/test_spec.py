"""Study specs: what they accept, and errors that name the file and line of the mistake."""

import pytest

from adamlab.studies import SpecError, expand_trials, load_spec, parse_spec

from .tiny import TINY_SPEC


def check(text: str, tmp_path):
    """Parse and expand, as `adamlab validate` does."""
    return expand_trials(parse_spec(text, "study.yaml"), tmp_path)


def test_the_tiny_spec_expands_every_setting_into_the_configs(tmp_path):
    trials = check(TINY_SPEC, tmp_path)
    assert [(t.arm, t.schedule, t.seed) for t in trials] == [
        ("adam", "constant", 0), ("adamw-cosine", "cosine", 0), ("adam", "constant", 1), ("adamw-cosine", "cosine", 1)]
    config = trials[1].config
    assert (config.model, config.task, config.optimizer, config.lr, config.optimizer_args) == (
        "tiny-llama", "ag_news", "adamw", 1e-2, {"weight_decay": 0.01})
    assert (config.steps, config.batch_size, config.max_seq_len, config.train_limit, config.eval_limit,
            config.eval_batch_size, config.checkpoint_every) == (3, 4, 96, 32, 8, 8, 1)
    assert (config.lora.r, config.lora.alpha) == (4, 8)


@pytest.mark.parametrize(
    "old,new,line,fragment",
    [
        ("seeds:", "seedz:", 8, "unknown key 'seedz' in the study. Did you mean 'seeds'?"),
        ("    hparams:", "    hparam:", 21, "unknown key 'hparam' in arm 'adamw-cosine'. Did you mean 'hparams'?"),
        ("eval: {limit: 8,", "eval: {limimt: 8,", 14, "Did you mean 'limit'?"),
        ("optimizer: adamw", "optimizer: adamww", 20, "Unknown optimizer 'adamww'. Did you mean 'adamw'"),
        ("{weight_decay: 0.01}", "{weight_decai: 0.01}", 21, "Unknown hyperparameter 'weight_decai'"),
        ("{weight_decay: 0.01}", "{betas: [0.9, 1.5]}", 21, "beta"),
        ("[cosine]", "[cosinus]", 22, "Unknown schedule 'cosinus'. Did you mean 'cosine'?"),
        ("[ag_news]", "[agnews]", 7, "unknown task 'agnews'. Did you mean 'ag_news'?"),
        ("[tiny-llama]", "[./no/such/model]", 6, "model folder ./no/such/model does not exist"),
        ("lr: 1e-2", "lr: -1e-2", 15, "learning rate must be a finite number > 0"),
        ("lr: 1e-2", "lr: fast", 15, "lr must be a number, a list of numbers or 'dds x0.5, x1, x2'"),
        ("lr: 1e-2", "lr: dds 0.5, 1", 15, "dds multiples are written x0.5, x1, x2"),
        ("steps: 3", "steps: 0", 9, "total_steps must be an int >= 1"),
        ("steps: 3", "steps: three", 9, "steps must be an integer"),
        ("seeds: [0, 1]", "seeds: [0, 0]", 8, "seed 0 is listed twice"),
        ("eval: {limit: 8,", "eval: {limit: 0,", 14, "eval_limit must be an int >= 1"),
        ("train: {limit: 32,", "train: {limit: 32, grad_accum: 3,", 10, "not a multiple of grad_accum 3"),
        ("train: {limit: 32,", "train: {limit: 32, mixed_precision: fp8,", 13, "mixed_precision must be one of"),
        ("train: {limit: 32,", "train: {limit: 32, mask_prompt: yes,", 13, "mask_prompt must be true or false"),
        ("lora: {r: 4, alpha: 8}", "lora: {r: 0, alpha: 8}", 12, "invalid LoRA settings"),
        ("[cosine]", "[{name: cosine, warmup_steps: 10}]", 22, "warmup_steps must be an int in [0, total_steps)"),
        ("[cosine]", "[cosine, linear, sqrt, step]", 19, "tries 4 configurations (4 schedules x 1 learning rates), "
                                                         "more than budget.trials_per_arm = 3"),
        ("name: adamw-cosine", "name: adam", 19, "arm name 'adam' is listed twice"),
        ("    optimizer: adamw\n    hparams: {weight_decay: 0.01}\n    schedules: [cosine]\n",
         "    optimizer: adam\n", 19, "arm 'adamw-cosine' repeats a trial of arm 'adam'"),
        ("budget:\n  search_space: one fixed learning rate per arm\n", "budget:\n", 3,
         "budget is missing the required key 'search_space'"),
        ("steps: 3", "steps: 3\nsteps: 4", 10, "duplicate key 'steps' (first given on line 9)"),
        ("lora: {r: 4, alpha: 8}", "lora: {r: 4, alpha: 8", 13, "malformed YAML"),
        ("arms:\n", "arms:\n  - name: [unclosed\n", 18, "malformed YAML"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, old, new, line, fragment):
    assert old in TINY_SPEC
    with pytest.raises(SpecError) as caught:
        check(TINY_SPEC.replace(old, new, 1), tmp_path)
    assert str(caught.value).startswith(f"study.yaml:{line}: "), str(caught.value)
    assert fragment in str(caught.value)


def test_yaml_12_scalars(tmp_path):
    """`no` is a string (mixed_precision: no), `2e-4` a number; PyYAML's YAML 1.1 reads them as False and text."""
    text = TINY_SPEC.replace("lr: 1e-2", "lr: [2e-4, 1.5e-3]").replace("train: {", "train: {mixed_precision: no, ")
    text = text.replace("trials_per_arm: 3", "trials_per_arm: 2")
    trials = check(text, tmp_path)
    assert sorted({t.lr for t in trials}) == [2e-4, 1.5e-3]
    assert {t.config.mixed_precision for t in trials} == {"no"}


def test_lora_none_is_full_fine_tuning(tmp_path):
    trials = check(TINY_SPEC.replace("lora: {r: 4, alpha: 8}", "lora: none"), tmp_path)
    assert {t.config.lora for t in trials} == {None}


def test_per_task_and_per_arm_overrides(tmp_path):
    text = (TINY_SPEC
            .replace("tasks: [ag_news]", "tasks:\n  - ag_news\n  - {name: squad, steps: 2, eval: {limit: 4}, "
                                         "options: {max_new_tokens: 8}}")
            .replace("    optimizer: adam\n", "    optimizer: adam\n    lr: [1e-3, 3e-3]\n"
                                                 "    schedules: [constant, {name: step, args: {step_size: 1}}]\n", 1)
            .replace("trials_per_arm: 3", "trials_per_arm: 4"))
    trials = check(text, tmp_path)
    squad = [t for t in trials if t.task == "squad"]
    assert {(t.config.steps, t.config.eval_limit, t.config.task_args["max_new_tokens"]) for t in squad} == {(2, 4, 8)}
    adam = {(t.schedule, t.lr) for t in trials if t.arm == "adam"}
    assert adam == {("constant", 1e-3), ("constant", 3e-3), ("step(step_size=1)", 1e-3), ("step(step_size=1)", 3e-3)}
    assert len(trials) == 2 * 2 * (4 + 1)


def test_dds_multiples_with_a_published_alpha(tmp_path):
    text = TINY_SPEC.replace("lr: 1e-2", "lr: dds x0.5, x1, x2") + "dds:\n  alpha:\n    tiny-llama: {ag_news: 4e-3}\n"
    spec = parse_spec(text, "study.yaml")
    assert str(spec.arms[0].lr) == "dds x0.5, x1, x2"
    trials = expand_trials(spec, tmp_path)
    adam = [t for t in trials if t.arm == "adam" and t.seed == 0]
    assert [t.lr for t in adam] == [2e-3, 4e-3, 8e-3]
    assert [t.stepsize_estimate for t in adam] == [
        {"source": "published", "alpha": 4e-3, "multiplier": m} for m in (0.5, 1.0, 2.0)]


def test_an_adam_dds_arm_is_adam_at_multiples_of_the_dds_step_size(tmp_path):
    published = "dds:\n  alpha:\n    tiny-llama: {ag_news: 4e-3}\n"
    text = TINY_SPEC + "  - name: dds\n    optimizer: adam_dds\n" + published
    trials = [t for t in expand_trials(parse_spec(text, "study.yaml"), tmp_path) if t.arm == "dds"]
    assert [(t.optimizer, t.config.optimizer, t.lr) for t in trials] == [("adam_dds", "adam", 4e-3)] * 2
    multiples = text.replace("optimizer: adam_dds\n", "optimizer: adam_dds\n    lr: dds x0.5, x2\n")
    assert [t.lr for t in expand_trials(parse_spec(multiples, "study.yaml"), tmp_path) if t.arm == "dds"] == \
        [2e-3, 8e-3] * 2
    with pytest.raises(SpecError, match=r"^study.yaml:25: arm 'dds': adam_dds takes its learning rate from dds"):
        parse_spec(text.replace("optimizer: adam_dds\n", "optimizer: adam_dds\n    lr: 1e-3\n"), "study.yaml")


def test_learning_rates_of_every_method_parse(tmp_path):
    spec = parse_spec(TINY_SPEC.replace("lr: 1e-2", "lr: suggest x0.5, x1"), "study.yaml")
    assert str(spec.arms[0].lr) == "suggest x0.5, x1" and spec.arms[0].configurations == 2
    assert str(parse_spec(TINY_SPEC.replace("lr: 1e-2", "lr: range-test"), "study.yaml").arms[0].lr) == \
        "range-test x1"


def test_dds_alpha_names_only_the_study_models_and_tasks(tmp_path):
    text = TINY_SPEC + "dds:\n  alpha:\n    tiny-llama: {squad: 4e-3}\n"
    with pytest.raises(SpecError, match=r"^study.yaml:25: unknown key 'squad' in dds.alpha\[tiny-llama\]"):
        check(text, tmp_path)


def test_a_missing_file_is_reported():
    with pytest.raises(FileNotFoundError, match="no study spec at nowhere.yaml"):
        load_spec("nowhere.yaml")
