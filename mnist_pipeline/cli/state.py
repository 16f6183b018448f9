"""What every `mnist-pipeline` command shares: the options `--root` and `--params`.

Kept apart from cli/app.py so that command modules (cli/data.py, cli/models.py) import this, not
each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console

from mnist_pipeline.core.errors import ParamsError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import DEFAULT_PARAMS_PATH, Params, load_params
from mnist_pipeline.core.params_file import read_params_file
from mnist_pipeline.pipeline.versions import check_not_a_file, models_in, open_registry
from mnist_pipeline.registry import Registry, default_actor

# Progress and summaries go to stderr; stdout is kept for results (paths, JSON, predictions).
console = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class CliState:
    """The working directory and params file of one invocation."""

    root: Path
    params_path: Path
    params_given: bool = False  # by --params: checked by every command (`state`)

    @classmethod
    def from_options(cls, root: Path, params: Path | None) -> CliState:
        """`--params` defaults to params.yaml under `--root` (a relative one is taken as given)."""
        if params is None:
            return cls(root=root, params_path=root / DEFAULT_PARAMS_PATH)
        return cls(root=root, params_path=params, params_given=True)

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def params(self) -> Params:
        return load_params(self.params_file())

    def params_file(self) -> Path:
        """The params file to read; ParamsError saying where params.yaml belongs when the
        default one is missing (a command run outside a project folder)."""
        if not self.params_given and not self.params_path.exists():
            raise ParamsError(
                f"params file not found: {self.params_path} (commands run in a project folder "
                "holding params.yaml: cd there or pass --root DIR; a params.yaml of `{}` takes "
                "every default)"
            )
        return self.params_path


def user_name() -> str:
    """This process's login name ("unknown" without one, as in some containers)."""
    return default_actor().removeprefix("user:")


def state(ctx: typer.Context) -> CliState:
    """The shared options, set by the app's callback before any command runs."""
    found = ctx.find_object(CliState)
    if found is None:  # only when a command is invoked outside the mnist-pipeline app
        raise RuntimeError("mnist-pipeline command run without the app's options (CliState)")
    if found.params_given:  # a file given must be one (ParamsError), also for a command that
        read_params_file(found.params_path)  # reads no params: it would run as if it were right
    return found


def existing_registry(ctx: typer.Context) -> Registry:
    """The configured registry, which must exist (a folder, or a model with objects in the
    store): a mistyped registry.root or registry.model_name must not read as an empty registry
    (or be created by `models gc`)."""
    st = state(ctx)
    params = st.params().registry
    root = st.layout.registry_root(params.root)
    if isinstance(root, Path):
        check_not_a_file(root, params.root)
        if not root.is_dir():
            raise RegistryError(
                f"no registry folder at {root} (registry.root {params.root!r}): nothing is "
                "registered there yet, or the path is wrong"
            )
        if not (root / params.model_name).is_dir():
            raise _no_model(params.model_name, root, models_in(root))
    registry = open_registry(params, st.layout)
    if not isinstance(root, Path) and not registry.version_numbers():  # object storage
        models = {key.split("/", 1)[0] for key in registry.storage.list("")}
        if params.model_name not in models:
            raise _no_model(params.model_name, registry.storage.location, models)
    return registry


def _no_model(name: str, where: object, models: set[str]) -> RegistryError:
    """A registry.model_name that names no model at `where`, with the models it holds."""
    return RegistryError(
        f"no model {name!r} in the registry at {where} (registry.model_name); models there: "
        f"{', '.join(sorted(models)) or 'none'}"
    )
