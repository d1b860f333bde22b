"""The PyTorch Lightning example in docs/integrations.md runs as written: trained with a Lightning Trainer, its
schedule is adamlab's, stepped once per optimizer step."""

import re
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")

from adamlab.schedules import get_schedule  # noqa: E402

DOC = Path(__file__).parents[2] / "docs/integrations.md"


def lightning_example() -> str:
    section = DOC.read_text().split("## PyTorch Lightning", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_the_documented_lightning_module_trains_on_adamlab_pieces(tmp_path):
    namespace: dict = {}
    exec(compile(lightning_example(), str(DOC), "exec"), namespace)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    data = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.randn(40, 1))
    module = namespace["Module"](model, total_steps=10)
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    optimizer = trainer.optimizers[0]
    assert type(optimizer).__name__ == "AdaBelief"
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0, 0.01}  # biases undecayed
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 10  # stepped per optimizer step, not per epoch
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * get_schedule("cosine", 10, warmup_steps=0.1)(10))
