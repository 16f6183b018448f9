"""Optional Ed25519 signing: a forged version (resealed card) is refused once keys are trusted."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import ParamsError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.card import SEAL_KEY, seal
from mnist_pipeline.registry.signing import Signing, generate
from tests.registry_helpers import MODEL, PARAMS, writable


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Two key pairs: the old signing key and the one it was rotated to."""
    made = {}
    for name in ("old", "new"):
        generate(tmp_path / "keys" / name)
        made[name] = tmp_path / "keys" / name
    return made


def registry(root: Path, key: Path | None, trusted: list[Path], required: bool = False):
    pubs = [Path(f"{p}.pub") for p in trusted]
    return Registry(root, MODEL, Signing.load(key, pubs, required))


def forge(registry: Registry, version: int, donor: int) -> None:
    """What anyone with write access can do: swap model.onnx, fix its hash, reseal the card."""
    folder = registry.model_dir / f"v{version}"
    onnx = folder / "model.onnx"
    writable(onnx).write_bytes((registry.model_dir / f"v{donor}" / "model.onnx").read_bytes())
    card = json.loads((folder / "card.json").read_text())
    card["files"]["model.onnx"] = file_sha256(onnx)
    body = {k: v for k, v in card.items() if k != SEAL_KEY}
    writable(folder / "card.json").write_text(json.dumps(seal(body)))


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "signing" / "mnist.key"
    result = runner.invoke(app, ["models", "keygen", str(key)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in Path(f"{key}.pub").read_bytes()
    again = runner.invoke(app, ["models", "keygen", str(key)])
    assert again.exit_code == 1 and "already exists; not overwriting a key" in str(again.exception)


def test_a_forged_version_passes_the_seal_but_not_the_signature(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    signed = registry(root, keys["old"], [keys["old"]])
    signed.register(make(1, accuracy=0.95), PARAMS, 0.0)
    signed.register(make(2, accuracy=0.96), PARAMS, 0.0)
    assert (signed.model_dir / "v1" / "card.sig").is_file() and signed.verify() == []
    signed.resolve("1")
    forge(signed, 2, donor=1)
    # The unkeyed seal cannot tell: without trusted keys the forgery reads as intact.
    assert Registry(root, MODEL).resolve("2").read_bytes() == signed.resolve("1").read_bytes()
    with pytest.raises(RegistryError, match="v2: the signature does not match card.json"):
        signed.resolve("2")
    assert any("v2: the signature does not match" in p for p in signed.verify())


def test_unsigned_versions_are_refused_only_when_required(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    Registry(root, MODEL).register(make(1), PARAMS, 0.0)  # no signing key configured
    registry(root, None, [keys["old"]]).resolve("1")  # trusted keys alone: unsigned is allowed
    strict = registry(root, None, [keys["old"]], required=True)
    with pytest.raises(RegistryError, match=r"mnist-cnn v1 is not signed \(registry.require"):
        strict.resolve("production")
    # Deleting card.sig does not turn a signed version into an acceptable unsigned one.
    registry(root, keys["old"], [keys["old"]]).register(make(2), PARAMS, 0.0)
    strict.resolve("2")
    (strict.model_dir / "v2" / "card.sig").unlink()
    with pytest.raises(RegistryError, match="v2 is not signed"):
        strict.resolve("2")


def test_rotation_keeps_old_versions_while_their_key_is_trusted(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    registry(root, keys["old"], [keys["old"]]).register(make(1), PARAMS, 0.0)
    rotated = registry(root, keys["new"], [keys["old"], keys["new"]], required=True)
    rotated.register(make(2), PARAMS, 0.0)
    assert rotated.verify() == [] and rotated.resolve("1") and rotated.resolve("2")
    retired = registry(root, None, [keys["new"]], required=True)  # old public key removed
    retired.resolve("2")
    with pytest.raises(RegistryError, match=r"v1 is signed by key [0-9a-f]{16}, which is not"):
        retired.resolve("1")


def test_signing_params_and_key_files_are_checked(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(ParamsError, match="registry: require_signature needs at least one"):
        parse_params({"registry": {"require_signature": True}})
    layout = Layout(tmp_path)
    for configured, message in (
        ({"signing_key": "keys/missing"}, r"signing key .*keys/missing does not exist"),
        ({"trusted_keys": ["keys/old"]}, r"trusted key .*keys/old is not a PEM Ed25519 key"),
        ({"signing_key": "keys/old.pub"}, r"signing key .*keys/old.pub is not a PEM Ed25519"),
    ):
        params = parse_params({"registry": configured})
        with pytest.raises(RegistryError, match=message):
            Registry.from_params(params.registry, layout)
    params = parse_params(
        {"registry": {"signing_key": "keys/new", "trusted_keys": ["keys/new.pub"]}}
    )
    assert Registry.from_params(params.registry, layout).signing.key is not None
