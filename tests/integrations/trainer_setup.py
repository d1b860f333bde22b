"""A tiny Llama and a fixed token dataset for Trainer tests; also run as a script under `accelerate launch`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from adamlab.integrations.transformers import AdamlabTrainer

SEQUENCE = 16


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class TokenData(torch.utils.data.Dataset):
    """Fixed random sequences, all of one length: no padding, so any batch split gives the same mean loss."""

    def __init__(self, size: int = 64, seed: int = 1):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (size, SEQUENCE), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def arguments(out: Path, **changes) -> TrainingArguments:
    settings = dict(output_dir=str(out), max_steps=6, per_device_train_batch_size=8, learning_rate=1e-2,
                    save_steps=3, save_strategy="steps", logging_steps=1, report_to=[], use_cpu=True, seed=0,
                    dataloader_num_workers=0, disable_tqdm=True, max_grad_norm=1.0)
    return TrainingArguments(**{**settings, **changes})


if __name__ == "__main__":  # accelerate launch ... trainer_setup.py OUT BATCH_PER_PROCESS
    out, batch = Path(sys.argv[1]), int(sys.argv[2])
    trainer = AdamlabTrainer(tiny_llama(), arguments(out, per_device_train_batch_size=batch, save_strategy="no",
                                                     max_grad_norm=0.0),
                             train_dataset=TokenData(), optimizer="ldadam", optimizer_kwargs={"rank": 4},
                             schedule="cosine")
    trainer.train()
    if trainer.accelerator.process_index == 0:
        torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, out / "weights.pt")
