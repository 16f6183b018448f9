from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mnist_pipeline.cli.app import main
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import DEFAULT_MIRRORS, Params, load_params, parse_params
from mnist_pipeline.core.yaml_text import describe_yaml_error, load_yaml_strict
from mnist_pipeline.data.manifest import DEFAULT_SHA256

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_file_is_valid_and_matches_the_defaults() -> None:
    params = load_params(REPO_PARAMS, environ={})
    assert params == Params()
    assert params.train.learning_rate == 0.001
    assert params.data.mirrors == DEFAULT_MIRRORS


def test_params_are_frozen() -> None:
    params = Params()
    with pytest.raises(ValidationError, match="Instance is frozen"):
        params.train.epochs = 3  # type: ignore[misc]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_params(write(tmp_path, ""), environ={}) == Params()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("train:\n  learning_rate: -0.1\n", ["train.learning_rate", "greater than 0"]),
        ("train:\n  epochs: many\n", ["train.epochs", "integer"]),
        ("train:\n  epochs: 2.5\n", ["train.epochs", "integer"]),
        ("train:\n  epoch: 2\n", ["train.epoch: unknown key; did you mean 'epochs'?"]),
        ("trian:\n  epochs: 2\n", ["trian: unknown key; did you mean 'train'?"]),
        ("train:\n  augment:\n    rotate: 5\n", ["augment.rotate: ", "mean 'rotate_deg'?"]),
        ("train:\n  zzz: 2\n", ["train.zzz: unknown key; train takes epochs, batch_size,"]),
        ("zzz: 1\n", ["zzz: unknown key; the top level takes data, ingest, inbox, model"]),
        ("evaluate:\n  min_accuracy: 1.5\n", ["evaluate.min_accuracy", "less than or equal to 1"]),
        # torch cannot split by more than 2**63-1: a traceback after validation, before
        ("evaluate:\n  batch_size: 9223372036854775808\n", ["evaluate.batch_size", "65536"]),
        ("parity:\n  batch_sizes: [1, 100000]\n", ["parity.batch_sizes.1", "65536"]),
        ("data:\n  timeout_s: 10000000000\n", ["data.timeout_s", "less than or equal to 3600"]),
        ("export:\n  opset: 11\n", ["export.opset", "greater than or equal to 17"]),
        (
            "model:\n  arch: wide\nexport:\n  opset: 17\n",
            ["model.arch wide needs export.opset 18 or later", "which opset 17 lacks"],
        ),
        ("data:\n  mirrors: []\n", ["data.mirrors", "at least 1"]),
        ("data:\n  mirrors: [a, ' ']\n", ["data.mirrors: a mirror is blank: give a URL"]),
        ("data:\n  mirrors: ['s3://b/mnist']\n", ["data.mirrors", "unsupported scheme 's3'"]),
        ('data:\n  mirrors: ["/tmp/a\\0b"]\n', ["data.mirrors", "holds a NUL character"]),
        ("data:\n  mirrors: ['https://h/m/?t=1']\n", ["data.mirrors", "no ?query or #fragment"]),
        ("data:\n  mirrors: ['file:///srv/m#a']\n", ["data.mirrors", "no ?query or #fragment"]),
        ("data:\n  mirrors: [' s3://b/mnist']\n", ["data.mirrors", "ends with white space"]),
        ("data:\n  mirrors: ['/srv/mnist\t']\n", ["'/srv/mnist\\t' starts or ends with white"]),
        ("inbox:\n  shared: ' '\n", ["inbox.shared", "' ' is blank: give a folder path"]),
        ("registry:\n  root: '  '\n", ["registry.root", "is blank: give a folder path or a URL"]),
        ("registry:\n  root: ' s3://b/p'\n", ["registry.root", "starts or ends with white"]),
        ("inbox:\n  shared: 'inbox '\n", ["inbox.shared: 'inbox ' starts or ends with white"]),
        ("data:\n  mirrors: ['https:/h/m']\n", ["data.mirrors", "write https://... (two"]),
        ("data:\n  mirrors: ['https://']\n", ["data.mirrors", "'https://' names no host"]),
        ("data:\n  mirrors: ['http://:8000/m']\n", ["data.mirrors", "names no host"]),
        ("data:\n  mirrors: ['http://[::1/m']\n", ["'http://[::1/m' is not a valid URL"]),
        ("data:\n  mirrors: ['http://h:port/m']\n", ["'http://h:port/m' is not a valid URL"]),
        ("model:\n  arch: resnet\n", ["model.arch", "classic"]),
        ("train:\n  dropout: 1.0\n", ["train.dropout", "less than 1"]),
        ("train:\n  temperature_scaling: 'yes'\n", ["train.temperature_scaling", "boolean"]),
        ("train:\n  arch: classic\n", ["train.arch: moved to model.arch"]),
        ("export:\n  parity_atol: 0.001\n", ["export.parity_atol: moved to parity.atol"]),
        ("export:\n  parity_batch_sizes: [1]\n", ["moved to parity.batch_sizes"]),
        ("parity:\n  batch_sizes: [0, -1]\n", ["parity.batch_sizes.0", "greater than or"]),
        ("schedule:\n  concurrency_limit: 3\n  keep_runs: 2\n", ["keep_runs (2) must be >="]),
        ("schedule:\n  notify_block: slack\n", ["schedule.notify_block", "pattern"]),
        # Prefect's block names: lowercase, digits and dashes (a run would only log the typo)
        ("schedule:\n  notify_block: custom-webhook/Foo_Bar\n", ["schedule.notify_block"]),
        ("schedule:\n  deployment_name: trial\n", ["sweep's trial deployment of the same flow"]),
        ("schedule:\n  collision_strategy: DROP\n", ["schedule.collision_strategy", "ENQUEUE"]),
        ('schedule:\n  cron: "61 3 * * 1"\n', ["schedule.cron", "minute field: '61'"]),
        ('schedule:\n  cron: "0 3 * * funday"\n', ["schedule.cron", "day of week"]),
        (  # Prefect's scheduler would never run it: no 31 February, no 31 April or June
            'schedule:\n  cron: "0 3 31 2,4,jun mon"\n',
            ["schedule.cron", "day of month '31' never falls in month '2,4,jun'"],
        ),
        ("schedule:\n  timezone: Mars/Base\n", ["schedule.timezone", "unknown time zone"]),
        ("schedule:\n  timezone: Europe\n", ["schedule.timezone", "unknown time zone"]),  # a folder
        # files ZoneInfo reads but Prefect's schedules refuse
        ("schedule:\n  timezone: posix/Europe/Berlin\n", ["schedule.timezone", "unknown time"]),
        ("schedule:\n  timezone: right/UTC\n", ["schedule.timezone", "unknown time zone"]),
        ('registry:\n  root: "s3://"\n', ["registry.root", "bucket"]),
        ('inbox:\n  shared: "s3:///x"\n', ["inbox.shared", "bucket"]),
        ("parity:\n  atol: .inf\n", ["parity.atol", "finite number"]),
        ("parity:\n  atol: 1.0e+9\n", ["parity.atol", "less than or equal to 0.01"]),
        ("parity:\n  batch_sizes: [-1]\n", ["parity.batch_sizes.0", "greater than or"]),
        ("train:\n  seed: 100000000000000000000000\n", ["train.seed", "less than or equal"]),
        ('registry:\n  root: ""\n', ["registry.root", "at least 1 character"]),
        ("registry:\n  root: s3://reg/./m\n", ["registry.root", "'.' in the prefix (its parts"]),
        ('registry:\n  root: "reg\\0x"\n', ["registry.root", "holds a NUL character"]),
        ('registry:\n  signing_key: "k\\0"\n', ["registry.signing_key", "holds a NUL"]),
        ('registry:\n  trusted_keys: ["a.pub", "b\\0.pub"]\n', ["registry.trusted_keys", "NUL"]),
        ("registry:\n  root: file:///tmp/x%00y\n", ["registry.root", "holds a NUL character"]),
        ('inbox:\n  shared: "in\\0box"\n', ["inbox.shared", "holds a NUL character"]),
        ("inbox:\n  shared: s3://bkt/x/../y\n", ["inbox.shared", "'..' in the prefix"]),
        (
            "registry:\n  root: s3://Bad_Bucket/m\n",
            ["registry.root", "'Bad_Bucket' is not a valid"],
        ),
        (
            "inbox:\n  shared: s3://ab/in\n",
            ["inbox.shared", "'ab' is not a valid bucket name (3-63"],
        ),
        ("registry:\n  root: s3://models:9000/m\n", ["registry.root", "'models:9000' is not a"]),
        ("registry:\n  root: s3://a..b/m\n", ["registry.root", "'a..b' is not a valid bucket"]),
        (
            "train:\n  epochs: 2\n  epochs: 3\n",
            ["not valid YAML (line 3", "duplicate key 'epochs'"],
        ),
        ("? [a, b]\n: 1\n", ["not valid YAML (line 1", "a mapping key must be a scalar"]),
        ("train:\n  precision: fp16\n", ["train.precision", "'auto', 'fp32' or 'bf16'"]),
        ("train:\n  adam_betas: [0.9, 1.0]\n", ["train.adam_betas", "in [0, 1), got [0.9, 1.0]"]),
        ("train:\n  adam_betas: [0.9]\n", ["train.adam_betas.1", "Field required"]),
        ("train:\n  warmup_fraction: 0\n", ["train.warmup_fraction", "greater than 0"]),
        ("train:\n  val_size: 60000\n", ["train.val_size", "60000 leaves no images to train"]),
        ("- just\n- a list\n", ["top level must be a mapping"]),
        # an explicit tag the text cannot be: PyYAML's KeyError and AttributeError otherwise
        ("train:\n  temperature_scaling: !!bool maybe\n", ["not valid YAML", "explicit tag"]),
        ("train:\n  epochs: !!timestamp garbage\n", ["not valid YAML", "explicit tag"]),
        ('serve:\n  feedback_tokens_file: "a\\0b"\n', ["serve.feedback_tokens_file", "NUL"]),
        ('serve:\n  host: ""\n', ["serve.host", "at least 1 character"]),
        ("registry:\n  root: ~/models\n", ["registry.root", "'~' is not expanded here"]),
        ("inbox:\n  shared: ~alice/inbox\n", ["inbox.shared", "'~' is not expanded here"]),
        (
            'serve:\n  cors_origins: ["http://localhost:8080/"]\n',
            ["serve.cors_origins", "'http://localhost:8080/' is not an origin as a browser"],
        ),
        ('serve:\n  cors_origins: ["http://LocalHost:8080"]\n', ["serve.cors_origins", "lower"]),
        ('serve:\n  cors_origins: ["127.0.0.1:5500"]\n', ["serve.cors_origins", "not an origin"]),
        ('serve:\n  cors_origins: ["null"]\n', ["serve.cors_origins", "not an origin"]),
        ("train: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_bad_params_name_the_key_and_rule(tmp_path: Path, text: str, fragments: list[str]) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, text), environ={})
    for fragment in fragments:
        assert fragment in str(info.value)


def test_yaml_merge_keys_are_refused_in_one_line() -> None:
    """`<<: *anchor` would bring keys past the duplicate-key check (two `a`s inside a merged
    mapping, two `<<`s): refused, naming the line, instead of read silently."""
    import yaml

    for text in (
        "x: &short\n  epochs: 2\ntrain:\n  <<: *short\n  epochs: 3\n",
        "t: {<<: {a: 1, a: 2}, b: 3}\n",
    ):
        with pytest.raises(yaml.YAMLError) as refused:
            load_yaml_strict(text)
        assert "merge keys (<<) are not read here" in describe_yaml_error(refused.value)


def test_missing_file_is_a_params_error(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_env_mirror_replaces_the_configured_list(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, ""), environ={"MNIST_MIRROR": "/a, file:///b"})
    assert params.data.mirrors == ("/a", "file:///b")
    with pytest.raises(ParamsError, match=r"^data.mirrors \(MNIST_MIRROR\): 'ftp://h/m'"):
        load_params(write(tmp_path, ""), environ={"MNIST_MIRROR": "ftp://h/m"})
    with pytest.raises(ParamsError, match=r"^data.mirrors \(MNIST_MIRROR\): .* holds a NUL"):
        load_params(write(tmp_path, ""), environ={"MNIST_MIRROR": "file:///x%00,/srv/mnist"})
    windows = load_params(write(tmp_path, ""), environ={"MNIST_MIRROR": "C:/mnist,HTTP://H/m"})
    assert windows.data.mirrors == ("C:/mnist", "HTTP://H/m")  # a drive letter is a folder
    hashed = load_params(write(tmp_path, ""), environ={"MNIST_MIRROR": "/srv/mnist#2?"})
    assert hashed.data.mirrors == ("/srv/mnist#2?",)  # a folder's name may hold them
    with pytest.raises(ParamsError, match=r"^MNIST_MIRROR=', ,' names no mirror"):
        load_params(write(tmp_path, ""), environ={"MNIST_MIRROR": ", ,"})


def test_non_utf8_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"train:\n  epochs: \xff\n")
    with pytest.raises(ParamsError, match=r"params.yaml: not UTF-8 text \(byte 17\)") as info:
        load_params(path, environ={})
    assert "\n" not in str(info.value)


