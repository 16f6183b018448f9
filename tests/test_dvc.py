"""dvc.yaml says the truth about the code: stages, deps, outs and params match the stage table
and the imports (`dvc repro` itself is tested in test_dvc_repro.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mnist_pipeline.core.imports import import_closure
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params, parse_params
from mnist_pipeline.core.service_params import Section
from mnist_pipeline.pipeline import stages
from mnist_pipeline.pipeline.stages import STAGES as TABLE
from tests.conftest import REPO_ROOT
from tests.synthetic import make_dataset, write_mirror

PACKAGE = "mnist_pipeline"
STAGES = ("fetch", "ingest", "train", "evaluate", "export", "parity")
INBOX = "inbox"  # dvc.yaml's first stage: keeps data/extra (inbox/tracked.py), not the flow's
DVC_STAGES = (INBOX, *STAGES)
DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8"))


# ---- fast: dvc.yaml says the truth about the code ----


def _entries(stage: dict[str, Any], key: str) -> list[str]:
    """Paths of a stage's deps/outs/metrics/plots (entries may be `path` or `{path: opts}`)."""
    return [e if isinstance(e, str) else next(iter(e)) for e in stage.get(key, [])]


def test_stages_run_the_cli_in_order() -> None:
    from typer.main import get_command

    from mnist_pipeline.cli.app import app

    commands = get_command(app).commands  # type: ignore[attr-defined]
    assert tuple(DVC_YAML["stages"]) == DVC_STAGES
    assert tuple(TABLE) == (*STAGES, "register")  # the flow's order; register is not a DVC stage
    for name in STAGES:
        assert DVC_YAML["stages"][name]["cmd"] == f"mnist-pipeline {name}"
        assert name in commands


@pytest.mark.parametrize("name", STAGES)
def test_code_deps_are_the_stage_module_and_its_imports(name: str) -> None:
    listed = [p for p in _entries(DVC_YAML["stages"][name], "deps") if p.startswith(PACKAGE + "/")]
    assert sorted(listed) == import_closure(TABLE[name].entry.partition(":")[0])


def test_the_lock_records_each_code_dep_as_committed() -> None:
    """dvc.lock's hash of every file a stage depends on is the file's: else `dvc repro` on a
    fresh clone runs the stage again and rewrites dvc.lock (a dep changed without a new lock)."""
    import hashlib

    lock = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    stale = []
    for name, stage in lock.items():
        for dep in stage.get("deps", []):
            path = REPO_ROOT / dep["path"]
            if path.is_file() and dep.get("hash") == "md5":  # data folders are not committed
                data = path.read_bytes()
                if (hashlib.md5(data).hexdigest(), len(data)) != (dep["md5"], dep["size"]):
                    stale.append(f"{name}: {dep['path']}")
    assert stale == [], f"dvc.lock records other bytes (run `dvc repro`, commit it): {stale}"


def test_evaluation_and_export_do_not_depend_on_training_code() -> None:
    """An optimizer or loop edit re-runs training, not evaluate/export/parity; no stage's
    code deps include serving, the CLI or the registry."""
    for name in STAGES:
        deps = _entries(DVC_YAML["stages"][name], "deps")
        for other in ("serving", "cli", "registry", "pipeline"):
            assert not any(d.startswith(f"{PACKAGE}/{other}/") for d in deps), (name, other)
        if name != "train":
            assert not any(d.startswith(f"{PACKAGE}/training/") for d in deps), name
    assert f"{PACKAGE}/training/loop.py" in _entries(DVC_YAML["stages"]["train"], "deps")


def test_outputs_are_the_layout_paths() -> None:
    layout = Layout(Path("."))
    outs = {
        Path(p)
        for stage in DVC_YAML["stages"].values()
        for key in ("outs", "metrics", "plots")
        for p in _entries(stage, key)
    }
    expected = {
        layout.inbox,
        layout.data_dir,
        layout.extra_dir,
        layout.ingest_report,
        layout.state_dict,
        layout.train_record,
        layout.train_history,
        layout.metrics,
        layout.scores,
        layout.predictions,
        layout.plots,
        layout.onnx,
        layout.parity_report,
        layout.parity_scores,
    }
    assert outs == expected
    assert layout.checkpoint not in outs  # transient: deleted when training ends


@pytest.mark.parametrize("name", STAGES)
def test_stages_match_the_stage_table(name: str) -> None:
    """dvc.yaml and the stage table (pipeline/stages.py) agree on what a stage reads/writes."""
    stage, table = DVC_YAML["stages"][name], TABLE[name]
    module, _, function = table.entry.partition(":")
    assert module.startswith(PACKAGE + ".") and module.endswith(f".{name}") and function == name
    layout = Layout(Path("."))
    data_deps = {p for p in _entries(stage, "deps") if not p.startswith(PACKAGE + "/")}
    assert data_deps == {str(getattr(layout, attr)) for attr in table.reads}
    outs = {p for key in ("outs", "metrics", "plots") for p in _entries(stage, key)}
    assert outs == {str(getattr(layout, attr)) for attr in table.writes}
    assert {dotted.partition(".")[0] for dotted in stage["params"]} <= set(table.sections)


