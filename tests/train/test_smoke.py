"""Two optimizer steps of a real training for every registered layer, and one run per task kind."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("lightning")

import lightning as L

import rnnx.layers as layers
from rnnx.data import get_task
from rnnx.models import build_model
from rnnx.train.config import ModelConfig, RunConfig, TaskConfig, TrainConfig
from rnnx.train.module import TaskModule
from rnnx.train.run import _loaders, train

pytestmark = [
    pytest.mark.filterwarnings("ignore:You defined a `validation_step`"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_two_training_steps(name):
    # Parity: token inputs, variable lengths (padding must not leak), per-step targets.
    task = get_task("parity", n_train=16, n_val=4, n_test=4, train_len=8, test_len=10)
    cfg = ModelConfig(layer=name, d_model=8, n_layers=2, mlp_ratio=1.0, glu=True)
    cfg.layer_kwargs = layers.get(name).tiny_config()
    model = build_model(
        task.kind, cfg.backbone(d_input=1, vocab_size=task.vocab_size), n_classes=task.n_classes
    )
    before = [p.detach().clone() for p in model.parameters()]
    module = TaskModule(model, task.kind, lr=1e-2, weight_decay=0.0)
    run = RunConfig(train=TrainConfig(batch_size=8))
    _, train_dl, _, _ = _loaders(task, run, 0, 1)
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dl)
    assert trainer.global_step == 2
    loss = float(trainer.callback_metrics["train_loss_step"])
    assert math.isfinite(loss) and 0 < loss < 5
    changed = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters())]
    assert all(changed)


@pytest.mark.parametrize(
    ("task", "kwargs", "metric"),
    [
        ("digits", {}, "acc"),  # classification, real inputs
        (
            "mqar",
            {
                "n_train": 32,
                "n_val": 8,
                "n_test": 8,
                "seq_len": 16,
                "num_kv_pairs": 2,
                "vocab_size": 16,
            },
            "acc",
        ),  # tagging
        ("adding", {"n_train": 32, "n_val": 8, "n_test": 8, "seq_len": 10}, "mse"),  # regression
    ],
)
def test_every_task_kind_trains_end_to_end(tmp_path, task, kwargs, metric):
    if task == "digits":
        pytest.importorskip("sklearn")
    cfg = RunConfig(
        model=ModelConfig(layer="s4d", d_model=8, n_layers=1, d_state=4),
        task=TaskConfig(task, kwargs),
        train=TrainConfig(max_steps=2, batch_size=16, limit_batches=2, precision="32"),
    )
    result = train(cfg, out_dir=tmp_path, progress=False, verbose=False)
    assert result["metric"] == metric and math.isfinite(result[f"test_{metric}"])
    for f in ("config.json", "model.safetensors", "results.json", "curves.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()
    assert list((tmp_path / "logs").glob("version_0/metrics.csv"))
    assert list((tmp_path / "logs" / "tb").glob("version_0/events.*"))


def test_bf16_mixed_precision_runs(tmp_path):
    cfg = RunConfig(
        model=ModelConfig(layer="lstm", d_model=8, n_layers=1),
        task=TaskConfig("adding", {"n_train": 32, "n_val": 8, "n_test": 8, "seq_len": 6}),
        train=TrainConfig(max_steps=2, batch_size=16, precision="bf16-mixed"),
    )
    result = train(cfg, out_dir=tmp_path, progress=False, verbose=False)
    assert result["precision"] == "bf16-mixed" and math.isfinite(result["test_mse"])