def test_standard_cron_expressions_are_accepted() -> None:
    for cron in (
        "0 3 * * 1",
        "*/15 * * * *",
        "0 3 1-15 jan-mar mon,fri",
        "30 2 * * 7",
        "0 3 29 2 *",  # leap years
        "0 3 31 2,7 *",
        "0 3 31/2 2 *",  # steps are the scheduler's to read
    ):
        assert parse_params({"schedule": {"cron": cron}}).schedule.cron == cron


def test_another_file_given_as_params_lists_the_sections_once(tmp_path: Path) -> None:
    """A report (metrics.json) named as the params file: a line per key, the allowed sections
    named on the first only, not repeated on each."""
    path = tmp_path / "metrics.json"
    path.write_text('{"accuracy": 0.99, "loss": 0.02, "correct": 9900, "train": {"epoch": 1}}')
    with pytest.raises(ParamsError) as error:
        load_params(path, environ={})
    lines = {line.split(": ")[1]: line for line in str(error.value).splitlines()[1:]}
    assert sorted(lines) == ["accuracy", "correct", "loss", "train.epoch"]
    assert "did you mean 'epochs'?" in lines["train.epoch"]
    listing = [line for line in lines.values() if "the top level takes" in line]
    assert len(listing) == 1 and listing[0].endswith(
        "takes data, ingest, inbox, model, train, "
        "evaluate, export, parity, registry, "
        "schedule, serve (got 0.99)"
    )
    assert lines["loss"].endswith(": unknown key (the keys allowed are listed above) (got 0.02)")


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 3\n")
    assert load_params(path, {"train.epochs": 1}, environ={}).train.epochs == 1
    with pytest.raises(ParamsError, match="^override train.learning_rate: Input should be"):
        load_params(path, {"train.learning_rate": 0}, environ={})
    # one line: the item refused, not also "should have at least 1 item ... (got (0,))"
    with pytest.raises(ParamsError, match=r"^override parity.batch_sizes.0: Input should be gr"):
        load_params(path, {"parity.batch_sizes": [0]}, environ={})
    onecycle = {"train.learning_rate": 0.01, "train.lr_schedule": "onecycle"}
    with pytest.raises(ParamsError) as section_rule:  # a rule about the section it is part of
        load_params(path, onecycle, environ={})
    assert str(section_rule.value).startswith(
        f"{path}: train (with override train.learning_rate, override train.lr_schedule): "
        "max_learning_rate (0.005) must be >= learning_rate (0.01)"
    )
    with pytest.raises(ParamsError, match=r"^data.mirrors \(MNIST_MIRROR\): Tuple should"):
        parse_params({}, "p.yaml", {"data.mirrors": []}, set_by={"data.mirrors": "MNIST_MIRROR"})
    bad_file = write(tmp_path, "train:\n  epochs: 0\n")  # the file's own value is the file's
    with pytest.raises(ParamsError) as refused:
        load_params(bad_file, {"train.seed": 0, "serve.port": 99999}, environ={})
    assert str(refused.value).splitlines()[1:] == [
        f"  {bad_file}: train.epochs: Input should be greater than or equal to 1 (got 0)",
        "  override serve.port: Input should be less than or equal to 65535 (got 99999)",
    ]
    with pytest.raises(ParamsError, match="unknown section"):
        load_params(path, {"nope.epochs": 1}, environ={})
    with pytest.raises(ParamsError, match="'train.arch': moved to model.arch"):
        load_params(path, {"train.arch": "classic"}, environ={})


