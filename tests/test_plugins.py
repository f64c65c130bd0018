"""A user's own task and layer, trained by the CLI without editing rnnx: ``--import`` and
entry points (a temporary ``.dist-info`` on ``sys.path``)."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from rnnx import _plugins
from rnnx.cli import main
from rnnx.data import base as data_base
from rnnx.layers import base as layers_base

pytest.importorskip("lightning")

TINY = ["--d-model", "4", "--n-layers", "1", "--max-steps", "2", "--batch-size", "8",
        "--precision", "32", "--no-progress"]  # fmt: skip

TASK = '''
import torch
from rnnx.data import SequenceDataset, TaskData


def {fn}(seed=0, *, n=32, length=6):
    """The sign of a random walk's end (a user's task)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, 1, generator=g)
    ds = SequenceDataset(x, (x.sum((1, 2)) > 0).long())
    return TaskData(name="{name}", kind="classification", train=ds, val=ds, test=ds,
                    d_input=1, n_classes=2)
'''


@pytest.fixture
def clean(monkeypatch):
    """Registries, plugin state and sys.modules as they were before the test."""
    tasks, layers = dict(data_base._TASKS), dict(layers_base._REGISTRY)
    loaded, imported = set(_plugins._loaded), list(_plugins.IMPORTED)
    failed, modules, path = dict(_plugins.FAILED), set(sys.modules), list(sys.path)
    yield
    data_base._TASKS.clear()
    data_base._TASKS.update(tasks)
    layers_base._REGISTRY.clear()
    layers_base._REGISTRY.update(layers)
    _plugins._loaded.clear()
    _plugins._loaded.update(loaded)
    _plugins.IMPORTED[:] = imported
    _plugins.FAILED.clear()
    _plugins.FAILED.update(failed)
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


def _forget(module: str, task: str, layer: str) -> None:
    """As in a new process: the plugin is not imported, its names unknown."""
    data_base._TASKS.pop(task, None)
    layers_base._REGISTRY.pop(layer, None)
    sys.modules.pop(module, None)
    _plugins.IMPORTED.clear()


def test_import_a_module_with_a_task_and_a_layer(tmp_path, monkeypatch, capsys, clean):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from rnnx.data import register_task\nfrom rnnx.layers import GRU, register\n"
        + TASK.format(fn="walk_sign", name="walk_sign").replace(
            "def walk_sign", '@register_task("walk_sign")\ndef walk_sign'
        )
        + textwrap.dedent('''
            @register("my_gru")
            class MyGRU(GRU):
                """A user's layer: a GRU under its own name."""
            ''')
    )
    run = tmp_path / "run"
    argv = ["train", "--import", str(plugin), "--model", "my_gru", "--task", "walk_sign", *TINY]
    assert main([*argv, "--out-dir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["imports"] == [str(plugin)]
    # eval, in a "new process", imports what the run was trained with
    _forget("my_plugin", "walk_sign", "my_gru")
    assert main(["eval", str(run)]) == 0
    assert "walk_sign (test): loss" in capsys.readouterr().out
    # by module name, from the current directory
    _forget("my_plugin", "walk_sign", "my_gru")
    monkeypatch.chdir(tmp_path)
    assert main(["list", "all", "--import", "my_plugin"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("my_gru ") for line in out.splitlines())
    assert any(line.startswith("walk_sign ") for line in out.splitlines())


def test_entry_points_register_tasks_and_layers(tmp_path, monkeypatch, capsys, clean):
    site = tmp_path / "site"
    (site / "ep_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "ep_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n"
    )
    (site / "ep_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[rnnx.tasks]\nep_walk = ep_plugin:ep_walk\n\n[rnnx.layers]\nep_gru = ep_plugin:EpGRU\n"
    )
    (site / "ep_plugin.py").write_text(
        "from rnnx.layers import GRU\n"
        + TASK.format(fn="ep_walk", name="ep_walk")
        + "\n\nclass EpGRU(GRU):\n    '''An entry-point layer.'''\n"
    )
    monkeypatch.syspath_prepend(str(site))
    _plugins._loaded.clear()  # as in a new process: entry points not looked at yet
    run = tmp_path / "run"
    argv = ["train", "--model", "ep_gru", "--task", "ep_walk", *TINY, "--out-dir", str(run)]
    assert main(argv) == 0
    assert json.loads((run / "results.json").read_text())["model"] == "ep_gru"
    assert main(["list", "tasks"]) == 0
    assert any(line.startswith("ep_walk ") for line in capsys.readouterr().out.splitlines())


def test_a_broken_entry_point_is_named(tmp_path, monkeypatch, capsys, clean):
    from rnnx import RnnxWarning

    site = tmp_path / "site"
    (site / "broken-0.1.dist-info").mkdir(parents=True)
    (site / "broken-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n"
    )
    (site / "broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[rnnx.tasks]\nbroken_task = no_such_module_here:fn\n"
    )
    monkeypatch.syspath_prepend(str(site))
    _plugins._loaded.clear()
    from rnnx.data import get_task

    with (
        pytest.warns(RnnxWarning, match="plugin 'broken_task' .* did not load"),
        pytest.raises(ValueError, match="plugins that did not load: broken_task"),
    ):
        get_task("broken_task")
