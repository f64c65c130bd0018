from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning")

from rnnx.layers import S4D
from rnnx.train.module import parameter_groups


def test_parameter_groups_follow_the_ssm_convention():
    model = torch.nn.Sequential(S4D(4, d_state=4, ssm_lr=1e-3), torch.nn.Linear(4, 2))
    groups = parameter_groups(model, lr=3e-3, weight_decay=0.1)
    by_param = {id(p): g for g in groups for p in g["params"]}
    s4d = model[0]
    assert by_param[id(s4d.log_dt)]["lr"] == 1e-3 and by_param[id(s4d.log_dt)]["weight_decay"] == 0
    assert by_param[id(model[1].weight)]["weight_decay"] == 0.1
    assert by_param[id(model[1].bias)]["weight_decay"] == 0.0  # 1-D: no decay
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
