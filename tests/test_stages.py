"""The stage table: every entry has the uniform shape, and `run` hands it its params sections."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params
from mnist_pipeline.pipeline import stages


@pytest.mark.parametrize("name", list(stages.STAGES))
def test_entry_takes_its_sections_then_the_layout(name: str) -> None:
    stage = stages.STAGES[name]
    signature = inspect.signature(stage.function())
    required = [p for p in signature.parameters.values() if p.default is inspect.Parameter.empty]
    wanted = ["params"] if stage.sections == stages.ALL_PARAMS else list(stage.sections)
    assert len(required) == len(wanted) + 1 and required[-1].name == "layout"
    annotations = [str(p.annotation) for p in required[:-1]]
    for section, annotation in zip(wanted, annotations, strict=True):
        expected = Params if section == "params" else type(getattr(Params(), section))
        assert annotation == expected.__name__, (name, section)
    for attr in (*stage.reads, *stage.writes):
        assert isinstance(getattr(Layout(Path(".")), attr), Path), (name, attr)


def test_run_passes_the_listed_sections_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple] = []
    monkeypatch.setattr(stages.Stage, "function", lambda self: lambda *a, **k: seen.append((a, k)))
    params, layout = Params(), Layout(Path("/somewhere"))
    stages.run("train", params, layout)
    stages.run("export", params, layout, model_version="3")
    stages.run("register", params, layout)
    assert seen == [
        ((params.model, params.train, layout), {}),
        ((params.model, params.export, params.evaluate, layout), {"model_version": "3"}),
        ((params, layout), {}),
    ]


def test_unknown_stage_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="deploy"):
        stages.run("deploy", Params(), Layout())