def test_deeper_dotted_overrides_change_one_key_and_keep_the_files_others(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 3\n  augment:\n    rotate_deg: 5\n    scale: 0.2\n")
    raw = yaml.safe_load(path.read_text())
    params = parse_params(raw, "params.yaml", {"train.augment.rotate_deg": 12})
    assert (params.train.augment.rotate_deg, params.train.augment.scale) == (12, 0.2)
    assert raw["train"]["augment"]["rotate_deg"] == 5  # the caller's mapping is untouched
    with pytest.raises(ParamsError, match="train.augment.rotate_deg"):
        load_params(path, {"train.augment.rotate_deg": 500}, environ={})
    with pytest.raises(
        ParamsError, match=r"train.epochs: expected a mapping of keys \(got 3\), so"
    ):
        load_params(path, {"train.epochs.x": 1}, environ={})
    # One override inside another (a sweep grid's keys): whichever came last would win.
    for overlapping in (
        {"train.augment.rotate_deg": 5, "train.augment": {"rotate_deg": 20}},
        {"train.augment": {"rotate_deg": 20}, "train.augment.rotate_deg": 5},
    ):
        with pytest.raises(
            ParamsError,
            match=r"overrides 'train.augment' and 'train.augment.rotate_deg' overlap: set 'tr",
        ):
            load_params(path, overlapping, environ={})
    apart = load_params(path, {"train.augment.rotate_deg": 5, "train.epochs": 2}, environ={})
    assert apart.train.augment.rotate_deg == 5 and apart.train.epochs == 2  # no overlap
    scalar = write(tmp_path, "data: https://example.org/mnist/\n")  # not the override's fault
    with pytest.raises(ParamsError, match=r"params.yaml: data: expected a mapping of keys \(got "):
        load_params(scalar, environ={"MNIST_MIRROR": "/srv/mnist"})
    with pytest.raises(ParamsError, match="unknown key"):
        load_params(path, {"train.augment.spin": 1}, environ={})
    with pytest.raises(ParamsError, match="expected 'section.key'"):
        load_params(path, {"train..epochs": 1}, environ={})


def test_sha256_table_must_name_the_four_files() -> None:
    named = "data.sha256: .*must name exactly the files"
    with pytest.raises(ParamsError, match=named):
        parse_params({"data": {"sha256": {"x": "0" * 64}}})
    three = dict(list(DEFAULT_SHA256.items())[:3])
    with pytest.raises(ParamsError, match=named):
        parse_params({"data": {"sha256": three}})
    with pytest.raises(ParamsError, match=named):
        parse_params({"data": {"sha256": {**DEFAULT_SHA256, "x": "0" * 64}}})
    first = next(iter(DEFAULT_SHA256))
    for digest in ("A" * 64, "0" * 63, "g" * 64):
        with pytest.raises(ParamsError, match=rf"not a lowercase hex SHA-256 for \['{first}'\]"):
            parse_params({"data": {"sha256": {**DEFAULT_SHA256, first: digest}}})
    assert parse_params({"data": {"sha256": dict(DEFAULT_SHA256)}}).data.sha256 == DEFAULT_SHA256


def test_to_dict_round_trips() -> None:
    params = parse_params(
        {
            "data": {"mirrors": ["https://example.org/mnist/", "file:///srv/mnist"]},
            "ingest": {"holdout_percent": 10},
            "inbox": {"shared": "s3://bucket/inbox"},
            "model": {"arch": "wide"},
            "train": {"adam_betas": [0.8, 0.95], "dropout": None, "augment": {"scale": 0.2}},
            "evaluate": {"min_extra_accuracy": 0.8},
            "export": {"opset": 19},
            "parity": {"batch_sizes": [1, 3, 9]},
            "registry": {"root": "s3://bucket/models", "trusted_keys": ["keys/a.pub"]},
            "schedule": {"cron": "0 4 * * 2", "timezone": "Europe/Berlin"},
            "serve": {"cors_origins": ["https://a.example"], "shadow": "staging"},
        }
    )
    default = Params()
    assert [s for s in type(params).model_fields if getattr(params, s) == getattr(default, s)] == []
    assert parse_params(yaml.safe_load(yaml.safe_dump(params.to_dict()))) == params
    assert parse_params(yaml.safe_load(yaml.safe_dump(default.to_dict()))) == default


def test_a_section_with_no_keys_takes_the_defaults_and_a_non_mapping_is_named(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "train:\n  # epochs: 3 (every key commented out)\nserve:\n")
    assert load_params(path, environ={}) == Params()
    nested = write(tmp_path, "train:\n  epochs: 3\n  augment:\n")
    loaded = load_params(nested, {"train.augment.rotate_deg": 5.0}, environ={})
    assert loaded.train.epochs == 3 and loaded.train.augment.rotate_deg == 5.0
    with pytest.raises(
        ParamsError, match=r"train.augment: expected a mapping of keys \(got \[1\]\)$"
    ):
        load_params(write(tmp_path, "train:\n  augment: [1]\n"), environ={})


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_cli_root_must_be_an_existing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    root = tmp_path / "typo"
    if kind == "file":
        root.write_text("")
    params = write(tmp_path, "{}\n")
    argv = ["mnist-pipeline", "--params", str(params), "--root", str(root), "models", "list"]
    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    said = "does not exist" if kind == "missing" else "is a file"
    err = capsys.readouterr().err  # typer 0.28 says "Directory '...'", later ones "dir '...'"
    assert "Invalid value for '--root'" in err and f"'{root}' {said}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["params.yaml", *(["typo"] if kind == "file" else [])]
    )