def recorded(section: Section, seen: set[str]) -> Section:
    """A copy of `section` that adds each field read to `seen` (every field when it is dumped,
    compared, hashed or printed whole, as the training fingerprint does)."""
    cls, fields = type(section), set(type(section).model_fields)

    def read(self: Section, name: str) -> Any:
        if name in fields:
            seen.add(name)
        return object.__getattribute__(self, name)

    def whole(method: Any) -> Any:
        def wrapper(self: Section, *args: Any, **kwargs: Any) -> Any:
            seen.update(fields)
            return method(self, *args, **kwargs)

        return wrapper

    dumps = ("model_dump", "model_dump_json", "__eq__", "__hash__", "__iter__", "__repr__")
    spy = type(
        cls.__name__,
        (cls,),
        {"__getattribute__": read} | {name: whole(getattr(cls, name)) for name in dumps},
    )
    return spy.model_construct(**{name: getattr(section, name) for name in fields})


@pytest.fixture(scope="module")
def keys_read(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """stage -> the "section.key"s it read, running every stage on a tiny dataset in order."""
    folder = tmp_path_factory.mktemp("pipeline")
    sha = write_mirror(folder / "mirror", make_dataset())
    params = parse_params(
        {
            "data": {"mirrors": [str(folder / "mirror")], "sha256": sha},
            "train": {"epochs": 1, "max_batches_per_epoch": 2, "val_size": 32, "num_threads": 1},
            "evaluate": {"min_accuracy": 0.0, "robustness_per_transform": 2},
        }
    )
    reads = {}
    for name in STAGES:
        seen: dict[str, set[str]] = {section: set() for section in TABLE[name].sections}
        spies = {section: recorded(getattr(params, section), seen[section]) for section in seen}
        stages.run(name, params.model_copy(update=spies), Layout(folder))
        reads[name] = {f"{section}.{key}" for section, keys in seen.items() for key in keys}
    return reads


@pytest.mark.parametrize("name", STAGES)
def test_params_are_exactly_the_keys_the_stage_reads(name: str, keys_read) -> None:
    """DVC re-runs a stage when a listed key changes: a key it reads and dvc.yaml omits would
    leave a stale output; one listed but not read would re-run it for nothing."""
    listed = set()
    for dotted in DVC_YAML["stages"][name]["params"]:
        section, _, key = dotted.partition(".")
        fields = [key] if key else Params.model_fields[section].annotation.model_fields
        listed |= {f"{section}.{field}" for field in fields}
    assert listed == keys_read[name] - HOW_TO_DOWNLOAD


# Read by fetch, but they say only where and how to download: fetch accepts the same content
# (data.sha256) from any mirror, so they change no output and re-run nothing.
HOW_TO_DOWNLOAD = {"data.mirrors", "data.timeout_s"}


def test_data_deps_are_outputs_of_earlier_stages() -> None:
    produced: set[str] = set()
    for stage in DVC_YAML["stages"].values():
        for dep in _entries(stage, "deps"):
            assert dep.startswith(PACKAGE + "/") or dep in produced, dep
        produced |= {p for key in ("outs", "metrics", "plots") for p in _entries(stage, key)}


def test_the_inbox_is_a_persistent_cached_output() -> None:
    """The `inbox` stage outputs the inbox (cached, so `dvc push` and `dvc pull` share the
    labelled digits; git ignores them) and never deletes it: it only creates it when absent.
    No .dvc file tracks it (a `dvc add`ed folder that a fresh clone lacks stops `dvc repro`)."""
    stage = DVC_YAML["stages"][INBOX]
    assert stage["cmd"] == "mnist-pipeline data init" and "deps" not in stage
    inbox = str(Layout(Path(".")).inbox)
    assert stage["outs"] == [{inbox: {"persist": True}}]
    assert "/extra" in (REPO_ROOT / "data" / ".gitignore").read_text(encoding="utf-8").split()
    assert not (REPO_ROOT / "data" / "extra.dvc").exists()


def test_params_exist_in_params_yaml_and_the_model() -> None:
    """DVC fails on a listed key the file lacks; and of a whole section listed, a key the file
    lacks is one `dvc exp run -S section.key=...` refuses and `dvc params diff` never shows."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    for stage in DVC_YAML["stages"].values():
        for dotted in stage.get("params", []):
            section, _, key = dotted.partition(".")
            assert section in Params.model_fields, dotted
            fields = Params.model_fields[section].annotation.model_fields
            assert not key or key in fields, dotted
            for name in [key] if key else fields:
                assert name in raw[section], f"{section}.{name} is not in params.yaml"


def test_plot_definitions_use_real_columns() -> None:
    import torch

    from mnist_pipeline.evaluation.report import predictions_csv
    from mnist_pipeline.training.train import HISTORY_COLUMNS

    header = predictions_csv(torch.tensor([1]), torch.tensor([1]), torch.tensor([0.5]))
    columns = {
        "reports/train_history.csv": set(HISTORY_COLUMNS),
        "reports/predictions.csv": set(header.splitlines()[0].split(",")),
    }
    for definition in DVC_YAML["plots"]:
        ((title, props),) = definition.items()
        for path, ys in props["y"].items():
            wanted = {props["x"], *([ys] if isinstance(ys, str) else ys)}
            assert wanted <= columns[path], title
