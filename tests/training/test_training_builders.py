"""Builders: model + LoRA / full fine-tuning, learning-rate groups, transformers' warmup-cosine schedule, datasets."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

from flexretrofit.models import LLaDAModelLM
from flexretrofit.training import (
    build_datasets,
    build_model,
    build_optimizer,
    build_scheduler,
    build_tokenizer,
    config_from_dict,
)
from flexretrofit.training.builders import is_new_module_parameter
from flexretrofit.training.config import ConfigError


def config(tiny, **sections):
    root, data = tiny
    values = {
        "model": {"init_from": str(root / "llada"), "flex_config": {"modulation_group_size": 1}},
        "lora": {"r": 4, "alpha": 4},
        "data": {"sources": [{"path": str(data["corpus"])}], "max_length": 32},
    }
    for section, changes in sections.items():
        values.setdefault(section, {}).update(changes)
    return config_from_dict(values)


def test_lora_trains_adapters_and_new_modules_with_their_own_learning_rates(tiny):
    cfg = config(tiny, optim={"lr": 1e-4, "new_module_lr": 1e-3})
    model = build_model(cfg.model, cfg.lora, seed=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or is_new_module_parameter(n) for n in trainable)
    assert any("transformer.ff_out.lora_A" in n for n in trainable)  # the LM head is a published target
    assert not any("blocks.0.ff_out.lora_A" in n for n in trainable)  # ... the block down projection is not
    groups = {g["name"]: g for g in build_optimizer(model, cfg.optim).param_groups}
    assert groups["main"]["lr"] == 1e-4 and groups["new_modules"]["lr"] == 1e-3
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert all(p.ndim == 1 for p in groups["new_modules_no_decay"]["params"])


def test_build_model_is_reproducible_from_the_seed(tiny):
    cfg = config(tiny)
    a, b, c = (build_model(cfg.model, cfg.lora, seed=s) for s in (0, 0, 1))
    weight = lambda m: m.get_base_model().time_embedding.mlp[0].weight  # noqa: E731  (randomly initialised)
    assert torch.equal(weight(a), weight(b)) and not torch.equal(weight(a), weight(c))


def test_full_fine_tuning_and_the_mdm_baseline(tiny):
    full = config(tiny, lora={"enabled": False})
    model = build_model(full.model, full.lora)
    assert all(p.requires_grad for p in model.parameters())
    mdm = config(tiny, model={"kind": "mdm", "flex_config": {}})
    baseline = build_model(mdm.model, mdm.lora)
    assert isinstance(baseline.get_base_model(), LLaDAModelLM)
    ids = torch.tensor([[5, 6, 7, 8]])
    positions = torch.tensor([[False, True, False, True]])
    out = baseline(
        input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), logits_positions=positions
    )
    full = baseline(input_ids=ids).logits
    assert out.logits.shape == (2, full.shape[-1])
    torch.testing.assert_close(out.logits, full[positions])


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_a_checkpoint_config_without_model_type_is_a_config_error(tiny, tmp_path):
    folder = tmp_path / "no_type"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"d_model": 64}))
    cfg = config(tiny, model={"init_from": str(folder)})
    with pytest.raises(ConfigError, match=r"model.init_from: .*config.json has no model_type"):
        build_model(cfg.model, cfg.lora)


def test_the_schedule_is_transformers_cosine_with_its_warmup():
    cfg = config_from_dict({"optim": {"warmup_ratio": 0.05}})
    params = [torch.nn.Parameter(torch.zeros(2))]
    ours = build_scheduler(torch.optim.AdamW(params, lr=1e-4), cfg.optim, total_steps=200)
    reference = get_cosine_schedule_with_warmup(torch.optim.AdamW(params, lr=1e-4), 10, 200)  # 5% of 200
    assert _lrs(ours, 201) == pytest.approx(_lrs(reference, 201), abs=0)
    # The first optimizer step runs at lr 0, step k of the warmup at k / warmup of the peak.
    ours = build_scheduler(torch.optim.AdamW(params, lr=1e-4), cfg.optim, total_steps=200)
    lrs = _lrs(ours, 12)
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(1e-5) and lrs[10] == pytest.approx(1e-4)


def test_the_schedule_decays_to_min_lr_ratio():
    cfg = config_from_dict({"optim": {"warmup_ratio": 0.1, "min_lr_ratio": 0.1}})
    scheduler = build_scheduler(
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0), cfg.optim, total_steps=120
    )
    lrs = _lrs(scheduler, 121)  # warmup 12 steps, then 108 of decay
    assert lrs[12] == pytest.approx(1.0) and lrs[120] == pytest.approx(0.1)
    assert lrs[66] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert json.loads(json.dumps(scheduler.state_dict()))["last_epoch"] == 121  # plain numbers, saved as JSON


def test_datasets_hold_out_a_fixed_eval_subset(tiny):
    cfg = config(tiny, eval={"num_samples": 6})
    tokenizer = build_tokenizer(cfg.model)
    train, evaluation = build_datasets(cfg, tokenizer)
    again_train, again_eval = build_datasets(cfg, tokenizer)
    assert len(evaluation) == 6 and evaluation["input_ids"] == again_eval["input_ids"]
    assert train["input_ids"] == again_train["input_ids"]
    assert max(train["length"]) <= 32
    everything, none = build_datasets(config(tiny, eval={"num_samples": 0}), tokenizer)
    assert none is None and len(train) + len(evaluation) == len(everything)  # held out, not duplicated


def test_instruction_data_is_formatted_with_protected_prompts(tiny):
    root, data = tiny
    cfg = config(
        tiny,
        data={
            "format": "gsm8k",
            "sources": [{"path": str(data["gsm8k"])}],
            "max_length": 200,
            "format_kwargs": {"system_prompt": "Solve it."},
        },
        eval={"num_samples": 0},
    )
    train, evaluation = build_datasets(cfg, build_tokenizer(cfg.model))
    assert evaluation is None and len(train) == 64
    sample = train[0]
    assert sample["prompt_mask"][0] and not sample["prompt_mask"][-1]
    assert Path(data["gsm8k"]).read_text().count("\n") == 64
