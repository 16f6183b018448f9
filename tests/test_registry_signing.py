"""Optional Ed25519 signing: a forged version (resealed card) is refused once keys are trusted."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import ParamsError, RegistryError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.data.manifest import file_sha256
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.pipeline.versions import open_registry
from mnist_pipeline.registry import Registry
from mnist_pipeline.registry.card import SEAL_KEY, seal
from mnist_pipeline.registry.signing import Signing, generate
from tests.registry_helpers import MODEL, PARAMS, model_dir, stored, writable


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
    card_path = stored(registry, version, "card.json")
    card = json.loads(card_path.read_text())
    card["files"]["model.onnx"] = file_sha256(stored(registry, donor, "model.onnx"))
    body = {k: v for k, v in card.items() if k != SEAL_KEY}
    writable(card_path).write_text(json.dumps(seal(body)))


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "signing" / "mnist.key"
    with contextlib.chdir(tmp_path):  # the paths it prints are absolute
        result = runner.invoke(app, ["models", "keygen", "signing/mnist.key"])
    assert result.exit_code == 0, result.output
    assert f"private key {key} (mode 0600), public key {key}.pub" in " ".join(result.output.split())
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in Path(f"{key}.pub").read_bytes()
    again = runner.invoke(app, ["models", "keygen", str(key)])
    assert again.exit_code == 1 and "already exists; not overwriting a key" in str(again.exception)
    folder = runner.invoke(app, ["models", "keygen", str(key.parent)])
    assert folder.exit_code == 1
    assert "signing is a folder: give the key file" in str(folder.exception)
    with contextlib.chdir(key.parent):  # a folder with no name of its own, too
        here = runner.invoke(app, ["models", "keygen", "."])
    assert here.exit_code == 1 and str(here.exception).startswith(". is a folder: give the key")
    for empty in ("", " "):  # said as such, not " is a folder"
        blank = runner.invoke(app, ["models", "keygen", empty])
        assert blank.exit_code == 2 and "the key file's path is empty" in blank.output
    new_folder = runner.invoke(app, ["models", "keygen", f"{tmp_path}/keys/"])  # not there yet
    assert new_folder.exit_code == 1 and "keys/ is a folder: give the key" in str(
        new_folder.exception
    )
    assert not (tmp_path / "keys").exists()
    for named in ("keys/.", "keys/./", "keys/.."):  # a Path drops "/.": a file named keys
        dotted = runner.invoke(app, ["--root", str(tmp_path), "models", "keygen", named])
        assert dotted.exit_code == 1 and "is a folder: give the key" in str(dotted.exception)
    assert not (tmp_path / "keys").exists()
    for name in ("other.pub", "OTHER.PUB", ".pub"):
        named_public = runner.invoke(app, ["models", "keygen", str(key.parent / name)])
        assert named_public.exit_code == 1 and "without .pub" in str(named_public.exception)
    assert sorted(p.name for p in key.parent.iterdir()) == ["mnist.key", "mnist.key.pub"]
    nowhere = runner.invoke(app, ["models", "keygen", "/proc/mnist.key"])  # no file goes there
    assert isinstance(nowhere.exception, OSError)
    assert nowhere.exception.filename == "/proc/mnist.key"  # not the temp file's name
    project = tmp_path / "project"  # a relative PATH is under --root, as registry.signing_key
    project.mkdir()
    with contextlib.chdir(key.parent):
        elsewhere = runner.invoke(app, ["--root", str(project), "models", "keygen", "keys/k"])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (project / "keys" / "k").is_file() and not (key.parent / "keys").exists()


def test_keygen_stopped_part_way_leaves_no_half_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (or Ctrl-C) between the private and the public key must not leave a key
    file that every retry refuses to overwrite: both are made whole, or neither."""
    import errno
    import os

    link, calls = os.link, []

    def disk_full_at_the_second(source, target, *args, **kwargs):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return link(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "link", disk_full_at_the_second)
    with pytest.raises(OSError, match="No space left"):
        generate(tmp_path / "k")
    assert list(tmp_path.iterdir()) == []

    def no_hard_links(*args, **kwargs):  # vfat, some network shares
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    generate(tmp_path / "copied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copied", "copied.pub"]
    assert stat.S_IMODE((tmp_path / "copied").stat().st_mode) == 0o600
    for made in tmp_path.iterdir():
        made.unlink()
    monkeypatch.setattr(os, "link", link)
    pub, _ = generate(tmp_path / "k")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"] and pub.is_file()
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_a_forged_version_passes_the_seal_but_not_the_signature(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    signed = registry(root, keys["old"], [keys["old"]])
    register_candidate(signed, make(1, accuracy=0.95), PARAMS)
    register_candidate(signed, make(2, accuracy=0.96), PARAMS)
    assert "signature" in signed.card("1") and signed.verify() == []
    signed.fetch("1", "model.onnx")
    forge(signed, 2, donor=1)
    # The unkeyed seal cannot tell: without trusted keys the forgery reads as intact.
    assert (
        Registry(root, MODEL).fetch("2", "model.onnx").read_bytes()
        == signed.fetch("1", "model.onnx").read_bytes()
    )
    with pytest.raises(RegistryError, match="v2: the signature does not match card.json"):
        signed.fetch("2", "model.onnx")
    assert any("v2: the signature does not match" in p for p in signed.verify())


def test_unsigned_versions_are_refused_only_when_required(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    register_candidate(Registry(root, MODEL), make(1), PARAMS)  # no signing key configured
    registry(root, None, [keys["old"]]).fetch(
        "1", "model.onnx"
    )  # trusted keys alone: unsigned is allowed
    strict = registry(root, None, [keys["old"]], required=True)
    with pytest.raises(RegistryError, match=r"mnist-cnn v1 is not signed \(registry.require"):
        strict.fetch("1", "model.onnx")
    # Nor is the unsigned event that made it production followed (audit.refuse_forged).
    with pytest.raises(RegistryError, match=r"alias event 1 is not signed \(registry.require"):
        strict.fetch("production", "model.onnx")
    # Deleting the signature (the seal stays valid) does not make an acceptable unsigned card.
    register_candidate(registry(root, keys["old"], [keys["old"]]), make(2), PARAMS)
    strict.fetch("2", "model.onnx")
    card_path = stored(strict, 2, "card.json")
    card = json.loads(card_path.read_text())
    del card["signature"]
    writable(card_path).write_text(json.dumps(card))
    with pytest.raises(RegistryError, match="v2 is not signed"):
        strict.fetch("2", "model.onnx")


def test_rotation_keeps_old_versions_while_their_key_is_trusted(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    register_candidate(registry(root, keys["old"], [keys["old"]]), make(1, accuracy=0.98), PARAMS)
    rotated = registry(root, keys["new"], [keys["old"], keys["new"]], required=True)
    register_candidate(rotated, make(2, accuracy=0.99), PARAMS)  # better: production
    assert (
        rotated.verify() == []
        and rotated.fetch("1", "model.onnx")
        and rotated.fetch("2", "model.onnx")
    )
    retired = registry(root, None, [keys["new"]], required=True)  # old public key removed
    retired.fetch("2", "model.onnx")
    with pytest.raises(RegistryError, match=r"v1 is signed by key [0-9a-f]{16}, which is not"):
        retired.fetch("1", "model.onnx")
    # the old key's alias events stay covered by the new key's after them: the aliases read,
    # resolve and move as before (removing the old key froze them all)
    assert retired.aliases() == {"production": 2}
    (problem,) = retired.verify()  # v1 itself, not the audit trail
    assert re.fullmatch(r"\S+ v1 is signed by key [0-9a-f]{16}, which is not trusted", problem)
    assert retired.read_file("production", "model.onnx") == rotated.read_file("2", "model.onnx")
    signer = registry(root, keys["new"], [keys["new"]], required=True)
    signer.promote(2, "staging")
    assert signer.aliases() == {"production": 2, "staging": 2}


def test_an_event_a_retired_key_signed_after_the_rotation_is_refused(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    """What a retired (perhaps stolen) key appends after the last trusted event is covered by
    nothing: reading the aliases refuses it."""
    root = tmp_path / "registry"
    register_candidate(registry(root, keys["new"], [keys["old"], keys["new"]]), make(1), PARAMS)
    registry(root, keys["old"], [keys["old"], keys["new"]]).promote(1, "staging")  # old key
    retired = registry(root, None, [keys["new"]], required=True)
    with pytest.raises(RegistryError, match=r"alias event 2 is signed by key .* not trusted"):
        retired.aliases()


def test_a_host_that_does_not_trust_a_new_key_never_drops_its_versions_decision(
    tmp_path: Path, keys: dict[str, Path], make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-rotation, host A signs with the new key and commits v2 for production, but dies
    before recording it in aliases.json. Host B does not trust the new key yet: a change it
    makes must not record v2 as handled with no alias (production would stay v1 everywhere);
    it is refused, naming the key, and once B trusts it, v2 becomes production."""
    root = tmp_path / "registry"
    old_only = registry(root, keys["old"], [keys["old"]])
    register_candidate(old_only, make(1, accuracy=0.97), PARAMS)
    rotated = registry(root, keys["new"], [keys["old"], keys["new"]])

    def lost(*args, **kwargs):  # the writer stops between its card and aliases.json
        raise OSError("gone")

    with monkeypatch.context() as patch:
        patch.setattr(type(rotated.storage), "swap", lost)
        done = register_candidate(rotated, make(2, accuracy=0.99), PARAMS)
    assert (done.version, done.alias) == (2, "production") and done.warning
    assert json.loads(rotated.storage.read(f"{MODEL}/aliases.json"))["last_version"] == 1
    with pytest.raises(RegistryError, match=r"v2 is signed by key [0-9a-f]{16}, which is not"):
        old_only.promote(1, "staging")
    with pytest.raises(RegistryError, match=r"v2 is signed by key [0-9a-f]{16}, which is not"):
        register_candidate(old_only, make(3, accuracy=0.98), PARAMS)  # nothing committed
    assert old_only.version_numbers() == [1, 2] and old_only.garbage() == []
    assert json.loads(rotated.storage.read(f"{MODEL}/aliases.json"))["last_version"] == 1
    caught_up = registry(root, keys["old"], [keys["old"], keys["new"]])
    caught_up.promote(1, "staging")
    assert caught_up.aliases() == {"production": 2, "staging": 1}


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
            open_registry(params.registry, layout)
    # a curve `cryptography` does not support (UnsupportedAlgorithm), a folder where a key goes
    (tmp_path / "keys" / "p112.pem").write_text(SECP112R1_KEY)
    (tmp_path / "keys" / "p112.pem").chmod(0o600)
    (tmp_path / "keys" / "folder").mkdir()
    for configured, message in (
        ({"signing_key": "keys/p112.pem"}, r"signing key .*p112.pem is not a PEM Ed25519 key"),
        ({"trusted_keys": ["keys/folder"]}, r"cannot read trusted key .*keys/folder: Is a dir"),
    ):
        params = parse_params({"registry": configured})
        with pytest.raises(RegistryError, match=message):
            open_registry(params.registry, layout)
    params = parse_params(
        {"registry": {"signing_key": "keys/new", "trusted_keys": ["keys/new.pub"]}}
    )
    assert open_registry(params.registry, layout).signing.key is not None
    p256 = tmp_path / "keys" / "p256.pem"  # a PEM private key, of another algorithm
    p256.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    p256.chmod(0o600)
    params = parse_params({"registry": {"signing_key": "keys/p256.pem"}})
    with pytest.raises(RegistryError, match=r"signing key .*p256.pem is not an Ed25519 key"):
        open_registry(params.registry, layout)


def test_key_files_others_could_misuse_are_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    """As OpenSSH refuses a private key that is "too open": a signing key others may read or
    write, or a trusted key anyone may write, is refused with the chmod that fixes it."""
    layout = Layout(tmp_path)
    both = {"signing_key": "keys/new", "trusted_keys": ["keys/new.pub"]}
    private, public = keys["new"], keys["new"].with_suffix(".pub")
    for path, mode, message in (
        (private, 0o640, r"signing key .*keys/new is open to other users \(mode 0640\)"),
        (private, 0o604, r"\(mode 0604\): only its owner may read it; run chmod 600 .*keys/new$"),
        (private, 0o620, r"signing key .*keys/new is open to other users \(mode 0620\)"),
        (public, 0o666, r"trusted key .*new.pub is writable by any user \(mode 0666\)"),
    ):
        path.chmod(mode)
        with pytest.raises(RegistryError, match=message):
            open_registry(parse_params({"registry": both}).registry, layout)
        path.chmod(0o600 if path == private else 0o644)
    for path, mode in ((private, 0o400), (private, 0o700), (public, 0o664), (public, 0o444)):
        path.chmod(mode)  # owner-only private keys; public keys anyone reads, a group writes
        assert open_registry(parse_params({"registry": both}).registry, layout).signing.key
        path.chmod(0o600 if path == private else 0o644)
    folder = public.parent  # anyone could delete the trusted key there and put theirs in
    below = r"trusted key .*new.pub is below .*{}, which any user may write"
    for open_folder in (folder, tmp_path):  # the key's folder, or one above it (renamed away)
        open_folder.chmod(0o777)
        with pytest.raises(RegistryError, match=below.format(open_folder.name)):
            open_registry(parse_params({"registry": both}).registry, layout)
        open_folder.chmod(0o1777)  # sticky, as /tmp: only a file's owner deletes it
        assert open_registry(parse_params({"registry": both}).registry, layout).signing.key
        open_folder.chmod(0o755)
    linked = tmp_path / "open"  # a link in an open folder to a key in a closed one
    linked.mkdir(mode=0o755)
    (linked / "new.pub").symlink_to(public)
    linked.chmod(0o777)
    via_link = {**both, "trusted_keys": ["open/new.pub"]}
    with pytest.raises(RegistryError, match=below.format("open")):
        open_registry(parse_params({"registry": via_link}).registry, layout)
    linked.chmod(0o755)
    closed = tmp_path / "closed"  # a link in a closed folder to a key in an open one
    closed.mkdir(mode=0o755)
    (closed / "new.pub").symlink_to(public)
    folder.chmod(0o777)
    via_closed = {**both, "trusted_keys": ["closed/new.pub"]}
    with pytest.raises(RegistryError, match=below.format(folder.name)):
        open_registry(parse_params({"registry": via_closed}).registry, layout)
    folder.chmod(0o755)
    if os.getuid() == 0:  # another user's key shared with a group: its owner's choice
        os.chown(private, 4242, 4242)
        private.chmod(0o640)
        assert open_registry(parse_params({"registry": both}).registry, layout).signing.key
        os.chown(private, 0, 0)


# a throwaway EC key on secp112r1 (`openssl ecparam -name secp112r1 -genkey -noout`)
SECP112R1_KEY = """-----BEGIN EC PRIVATE KEY-----
MD4CAQEEDi4P0K91uXB1DQnw57xeoAcGBSuBBAAGoSADHgAEm1XTERIp9lTvmHDO
wkpybjanA2E9mffWBUkziw==
-----END EC PRIVATE KEY-----
"""


def test_without_required_signatures_a_host_with_no_signing_key_writes(
    keys: dict[str, Path],
) -> None:
    """Trusted keys alone check what is read; writing unsigned is refused only when required."""
    trusted = [Path(f"{keys['old']}.pub")]
    Signing.load(None, trusted, required=False).require_signer()
    with pytest.raises(RegistryError, match="require_signature is on"):
        Signing.load(None, trusted, required=True).require_signer()


@pytest.mark.parametrize("signing_key", [None, "new"], ids=["no-key", "untrusted-key"])
def test_a_required_signature_refuses_writes_this_machine_cannot_sign(
    tmp_path: Path, keys: dict[str, Path], make, signing_key: str | None
) -> None:
    root = tmp_path / "registry"
    signer = registry(root, keys["old"], [keys["old"]], required=True)
    for seed, accuracy in ((1, 0.98), (2, 0.97)):
        register_candidate(signer, make(seed, accuracy=accuracy), PARAMS, 0.0)
    signer.promote(2, "production")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    key = keys[signing_key] if signing_key else None
    unable = registry(root, key, [keys["old"]], required=True)
    writes = {
        "promote": lambda: unable.promote(1, "production"),
        "rollback": lambda: unable.rollback(),
        "note": lambda: unable.note(2, "production", "reject", "not this one"),
        "register": lambda: register_candidate(unable, make(3), PARAMS, 0.0),
    }
    for what, write in writes.items():
        with pytest.raises(RegistryError, match=r"^refusing to write .*registry\.signing_key"):
            write()
        after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        assert after == before, what  # nothing written
    assert unable.aliases()["production"] == 2 and unable.verify() == []


def test_a_key_that_is_not_trusted_signs_nothing_even_when_signatures_are_optional(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    root = tmp_path / "registry"
    register_candidate(registry(root, keys["old"], [keys["old"]], required=False), make(1), PARAMS)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    stranger = registry(root, keys["new"], [keys["old"]], required=False)
    with pytest.raises(RegistryError, match=r"registry\.signing_key \(key \w+\) is not among"):
        register_candidate(stranger, make(2), PARAMS)  # it would be unreadable here
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_events_written_before_signing_are_vouched_for_by_the_first_signed_one(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    """A registry used unsigned, then `require_signature`: its unsigned alias events are refused
    until a signed move vouches for them (made while signatures are still optional); an
    unsigned event after a signed one stays refused."""
    root = tmp_path / "registry"
    unsigned = registry(root, None, [])
    register_candidate(unsigned, make(1, accuracy=0.97), PARAMS, 0.0)  # unsigned card, events
    register_candidate(unsigned, make(2), PARAMS, 0.0)
    strict = registry(root, keys["old"], [keys["old"]], required=True)
    with pytest.raises(RegistryError, match=r"alias events 1-2 are not signed .* make one move"):
        strict.aliases()
    optional = registry(root, keys["old"], [keys["old"]], required=False)
    register_candidate(optional, make(3), PARAMS, 0.0)  # a signed card and a signed event
    assert strict.aliases() == optional.aliases()
    assert not any("alias event" in problem for problem in strict.verify())  # vouched for
    unsigned.promote(2, "staging")  # unsigned after a signed event: refused, as ever
    with pytest.raises(RegistryError, match=r"alias event \d+ is not signed \(registry"):
        registry(root, None, [keys["old"]], required=True).aliases()


def test_the_unsigned_events_are_named_where_they_are(keys: dict[str, Path]) -> None:
    from mnist_pipeline.registry import trail

    stranger = Signing.load(keys["new"], [keys["new"].with_name("new.pub")], False)
    event = {"action": "promote", "alias": "production", "version": 1}
    first = trail.chained([], event, stranger.sign)  # signed, by a key not trusted below
    second = trail.chained([first], {"action": "promote", "alias": "staging", "version": 1}, None)
    strict = Signing.load(None, [keys["old"].with_name("old.pub")], True)
    problems = trail.check([first, second], strict)
    assert any(p.startswith("alias event 1 is signed by key") for p in problems), problems
    assert any(p.startswith("alias event 2 is not signed") for p in problems), problems


def test_a_lowered_last_version_cannot_undo_a_signed_rollback(
    tmp_path: Path, keys: dict[str, Path], make
) -> None:
    """`last_version` lies outside the signed chain: lowered by hand, every reader would replay
    v2's decision and serve the version production was rolled back from. Reads under trusted
    keys refuse it, and verify reports it with or without keys."""
    root = tmp_path / "registry"
    signed = registry(root, keys["old"], [keys["old"]], required=True)
    register_candidate(signed, make(1, accuracy=0.95), PARAMS)
    register_candidate(signed, make(2, accuracy=0.99), PARAMS)
    assert signed.version_of("production") == 2
    signed.rollback()
    assert signed.version_of("production") == 1
    aliases = model_dir(signed) / "aliases.json"
    document = json.loads(aliases.read_text())
    document["last_version"] = 0  # no key needed
    writable(aliases).write_text(json.dumps(document))
    fresh = registry(root, keys["old"], [keys["old"]], required=True)
    with pytest.raises(RegistryError, match=r"'last_version' is 0, but the audit trail records"):
        fresh.version_of("production")
    assert any("'last_version' is 0" in problem for problem in Registry(root, MODEL).verify())
