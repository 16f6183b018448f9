"""The knobs of the training recipe (warm-up share, Adam's betas), the per-epoch hook benchmarks
use, the torch settings a run restores, and the recipe files shipped beside params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import ModelParams, Params, TrainParams, load_params
from mnist_pipeline.training import loop
from mnist_pipeline.training.runtime import torch_settings
from mnist_pipeline.training.train import train
from tests.conftest import REPO_ROOT

TINY = {"epochs": 3, "batch_size": 32, "val_size": 32, "num_threads": 1}


def params(**changes: object) -> TrainParams:
    return TrainParams.model_validate({**TINY, **changes})


def lr_curve(p: TrainParams, steps: int) -> list[float]:
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), p)
    scheduler = loop.make_scheduler(optimizer, p, steps)
    lrs = []
    for _ in range(p.epochs * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.6])
def test_onecycle_peaks_after_the_warmup_fraction_of_the_steps(fraction: float) -> None:
    lrs = lr_curve(params(epochs=2, warmup_fraction=fraction, max_learning_rate=0.01), 50)
    peak = lrs.index(max(lrs))
    assert abs(peak - fraction * 100) <= 1.5
    assert max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert lrs[0] == pytest.approx(0.001)  # it rises from train.learning_rate


def test_a_one_step_warmup_is_a_params_error_not_a_crash() -> None:
    p = params(epochs=2, warmup_fraction=0.1)  # 10 steps: a rise of exactly one step
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), p)
    with pytest.raises(ParamsError, match=r"train.warmup_fraction 0.1 of 10 steps .* exactly 1"):
        loop.make_scheduler(optimizer, p, 5)
    assert loop.make_scheduler(optimizer, params(epochs=2, warmup_fraction=0.2), 5)


def test_a_schedule_without_a_warm_up_step_is_warned_of(capsys: pytest.CaptureFixture) -> None:
    """Under one warm-up step onecycle starts at its peak and anneals at once: a 1-step run
    trains at learning_rate/1e4. Fine for a smoke run, so a warning, not a refusal."""
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), params())
    for steps, warned in ((1, True), (3, True), (4, False), (100, False)):
        scheduler = loop.make_scheduler(optimizer, params(epochs=1, warmup_fraction=0.3), steps)
        said = capsys.readouterr().err
        assert ("is no warm-up: onecycle starts at its peak" in said) is warned, (steps, said)
        if steps == 1:
            assert scheduler.get_last_lr()[0] < 1e-6  # what the warning is about


def test_adam_betas_reach_the_optimizer() -> None:
    p = params(lr_schedule="constant", adam_betas=[0.7, 0.9])
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), p)
    assert optimizer.param_groups[0]["betas"] == (0.7, 0.9)
    # onecycle keeps beta2 and cycles beta1 itself (documented in params.yaml)
    cycled = params(adam_betas=[0.7, 0.9])
    optimizer = loop.make_optimizer(torch.nn.Linear(2, 2), cycled)
    loop.make_scheduler(optimizer, cycled, 10)
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    assert beta2 == 0.9 and beta1 != 0.7


def test_the_epoch_hook_sees_every_epoch_and_can_end_the_run(
    tmp_path: Path, tiny_data_dir: Path
) -> None:
    layout = Layout(tmp_path)
    seen: list[tuple[int, float, bool]] = []

    def hook(epoch: int, net: torch.nn.Module, seconds: float) -> None:
        seen.append((epoch, seconds, isinstance(net, torch.nn.Module)))

    train(ModelParams(), params(), layout, on_epoch=hook)
    assert [epoch for epoch, _, _ in seen] == [1, 2, 3]
    assert all(seconds > 0 and is_net for _, seconds, is_net in seen)
    before = layout.state_dict.read_bytes()

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, net: torch.nn.Module, seconds: float) -> None:
        raise Stop

    with pytest.raises(Stop):
        train(ModelParams(), params(seed=7), layout, on_epoch=stop_after_first)
    assert layout.state_dict.read_bytes() == before  # an unfinished run replaces nothing


def test_torch_settings_restore_the_callers_settings() -> None:
    fill = torch.utils.deterministic.fill_uninitialized_memory
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with torch_settings(params(num_threads=1)):
            assert torch.are_deterministic_algorithms_enabled()
            assert not torch.utils.deterministic.fill_uninitialized_memory
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert torch.utils.deterministic.fill_uninitialized_memory == fill
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_a_run_pins_onednn_and_the_default_dtype_and_gives_them_back() -> None:
    """A caller that turned oneDNN off or made float64 the default would have changed the
    weights (or crashed the run: float input, double bias) under the same fingerprint."""
    try:
        torch.backends.mkldnn.enabled = False
        torch.set_default_dtype(torch.float64)
        with torch_settings(params(num_threads=1)):
            assert torch.backends.mkldnn.enabled and torch.get_default_dtype() == torch.float32
            assert torch.nn.Linear(2, 1).weight.dtype == torch.float32
        assert not torch.backends.mkldnn.enabled and torch.get_default_dtype() == torch.float64
    finally:
        torch.backends.mkldnn.enabled = True
        torch.set_default_dtype(torch.float32)


FP32_SETTINGS = [  # (backend, op): what torch.backends' fp32_precision attributes read
    ("generic", "all"),
    ("mkldnn", "all"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
    ("cuda", "all"),
    ("cuda", "matmul"),
    ("cuda", "conv"),
    ("cuda", "rnn"),
]


def fp32_view() -> list[str]:
    return [torch._C._get_fp32_precision_getter(*setting) for setting in FP32_SETTINGS]


def put_back(view: list[str]) -> None:
    """Settings that read as `view`, following their parents where that does."""
    for setting, value in zip(FP32_SETTINGS, view, strict=True):
        torch._C._set_fp32_precision_setter(*setting, "none")
        if torch._C._get_fp32_precision_getter(*setting) != value:
            torch._C._set_fp32_precision_setter(*setting, value)


def _medium() -> None:
    torch.set_float32_matmul_precision("medium")  # bf16 matmuls in oneDNN on CPUs with bf16


def _tf32_everywhere() -> None:
    torch.backends.fp32_precision = "tf32"


def _bf16_onednn() -> None:  # oneDNN's own setting (its module attribute writes the generic one)
    torch.backends.mkldnn.set_flags(None, None, None, "bf16")


def _bf16_onednn_convolutions() -> None:
    torch.backends.mkldnn.conv.fp32_precision = "bf16"


def _both_apis() -> None:  # PyTorch's legacy getters raise from here on
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"
    torch.backends.cuda.matmul.fp32_precision = "ieee"


def _timed_algorithms() -> None:
    torch.backends.cudnn.benchmark = True


@pytest.mark.parametrize(
    "caller",
    [
        _medium,
        _tf32_everywhere,
        _bf16_onednn,
        _bf16_onednn_convolutions,
        _both_apis,
        _timed_algorithms,
    ],
)
def test_a_run_computes_in_ieee_float32_whatever_the_caller_chose(caller) -> None:
    """TF32, bf16 in oneDNN's matmuls or convolutions, or cuDNN's timed choice of algorithm
    would change the weights without changing the run's fingerprint: a run pins IEEE float32
    in every backend, and every setting reads afterwards what the caller had."""
    before, benchmark = fp32_view(), torch.backends.cudnn.benchmark
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(256, 320, generator=generator), torch.randn(50, 320, generator=generator)
    exact = x.double() @ w.double().T
    try:
        caller()
        chosen = fp32_view(), torch.backends.cudnn.benchmark
        with torch_settings(params(num_threads=1)):
            assert set(fp32_view()) == {"ieee"} and not torch.backends.cudnn.benchmark
            assert (torch.nn.functional.linear(x, w) - exact).abs().max() < 1e-3  # bf16: ~0.2
        assert (fp32_view(), torch.backends.cudnn.benchmark) == chosen
    finally:
        put_back(before)
        torch.backends.cudnn.benchmark = benchmark


def test_after_a_run_what_the_caller_never_set_follows_its_parent_again() -> None:
    """Restored as the values they read, settings would stay pinned to them: a later change of
    the generic setting would no longer reach oneDNN or cuBLAS."""
    before = fp32_view()
    try:
        torch.backends.fp32_precision = "tf32"  # every other setting inherits it
        with torch_settings(params(num_threads=1)):
            pass
        torch.backends.fp32_precision = "ieee"
        assert fp32_view()[:7] == ["ieee"] * 7  # cuDNN's conv and rnn keep their own default
    finally:
        put_back(before)


def test_a_cpu_run_leaves_the_gpus_random_generators_alone(
    tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeding the run seeds the CPU generator (and the run's own GPU), never every GPU of the
    process for good (`torch.manual_seed` would, and `fork_rng` gives back only the CPU's)."""
    seeded: list[str] = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda seed, name=name: seeded.append(name))
    torch.default_generator.manual_seed(5)
    expected = torch.rand(3)
    torch.default_generator.manual_seed(5)
    train(ModelParams(), params(epochs=1), Layout(tmp_path))
    assert seeded == []
    assert torch.equal(torch.rand(3), expected)  # and the caller's CPU generator came back


def test_torch_settings_restore_a_callers_warn_only_mode_also_after_an_error() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with pytest.raises(RuntimeError, match="inside"), torch_settings(params(num_threads=1)):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()  # the run's: strict
            raise RuntimeError("inside")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))


def test_the_quick_recipe_is_shipped() -> None:
    assert REPO_ROOT / "recipes" / "quick.yaml" in RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_recipes_are_params_files_that_change_only_training(recipe: Path) -> None:
    loaded = load_params(recipe, environ={})
    project = load_params(REPO_ROOT / "params.yaml", environ={})  # what the recipe extends
    others = [name for name in Params.model_fields if name != "train"]
    assert [getattr(loaded, name) for name in others] == [getattr(project, n) for n in others]
    assert loaded.train != project.train
    assert recipe.name in (REPO_ROOT / "docs" / "speed.md").read_text()