def test_cli_default_params_file_is_the_one_under_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    write(root, "train:\n  epochs: 0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere, "{}\n")  # a valid params.yaml in the current directory must not be used
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("sys.argv", ["mnist-pipeline", "--root", str(root), "fetch"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert f"{root / 'params.yaml'}: train.epochs" in capsys.readouterr().err


def test_a_served_version_may_be_written_as_a_yaml_number(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, "serve:\n  model: 2\n  shadow: 3\n"), environ={})
    assert (params.serve.model, params.serve.shadow) == ("2", "3")  # as "2" or v2 would be
    with pytest.raises(ParamsError, match="serve.model"):
        load_params(write(tmp_path, "serve:\n  model: true\n"), environ={})


def test_a_shadow_naming_the_served_model_is_refused(tmp_path: Path) -> None:
    """It would compare the served version with itself, and a canary would answer with it."""
    for model, shadow in [("production", "production"), ("2", "v2"), ("v02", "2"), (2, "2")]:
        text = yaml.safe_dump({"serve": {"model": model, "shadow": shadow, "canary_percent": 5}})
        with pytest.raises(ParamsError, match=f"serve: .*shadow '{shadow}' names the model se"):
            load_params(write(tmp_path, text), environ={})
    for model, shadow in [("production", "staging"), ("2", "3"), ("v12", "v1")]:
        text = yaml.safe_dump({"serve": {"model": model, "shadow": shadow}})
        assert load_params(write(tmp_path, text), environ={}).serve.shadow == shadow


def test_serve_max_pixels_stays_within_the_limit_every_image_is_held_to(tmp_path: Path) -> None:
    """Above it, the server decoded images that `predict` refuses as decompression bombs."""
    from mnist_pipeline.data.decode import MAX_PIXELS

    most = f"serve:\n  max_pixels: {MAX_PIXELS}\n"
    assert load_params(write(tmp_path, most), environ={}).serve.max_pixels == MAX_PIXELS
    with pytest.raises(ParamsError, match="serve.max_pixels: .*less than or equal to 50000000"):
        load_params(write(tmp_path, f"serve:\n  max_pixels: {MAX_PIXELS + 1}\n"), environ={})


def test_serve_reload_interval_has_a_floor(tmp_path: Path) -> None:
    """Each check reads the registry's alias document: at 1e-9 s the follow thread read a local
    one about 2,900 times a second (an S3 registry would get as many requests)."""
    text = "serve:\n  reload_interval_s: {}\n"
    assert load_params(write(tmp_path, text.format(0.1)), environ={}).serve.reload_interval_s == 0.1
    for small in ("1e-9", "0.05", "0"):
        with pytest.raises(ParamsError, match="serve.reload_interval_s: .*greater than or equal "):
            load_params(write(tmp_path, text.format(small)), environ={})


def test_numbers_with_an_exponent_are_numbers_as_in_yaml_1_2(tmp_path: Path) -> None:
    """`1e-3` is a string to YAML 1.1 (PyYAML) and a float to YAML 1.2 (DVC's ruamel.yaml):
    params read it as the number its writer meant; quoted, it stays text, and a float is still
    no integer."""
    text = "train:\n  learning_rate: 1e-3\n  max_learning_rate: 5E-3\n"
    params = load_params(write(tmp_path, text), environ={})
    assert params.train.learning_rate == 0.001 and params.train.max_learning_rate == 0.005
    with pytest.raises(ParamsError, match="train.learning_rate"):
        load_params(write(tmp_path, 'train:\n  learning_rate: "1e-3"\n'), environ={})
    with pytest.raises(ParamsError, match=r"serve.max_upload_bytes: .*integer \(got 4000000.0\)"):
        load_params(write(tmp_path, "serve:\n  max_upload_bytes: 4e6\n"), environ={})
    assert load_yaml_strict("a: 1e\nb: e5\nc: 1.5e+2") == {"a": "1e", "b": "e5", "c": 150.0}


def _typed(value: object) -> tuple[type, str]:
    return type(value), repr(value)  # repr: nan equals nan


def test_scalars_are_read_as_dvc_reads_them(tmp_path: Path) -> None:
    """PyYAML alone (YAML 1.1) reads `012` as 10, `1:30` as 90 and `on` as true, where DVC
    (ruamel.yaml, YAML 1.2) reads 12, "1:30" and "on": every scalar here reads as DVC reads it,
    and params refuse `1:30` epochs instead of training 90."""
    from dvc.utils.serialize import parse_yaml

    bodies = ["0", "012", "08", "0o17", "0o8", "0x1F", "0X1F", "0b101", "1_000", "1_", "1:30"]
    bodies += ["1:30.5", "1.", ".5", ".5e-3", ".5e3", "1e3", "1E-3", "1.5e+2", "1_0.5", "1e"]
    bodies += [".inf", ".Inf", ".nan"]
    words = ["yes", "no", "on", "off", "y", "n", "true", "True", "TRUE", "tRue", "false", "null"]
    words += ["~", "2026-12-06", "_1", "e5", "0x", "+"]
    scalars = [sign + body for sign in ("", "-", "+") for body in bodies] + words
    text = "".join(f"k{i}: {scalar}\n" for i, scalar in enumerate(scalars))
    ours, theirs = load_yaml_strict(text), parse_yaml(text, "params.yaml")
    differ = {
        scalars[i]: (ours[key], theirs[key])
        for i, key in enumerate(theirs)
        if _typed(ours[key]) != _typed(theirs[key])
    }
    assert differ == {}
    assert (ours["k1"], ours["k10"], ours["k3"]) == (12, "1:30", 15)  # the list is as meant
    assert load_yaml_strict("a: 0x_\nb: -0b__\nc: 0o_7") == {"a": "0x_", "b": "-0b__", "c": 7}
    assert load_yaml_strict("a: ._\nb: -._\nc: ._5") == {"a": "._", "b": "-._", "c": 0.5}
    with pytest.raises(ParamsError, match=r"not valid YAML: a value that cannot be read: month"):
        load_params(write(tmp_path, "train:\n  seed: 2026-13-45\n"), environ={})  # a date
    assert load_params(write(tmp_path, "train:\n  epochs: 012\n"), environ={}).train.epochs == 12
    with pytest.raises(ParamsError, match="train.epochs"):
        load_params(write(tmp_path, "train:\n  epochs: 1:30\n"), environ={})
