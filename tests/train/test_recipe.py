"""The training recipe: step and time budgets, model selection, the data-derived settings,
honest test numbers (whole test split, ``rnnx eval`` equal in the run's precision)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from rnnx.cli import main
from rnnx.data import _sources, get_task
from rnnx.train import recipe
from rnnx.train.callbacks import Budget, ModelSelection, noise_tolerance
from rnnx.train.checkpoint import load_weights
from rnnx.train.config import ModelConfig, RunConfig, TaskConfig, TrainConfig, resolve
from rnnx.train.module import budget_schedule
from rnnx.train.run import evaluate, train

pytestmark = [
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

ADDING = {"n_train": 64, "n_val": 16, "n_test": 24, "seq_len": 8}


def _small(task="adding", kwargs=ADDING, **train) -> RunConfig:
    return RunConfig(
        model=ModelConfig(layer="lstm", d_model=8, n_layers=1),
        task=TaskConfig(task, dict(kwargs)),
        train=TrainConfig(batch_size=16, precision="32", **train),
    )


def test_the_budget_is_counted_in_steps(tmp_path):
    result = train(_small(max_steps=7), out_dir=tmp_path, progress=False, verbose=False)
    assert result["steps"] == result["budget"]["max_steps"] == 7
    # 64 items, batch 16: 7 steps are not a whole number of epochs; the step budget
    # decides, not an epoch count.
    assert result["budget"]["stopped_by"] in ("steps", "patience")


def test_budget_minutes_stops_cleanly_and_says_so(tmp_path, capsys):
    class Slow(L.Callback):  # every step takes 50 ms more
        def on_train_batch_end(self, *args):
            import time

            time.sleep(0.05)

    cfg = _small(max_steps=10_000, budget_minutes=0.01, patience=0)  # 0.6 s
    result = train(cfg, out_dir=tmp_path, callbacks=[Slow()], progress=False)
    assert result["budget"]["stopped_by"] == "budget_minutes"
    assert 1 <= result["steps"] < 10_000
    assert "the 0.01-minute budget is spent: stopped cleanly" in capsys.readouterr().out
    assert result["budget"]["wall_seconds"] >= 0.6 and result["budget"]["clock"] == "wall"
    # A whole run: weights, results, a test metric on the whole test split.
    assert (tmp_path / "model.safetensors").exists() and math.isfinite(result["test_mse"])
    assert result["test_items"] == ADDING["n_test"]


def test_the_schedule_decays_over_whichever_budget_binds():
    b = Budget(max_steps=105, minutes=0.0)
    f = budget_schedule(5, b)
    assert [f(s) for s in range(5)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert f(55) == pytest.approx(0.5, abs=1e-12) and f(105) == pytest.approx(0.0, abs=1e-12)
    assert all(f(s) >= f(s + 1) for s in range(4, 105))
    # Half of a one-minute budget used at step 10: the clock leads, the rate follows it.
    timed = Budget(max_steps=105, minutes=1.0)
    timed._before["wall"] = 30.0
    g = budget_schedule(5, timed)
    w = 5 / 105
    assert g(10) == pytest.approx(0.5 * (1 + math.cos(math.pi * (0.5 - w) / (1 - w))))
    timed._before["wall"] = 60.0
    assert g(10) == pytest.approx(0.0, abs=1e-12)
    # The CPU clock counts this process's CPU time, not the wall clock.
    cpu = Budget(max_steps=105, minutes=1.0, clock="cpu")
    cpu._before = {"wall": 60.0, "cpu": 15.0}
    assert cpu.time_fraction() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="budget_clock: expected 'wall' or 'cpu'"):
        Budget(10, 1.0, clock="gpu")


class Snapshots(L.Callback):
    """The weights at every validation (after ModelSelection has seen it)."""

    def __init__(self):
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            sd = pl_module.model.state_dict()
            self.at[trainer.global_step] = {k: v.detach().clone() for k, v in sd.items()}


@pytest.mark.parametrize("select", ["best", "last"])
def test_model_selection_restores_the_best_weights(tmp_path, select):
    snaps = Snapshots()
    cfg = _small(max_steps=12, val_every=2, patience=0, select=select, lr=0.05)
    result = train(cfg, out_dir=tmp_path, callbacks=[snaps], progress=False, verbose=False)
    history = result["selection"]["history"]
    assert [h["step"] for h in history] == [2, 4, 6, 8, 10, 12]
    best = min(history, key=lambda h: (h["mse"], -h["step"]))  # MSE: strictly best
    expected = best["step"] if select == "best" else 12
    assert result["selected_step"] == expected
    saved = load_weights(tmp_path / "model.safetensors")
    for k, v in snaps.at[expected].items():
        assert torch.equal(saved[k], v), k
    # The test metric is that of the saved weights: rnnx eval reproduces it exactly.
    assert evaluate(tmp_path)["metrics"] == result["test"]


class Sabotage(L.Callback):
    """After every validation, scrambles the weights: each later validation is worse
    than the first (the selection has already kept the weights it validated)."""

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            with torch.no_grad():
                for p in pl_module.model.parameters():
                    p.add_(torch.randn_like(p) * 3.0)


def test_patience_stops_early(tmp_path):
    cfg = _small(max_steps=40, val_every=2, patience=3)
    result = train(cfg, out_dir=tmp_path, callbacks=[Sabotage()], progress=False, verbose=False)
    assert result["selection"]["early_stopped"] and result["budget"]["stopped_by"] == "patience"
    assert result["steps"] == 8 and result["selected_step"] == 2


def _validate(selection: ModelSelection, step: int, acc: float, n: int) -> None:
    trainer = SimpleNamespace(sanity_checking=False, global_step=step, should_stop=False)
    module = SimpleNamespace(
        val_metrics={"acc": acc, "loss": 1.0 - acc},
        val_count=float(n),
        model=torch.nn.Linear(1, 1),
    )
    selection.on_validation_end(trainer, module)


def test_selection_keeps_the_latest_checkpoint_within_the_noise_of_the_best():
    # 10 validation items: one item is 0.1, the standard error at 0.9 is 0.095.
    assert noise_tolerance("acc", 0.9, 10) == pytest.approx(0.1)
    assert noise_tolerance("acc", 0.5, 100) == pytest.approx(0.05)
    assert noise_tolerance("mse", 0.5, 100) == 0.0
    sel = ModelSelection("acc", True, patience=2)
    for step, acc in [(1, 0.7), (2, 0.9), (3, 0.8), (4, 0.9), (5, 0.8)]:
        _validate(sel, step, acc, 10)
    assert sel.best_step == 5 and sel.peak["acc"] == 0.9  # 0.8 is within one item of 0.9
    sel = ModelSelection("acc", True, patience=2)
    for step, acc in [(1, 0.7), (2, 1.0), (3, 0.8)]:
        _validate(sel, step, acc, 10)
    assert sel.best_step == 2 and sel.bad == 1  # 0.8 is two items short of 1.0
    # A large validation split resolves small differences.
    sel = ModelSelection("acc", True, patience=0)
    for step, acc in [(1, 0.90), (2, 0.95), (3, 0.93)]:
        _validate(sel, step, acc, 10_000)
    assert sel.best_step == 2


def test_limit_batches_leaves_the_test_split_whole(tmp_path):
    cfg = _small(max_steps=2, limit_batches=1)
    result = train(cfg, out_dir=tmp_path, progress=False, verbose=False)
    assert result["test_items"] == ADDING["n_test"]
    assert evaluate(tmp_path)["metrics"] == result["test"]


def test_selecting_on_a_validation_split_that_is_the_test_split_is_refused(tmp_path):
    if not _sources.available("aeon"):
        pytest.skip("aeon not fetched: rnnx data fetch aeon")
    cfg = _small("aeon:ItalyPowerDemand", {"val_fraction": 0.0}, max_steps=1)
    with pytest.raises(ValueError, match="would select on the test split; use --select last"):
        train(cfg, out_dir=tmp_path, progress=False, verbose=False)


def test_the_recipe_reads_the_data_and_yields_to_the_user():
    task = get_task("adding", **ADDING)
    cfg, derived = recipe.apply(resolve({"task": {"name": "digits"}}), _digits_like())
    assert cfg.model.bidirectional is True and cfg.model.pooling == "mean"
    assert derived["data"]["kind"] == "classification"
    assert derived["model"]["d_model"]["why"]
    # A user's setting is kept and not reported as the recipe's.
    user = resolve({"model": {"d_model": 16}, "train": {"lr": 0.5, "max_steps": 9}})
    cfg, derived = recipe.apply(user, task)
    assert (cfg.model.d_model, cfg.train.lr, cfg.train.max_steps) == (16, 0.5, 9)
    assert "d_model" not in derived["model"] and "max_steps" not in derived["train"]
    assert cfg.model.pooling == "last" and cfg.model.bidirectional is False  # regression
    assert cfg.model.instance_norm is False  # the adding problem forecasts no input channel
    forecast = recipe.recommend(recipe.DataStats("regression", 900, 336, 0, 96, 302400, 0))
    assert forecast["model"]["instance_norm"][0] is True
    assert forecast["model"]["linear_skip"][0] is True
    # More data: a larger batch, and at least the minimum number of steps.
    small = recipe.recommend(recipe.DataStats("classification", 30, 100, 3, 0, 3000))
    large = recipe.recommend(recipe.DataStats("classification", 9000, 100, 3, 0, 900000))
    assert small["train"]["batch_size"][0] < large["train"]["batch_size"][0]
    assert small["train"]["max_steps"][0] >= 1000 and large["train"]["max_steps"][0] >= 1000
    assert small["model"]["dropout"][0] >= large["model"]["dropout"][0]
    # Every setting whose default is None ("the recipe's") has a value after apply.
    # (patch_size, teacher_forcing: video prediction only, tests/train/test_video_cli.py)
    open_by_default = {
        "model": {"d_state", "mode", "backend", "patch_size"},
        "train": {"epochs", "teacher_forcing"},
    }
    assert cfg.model.linear_skip is False
    for section in ("model", "train"):
        for k, v in vars(getattr(cfg, section)).items():
            assert v is not None or k in open_by_default[section], f"{section}.{k}"


def test_validation_costs_a_small_part_of_a_run():
    assert recipe.val_interval(2000) == 50  # 40 validations
    assert recipe.val_interval(2000, 32, 40) == 50  # a small validation split: still 40
    # 5000 validation windows against 2840 steps of 64: 10 validations, not 40.
    assert recipe.val_interval(2840, 64, 5165) == 284
    assert recipe.val_interval(5, 1, 10**6) == 1


def _digits_like():
    from rnnx.data import SequenceDataset, TaskData

    ds = SequenceDataset(torch.zeros(40, 16, 1), torch.arange(40) % 4)
    return TaskData("toy", "classification", ds, ds, ds, n_classes=4)


def test_results_record_precision_selection_budget_and_normalisation(tmp_path):
    if not _sources.available("aeon"):
        pytest.skip("aeon not fetched: rnnx data fetch aeon")
    cfg = _small("aeon:ItalyPowerDemand", {}, max_steps=2)
    train(cfg, out_dir=tmp_path, progress=False, verbose=False)
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["precision"] == "32"
    assert result["selected_step"] == result["selection"]["selected_step"] == 2
    assert result["budget"]["max_steps"] == 2 and result["budget"]["minutes"] > 0
    assert result["normalisation"].startswith("per-series z-normalisation")
    assert result["config"]["train"]["budget_minutes"] == result["budget"]["minutes"]


@pytest.mark.parametrize("precision", ["auto-on-a-bf16-cpu", "bf16-mixed"])
def test_eval_reproduces_a_bf16_run_exactly(tmp_path, capsys, monkeypatch, precision):
    # "auto" picks bf16-mixed on CPUs with AVX512-BF16/AMX: simulate one.
    monkeypatch.setattr("rnnx.train.run.cpu_has_bf16", lambda: True)
    flag = "auto" if precision.startswith("auto") else precision
    run = tmp_path / "run"
    args = ["train", "--model", "lstm", "--task", "adding", "--task-arg", "seq_len=8",
            "--task-arg", "n_train=32", "--task-arg", "n_val=8", "--task-arg", "n_test=40",
            "--d-model", "8", "--n-layers", "1", "--max-steps", "2", "--batch-size", "16",
            "--precision", flag, "--no-progress", "--out-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    trained = json.loads((run / "results.json").read_text())
    assert trained["precision"] == "bf16-mixed"
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--json", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    assert evaluated["precision"] == "bf16-mixed"
    assert evaluated["metrics"] == trained["test"]  # exactly
    # In fp32 the same weights give (slightly) different numbers: the precision matters.
    assert main(["eval", str(run), "--precision", "32", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["mse"] != trained["test"]["mse"]


def test_a_small_model_beats_one_nn_on_a_real_set_in_under_a_minute(tmp_path):
    """ItalyPowerDemand (67 training series of 24 hours; 1-NN ED 0.955 on its 1029 test
    series): the recipe's model, a few hundred steps, above the 1-NN baseline."""
    if not _sources.available("aeon"):
        pytest.skip("aeon not fetched: rnnx data fetch aeon")
    from rnnx.train.baselines import one_nn

    task = "aeon:ItalyPowerDemand"
    reference = one_nn(task)
    assert reference == pytest.approx(0.955, abs=1e-3)
    cfg = RunConfig(
        task=TaskConfig(task),
        train=TrainConfig(max_steps=300, budget_minutes=0.9, precision="32"),
    )
    result = train(cfg, out_dir=tmp_path, progress=False, verbose=False)
    assert result["train_seconds"] < 60
    assert result["test_acc"] > reference, result["selection"]


