"""adamlab optimizers and schedules in a real `transformers.Trainer`: model-aware construction, diagnostics,
bit-identical resume, and 2 processes under `accelerate launch`."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer

from adamlab.integrations.transformers import AdamlabCallback, AdamlabTrainer, optimizer_cls_and_kwargs
from adamlab.optim import AdamMini, LDAdamW, Lookahead
from adamlab.schedules import get_schedule

from .trainer_setup import TokenData, arguments, tiny_llama

HERE = Path(__file__).parent


def weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_ldadam_gets_its_low_rank_groups_in_a_plain_trainer(tmp_path):
    trainer = Trainer(tiny_llama(), arguments(tmp_path, max_steps=1), train_dataset=TokenData(),
                      optimizer_cls_and_kwargs=optimizer_cls_and_kwargs("ldadam", lr=1e-2, rank=4))
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, LDAdamW)
    lowrank = [g for g in trainer.optimizer.param_groups if g["enable_lowrank"]]
    assert lowrank and all(p.dim() == 2 for g in lowrank for p in g["params"])
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-2


def test_adam_mini_gets_its_partition_and_named_parameters(tmp_path):
    trainer = AdamlabTrainer(tiny_llama(), arguments(tmp_path, max_steps=1), train_dataset=TokenData(),
                             optimizer="adam_mini")
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, AdamMini)
    names = [group.get("name") for group in trainer.optimizer.param_groups]
    assert all(names) and any("q_proj" in name for name in names)


def test_no_decay_policy_and_training_arguments_reach_the_optimizer(tmp_path):
    trainer = AdamlabTrainer(tiny_llama(), arguments(tmp_path, weight_decay=0.1, learning_rate=3e-3),
                             train_dataset=TokenData(), optimizer="lookahead",
                             optimizer_kwargs={"base": "adabelief", "k": 2})
    trainer.create_optimizer()
    assert isinstance(trainer.optimizer, Lookahead)
    decays = {group["weight_decay"]: group for group in trainer.optimizer.param_groups}
    assert set(decays) == {0.0, 0.1}
    assert all(p.dim() < 2 for p in decays[0.0]["params"])  # norms (no biases in Llama)
    assert all(group["lr"] == 3e-3 for group in trainer.optimizer.param_groups)


def test_factory_needs_lr_and_a_known_name():
    with pytest.raises(ValueError, match="pass lr"):
        optimizer_cls_and_kwargs("ldadam")
    with pytest.raises(ValueError, match="Unknown optimizer"):
        optimizer_cls_and_kwargs("ldadamm", lr=1e-3)


def test_schedule_and_diagnostics_in_the_logs(tmp_path):
    trainer = AdamlabTrainer(tiny_llama(), arguments(tmp_path, save_strategy="no", max_grad_norm=1e9, warmup_steps=2),
                             train_dataset=TokenData(), optimizer="sgd", schedule="cosine",
                             estimate={"alpha": 0.02})
    trainer.train()
    records = [r for r in trainer.state.log_history if "loss" in r]
    multiplier = get_schedule("cosine", 6, warmup_steps=2)
    assert len(records) == 6
    for record in records:
        step = record["step"]
        # the lr of the step just taken (the Trainer counts steps from 1, schedules from 0)
        assert record["learning_rate"] == pytest.approx(1e-2 * multiplier(step - 1), rel=1e-12)
        # plain SGD moves the weights by lr x gradient (clipping at 1e9 never triggers)
        assert record["update_norm"] == pytest.approx(record["learning_rate"] * record["grad_norm"], rel=1e-4)
        assert record["dds_alpha"] == 0.02
        assert record["lr_over_dds_alpha"] == pytest.approx(record["learning_rate"] / 0.02)


def test_callback_reads_an_estimate_file(tmp_path):
    (tmp_path / "lr.json").write_text('{"alpha": 0.25, "sigma_max": 3.0}')
    assert AdamlabCallback(tmp_path / "lr.json").alpha == 0.25
    (tmp_path / "bad.json").write_text('{"sigma_max": 3.0}')
    with pytest.raises(ValueError, match="alpha"):
        AdamlabCallback(tmp_path / "bad.json")


@pytest.mark.parametrize("name,kwargs", [
    ("ldadam", {"rank": 4}),
    ("adam_mini", {}),
    ("lookahead", {"base": "radam", "k": 2}),
    ("hybrid_adam_sgd", {}),
])
def test_resume_from_a_checkpoint_is_bit_identical(tmp_path, name, kwargs):
    def trainer(out, seed):
        return AdamlabTrainer(tiny_llama(seed), arguments(out), train_dataset=TokenData(), optimizer=name,
                              optimizer_kwargs=kwargs, schedule="wsd", schedule_kwargs={"decay_ratio": 0.5})

    straight = trainer(tmp_path / "straight", seed=0)
    straight.train()
    # Other initial weights: only the checkpoint's weights, optimizer state and RNG can give the same end.
    resumed = trainer(tmp_path / "resumed", seed=1)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-3"))
    def losses(trainer):
        return [(r["step"], r["loss"], r["update_norm"]) for r in trainer.state.log_history if "loss" in r]

    assert losses(resumed) == losses(straight) and len(losses(straight)) == 6  # steps 1-3 from the checkpoint
    expected, got = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected), name


def test_two_processes_under_accelerate_launch_end_where_one_does(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE.parents[1]), str(HERE.parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    script = [str(HERE / "trainer_setup.py")]
    single = subprocess.run([sys.executable, *script, str(tmp_path / "one"), "8"], capture_output=True, text=True,
                            env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                "29541"]
    double = subprocess.run([*launcher, *script, str(tmp_path / "two"), "4"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = torch.load(tmp_path / "one" / "weights.pt"), torch.load(tmp_path / "two" / "weights.pt")
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-6), key
    assert not math.isnan(sum(v.sum().item() for v in two.values()))