def test_own_data_gets_the_recipe_from_its_data(tmp_path):
    """csv/npz/ts/text register no fixed settings: the recipe derives them, and a csv
    forecast of several columns gets the per-target normalisation and linear map."""
    import numpy as np

    from rnnx.data import task_entry

    for name in ("csv", "npz", "ts", "text"):
        assert not task_entry(f"{name}:x").defaults, name
    table = tmp_path / "two.csv"
    t = np.arange(400)
    rows = [f"{i},{np.sin(i / 7):.4f},{np.cos(i / 5):.4f},{i % 24}" for i in t]
    table.write_text("time,a,b,hour\n" + "\n".join(rows) + "\n")
    name = f"csv:{table}"
    task = get_task(name, target=["a", "b"], horizon=4)
    assert task.info["target_channel"] == [0, 1] and task.d_output == 8
    cfg, derived = recipe.apply(resolve({"task": {"name": name}}), task)
    assert cfg.model.instance_norm and cfg.model.linear_skip and not cfg.model.bidirectional
    assert cfg.train.max_steps >= 2000 and cfg.train.epochs is None
    assert derived["model"]["instance_norm"]["value"] is True
    arrays = tmp_path / "toy.npz"
    rng = np.random.default_rng(0)
    np.savez(arrays, x=rng.normal(size=(60, 20, 2)), y=np.arange(60) % 3)
    cfg, _ = recipe.apply(resolve({"task": {"name": f"npz:{arrays}"}}), get_task(f"npz:{arrays}"))
    assert cfg.model.bidirectional is True and cfg.train.batch_size == 8  # n/10 -> 8
