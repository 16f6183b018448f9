"""Quarantine of submitted digits: pending, review (accept, reject), the log, and no poisoning."""

from __future__ import annotations

import getpass
import hashlib
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from mnist_pipeline.cli import pending_view
from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout, within
from mnist_pipeline.core.params import IngestParams
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.inbox import extra, pending
from mnist_pipeline.inbox import store as inbox
from mnist_pipeline.inbox.ingest import ingest
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.predict import predict_files
from mnist_pipeline.serving.served_model import ServedModel
from mnist_pipeline.serving.server import feedback_of
from mnist_pipeline.serving.tokens import token_sha256
from tests.example_helpers import draw_digit
from tests.registry_helpers import MODEL, PARAMS, candidate_in, exported_candidate, writable

TOKEN = "attacker-kiosk-token-0001"


def sevens(folder: Path, count: int) -> list[Path]:
    """`count` different dark-on-light sevens (a bar and a stroke) as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    return [draw_digit(folder / f"seven{i}.png", i) for i in range(count)]


def cli(root: Path, *args: str):
    result = CliRunner().invoke(app, ["--root", str(root), "data", *args])
    return result


def reviewed(root: Path) -> list[dict]:
    log = pending.review_log(Layout(root).pending)
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_claims_are_grouped_per_image_with_duplicates_and_conflicts(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    a, b = (p.read_bytes() for p in sevens(tmp_path / "in", 2))
    first = pending.submit(layout.pending, layout.inbox, a, "a.png", 7, "token:alice", "10.0.0.1")
    assert first.status == "pending" and first.claim.client == "10.0.0.1"
    again = pending.submit(layout.pending, layout.inbox, a, "a.png", "7", "token:alice", "10.0.0.9")
    assert again.status == "known" and again.claim == first.claim  # as stored, not as sent again
    pending.submit(layout.pending, layout.inbox, a, "a.png", 1, "token:bob")
    pending.submit(layout.pending, layout.inbox, b, "b.png", 7, "cli:carol")
    one, two = sorted(pending.items(layout.pending), key=lambda i: i.path.read_bytes() != a)
    assert one.labels == [1, 7] and one.conflict and one.duplicate
    assert [c.source for c in one.claims] == ["token:alice", "token:bob"]
    assert two.labels == [7] and not two.conflict and not two.duplicate
    assert one.path == layout.pending / f"{one.sha256}.png" and one.path.read_bytes() == a
    with pytest.raises(DataError, match="x.png: not a recognised image"):
        pending.submit(layout.pending, layout.inbox, b"junk", "x.png", 1, "token:alice")
    with pytest.raises(pending.QuotaExceeded, match="token:bob has 1 image"):
        pending.submit(layout.pending, layout.inbox, b, "b.png", 7, "token:bob", quota=1)
    assert len(pending.items(layout.pending)) == 2 and inbox.entries(layout.inbox) == []


def test_a_sidecar_write_left_half_done_hides_no_pending_image(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    a, b = (p.read_bytes() for p in sevens(tmp_path / "in", 2))
    first = pending.submit(layout.pending, layout.inbox, a, "a.png", 7, "token:alice")
    # what a process killed while writing the next sidecar leaves (core/atomic.py's temp name)
    (layout.pending / f".{first.sha256}.json.k1ll3d.tmp.json").write_text('{"sha256": ')
    assert [i.sha256 for i in pending.items(layout.pending)] == [first.sha256]
    second = pending.submit(layout.pending, layout.inbox, b, "b.png", 7, "token:alice")
    accepted = pending.accept(layout.pending, layout.inbox, [second.sha256], "user:carol")
    assert [a.entry.sha256 for a in accepted] == [second.sha256]
    assert [i.sha256 for i in pending.items(layout.pending)] == [first.sha256]


def test_an_image_decided_while_the_queue_is_read_is_left_out(tmp_path: Path) -> None:
    """Another command accepts or rejects an image between the listing and the reading of its
    sidecar: the queue is read as a moment later, not refused with "No such file"."""
    layout = Layout(tmp_path)
    a, b = (p.read_bytes() for p in sevens(tmp_path / "in", 2))
    kept = pending.submit(layout.pending, layout.inbox, a, "a.png", 7, "token:alice").sha256
    gone = pending.submit(layout.pending, layout.inbox, b, "b.png", 7, "token:alice").sha256
    sidecar = layout.pending / f"{gone}.json"
    sidecar.unlink()
    sidecar.symlink_to(layout.pending / "decided-meanwhile.json")  # listed, then unreadable
    assert [i.sha256 for i in pending.items(layout.pending)] == [kept]


def test_accept_and_reject_move_atomically_and_are_logged(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    a, b, c = (p.read_bytes() for p in sevens(tmp_path / "in", 3))
    sha = {}
    for name, data, label, source in (
        ("a", a, 7, "token:x"),
        ("b", b, 7, "token:x"),
        ("b", b, 1, "token:y"),
        ("c", c, 7, "token:x"),
    ):
        sha[name] = pending.submit(layout.pending, layout.inbox, data, name, label, source).sha256
    for refs, label, message in (
        ([sha["a"][:8], "deadbeef00"], None, "'deadbeef00' matches no pending image"),
        ([sha["a"][:7]], None, f"'{sha['a'][:7]}' is too short a SHA-256 prefix: use 8 or more"),
        ([sha["a"][:8], sha["b"][:8]], None, "the claims disagree \\(labels \\[1, 7\\]\\)"),
    ):
        with pytest.raises(DataError, match=message):
            pending.accept(layout.pending, layout.inbox, refs, "rita", label)
    assert inbox.entries(layout.inbox) == [] and len(pending.items(layout.pending)) == 3
    assert reviewed(tmp_path) == []

    done = pending.accept(layout.pending, layout.inbox, [sha["a"][:8], sha["b"]], "rita", 7)
    assert [(d.entry.label, d.entry.sha256) for d in done] == [(7, sha["a"]), (7, sha["b"])]
    assert {e.sha256 for e in inbox.entries(layout.inbox)} == {sha["a"], sha["b"]}
    inbox.add(layout.inbox, c, "c", 3)  # meanwhile an operator stores c as a 3
    with pytest.raises(inbox.LabelConflict, match="already in the inbox labelled 3"):
        pending.accept(layout.pending, layout.inbox, [sha["c"]], "rita")
    (rejected,) = pending.reject(layout.pending, layout.inbox, [sha["c"][:10]], "rita")
    assert rejected.sha256 == sha["c"] and pending.items(layout.pending) == []
    assert list(layout.pending.iterdir()) == []
    log = reviewed(tmp_path)
    assert [(r["action"], r["sha256"], r["label"], r["who"]) for r in log] == [
        ("accept", sha["a"], 7, "rita"),
        ("accept", sha["b"], 7, "rita"),
        ("reject", sha["c"], None, "rita"),
    ]
    assert log[1]["claimed"] == [1, 7] and log[1]["sources"] == ["token:x", "token:y"]
    assert all(r["time"].endswith("Z") for r in log)


def test_cli_pending_accept_reject_and_plain_add(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    a, b, c = sevens(tmp_path / "in", 3)
    assert cli(tmp_path, "add", str(a), str(b), "--label", "1", "--pending").exit_code == 0
    assert inbox.entries(layout.inbox) == []
    listed = cli(tmp_path, "pending", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["predicted"] for r in rows] == [None, None]  # no production model: no prediction
    assert {r["claims"][0]["source"] for r in rows} == {f"cli:{getpass.getuser()}"}
    text = cli(tmp_path, "pending")
    assert text.stdout.count(" model - ") == 2 and "2 pending image(s)" in text.output
    saved = cli(tmp_path, "pending", "--save", str(tmp_path / "view"))  # copies to look at
    assert saved.exit_code == 0 and saved.stdout.count(str(tmp_path / "view")) == 2
    assert sorted(p.read_bytes() for p in (tmp_path / "view").iterdir()) == sorted(
        p.read_bytes() for p in (a, b)
    )
    with pytest.MonkeyPatch.context() as patch:  # one reviewed elsewhere after the listing
        real = pending_view.read_regular

        def gone(path: Path, limit: int) -> bytes:
            if path.name.startswith(rows[0]["sha256"]):
                raise FileNotFoundError(2, "No such file or directory", str(path))
            return real(path, limit)

        patch.setattr(pending_view, "read_regular", gone)
        later = cli(tmp_path, "pending", "--save", str(tmp_path / "later"))
    assert later.exit_code == 0, later.output
    assert [p.name.split(".")[0] for p in (tmp_path / "later").iterdir()] == [rows[1]["sha256"]]
    # saved again into a folder holding the copies: the same bytes are kept, other bytes of
    # the user's under a copy's name are not overwritten (and said so)
    (mine,) = (tmp_path / "later").iterdir()
    mine.write_bytes(b"my own notes")
    again = cli(tmp_path, "pending", "--save", str(tmp_path / "later"))
    assert again.exit_code == 0, again.output
    assert mine.read_bytes() == b"my own notes"
    told = " ".join(again.output.split())
    assert f"warning: {mine} exists and holds other bytes: not overwritten" in told
    assert again.stdout.count(str(tmp_path / "later")) == 1  # the other copy, saved
    same = cli(tmp_path, "pending", "--save", str(tmp_path / "view"))
    assert same.exit_code == 0 and "warning" not in same.output, same.output
    assert same.stdout.count(str(tmp_path / "view")) == 2

    missing = cli(tmp_path, "accept", "0123456789abcdef")
    assert isinstance(missing.exception, DataError)  # main() prints it as one line, exit 1
    assert "'0123456789abcdef' matches no pending image" in str(missing.exception)
    assert len(pending.items(layout.pending)) == 2
    first, second = (r["sha256"] for r in rows)
    accepted = cli(tmp_path, "accept", first[:8], "--label", "7")
    assert accepted.exit_code == 0, accepted.output
    assert [(e.label, e.sha256) for e in inbox.entries(layout.inbox)] == [(7, first)]
    assert cli(tmp_path, "reject", second[:12]).exit_code == 0
    assert pending.items(layout.pending) == [] and len(inbox.entries(layout.inbox)) == 1
    assert [(r["action"], r["who"]) for r in reviewed(tmp_path)] == [
        ("accept", getpass.getuser()),
        ("reject", getpass.getuser()),
    ]
    plain = cli(tmp_path, "add", str(c), "--label", "7")  # a shell operator is trusted
    assert plain.exit_code == 0 and len(inbox.entries(layout.inbox)) == 2
    # An operator is told at once when a pending label disagrees with the inbox's.
    unseen = draw_digit(tmp_path / "five.png", 5)  # in neither folder
    relabel = cli(tmp_path, "add", str(c), str(unseen), "--label", "3", "--pending")
    assert relabel.exit_code == 0, relabel.output
    assert relabel.output.count("warning:") == 1  # only c is in the inbox (labelled 7)
    assert f"warning: {c} is in the inbox labelled 7 (" in relabel.output
    agree = cli(tmp_path, "add", str(c), "--label", "7", "--pending")
    assert agree.exit_code == 0 and "warning" not in agree.output
    # Rejecting that claim keeps the image out of nothing: the inbox's copy still trains.
    sha = hashlib.sha256(c.read_bytes()).hexdigest()
    kept = cli(tmp_path, "reject", sha[:12])
    assert kept.exit_code == 0, kept.output
    assert f"rejected: {sha}" in kept.output
    assert (
        f"warning: {sha[:12]} is in the inbox labelled 7, so it still trains: "
        f"`mnist-pipeline data remove {sha[:12]}` takes it out"
    ) in " ".join(kept.output.split())
    assert len(inbox.entries(layout.inbox)) == 2


def test_pending_shows_the_production_models_digit_beside_the_claim(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    model = exported_candidate(tmp_path / "model", 1)
    register_candidate(Registry(tmp_path / "registry", MODEL), candidate_in(model), PARAMS, 0.0)
    images = sevens(tmp_path / "in", 2)
    assert cli(tmp_path, "add", *map(str, images), "--label", "1", "--pending").exit_code == 0
    expected = {
        inbox.validate(Path(p.file).read_bytes(), "x", 1)[1]: p.digit
        for p in predict_files(model / "model.onnx", images).predictions
    }
    listed = cli(tmp_path, "pending", "--json")
    assert listed.exit_code == 0, listed.output
    assert {r["sha256"]: r["predicted"] for r in json.loads(listed.stdout)} == expected
    rows = cli(tmp_path, "pending").stdout.splitlines()
    assert len(rows) == len(expected) == 2, rows
    for row in rows:
        sha = next(s for s in expected if row.startswith(s[:12]))
        assert f"claimed 1  model {expected[sha]} " in row
    # the registry's aliases damaged: the queue is still listed, without the model's digits
    aliases = tmp_path / "registry" / MODEL / "aliases.json"
    writable(aliases).write_text("{")
    damaged = cli(tmp_path, "pending", "--json")
    assert damaged.exit_code == 0, (damaged.output, damaged.exception)
    assert [r["predicted"] for r in json.loads(damaged.stdout)] == [None, None]
    assert "warning: no model column: " in damaged.stderr and "aliases.json" in damaged.stderr


def test_poisoned_feedback_never_reaches_ingest_until_accepted(tmp_path: Path) -> None:
    """Sevens labelled 1, posted with a valid token and added with --pending: ingest's output
    holds none of them; after one is accepted, exactly that one."""
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    (tmp_path / "tokens").write_text(f"kiosk {token_sha256(TOKEN)}\n")
    serve = ServeParams(feedback_tokens_file="tokens", feedback_rate_per_minute=1000)
    feedback = feedback_of(serve, layout)
    assert feedback is not None
    api = TestClient(
        create_app(ServedModel(Registry(tmp_path / "r", MODEL), "production"), serve, feedback)
    )
    images = sevens(tmp_path / "in", 24)
    for path in images[:16]:
        sent = api.post(
            "/feedback",
            headers={"Authorization": f"Bearer {TOKEN}"},
            files={"file": (path.name, path.read_bytes())},
            data={"label": "1"},
        )
        assert sent.status_code == 201, sent.text
    assert cli(tmp_path, "add", *map(str, images[16:]), "-l", "1", "--pending").exit_code == 0
    assert len(pending.items(layout.pending)) == 24

    result = ingest(IngestParams(), layout)
    assert result.counts == {"train": 0, "holdout": 0} and result.rejected == {}
    assert json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text()) == []
    assert result.extra_sha256 == extra.NO_EXTRA_SHA256

    chosen = pending.items(layout.pending)[0]
    assert cli(tmp_path, "accept", chosen.sha256[:8], "--label", "7").exit_code == 0
    result = ingest(IngestParams(), layout)
    manifest = json.loads((layout.extra_dir / extra.MANIFEST_FILE).read_text())
    assert [(m["sha256"], m["label"]) for m in manifest] == [(chosen.sha256, 7)]
    assert sum(result.counts.values()) == 1


def late_claim(monkeypatch: pytest.MonkeyPatch, action) -> None:
    """Run `action` once, just before the next taker of the inbox's lock gets it (a /feedback
    or another review that arrives while a review starts)."""
    real = inbox.lock

    def lock(folder: Path):
        monkeypatch.setattr(inbox, "lock", real)
        action()
        return real(folder)

    monkeypatch.setattr(inbox, "lock", lock)


def test_a_review_sees_the_claims_made_until_it_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    a, b = (p.read_bytes() for p in sevens(tmp_path / "in", 2))
    sha_a = pending.submit(layout.pending, layout.inbox, a, "a", 7, "token:x").sha256
    sha_b = pending.submit(layout.pending, layout.inbox, b, "b", 7, "token:x").sha256
    late_claim(
        monkeypatch, lambda: pending.submit(layout.pending, layout.inbox, a, "a", 1, "token:late")
    )
    with pytest.raises(DataError, match="the claims disagree"):  # not accepted as a 7 unseen
        pending.accept(layout.pending, layout.inbox, [sha_a], "rita")
    (item,) = [i for i in pending.items(layout.pending) if i.sha256 == sha_a]
    assert item.labels == [1, 7] and inbox.entries(layout.inbox) == []

    late_claim(
        monkeypatch, lambda: pending.submit(layout.pending, layout.inbox, b, "b", 2, "token:late")
    )
    pending.reject(layout.pending, layout.inbox, [sha_b], "rita")
    (log,) = reviewed(tmp_path)
    assert log["sha256"] == sha_b and log["sources"] == ["token:late", "token:x"]
    assert log["claimed"] == [2, 7]


def test_accept_moves_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path)
    a, b, c = (p.read_bytes() for p in sevens(tmp_path / "in", 3))
    sha = [
        pending.submit(layout.pending, layout.inbox, data, "x", 7, "token:x").sha256
        for data in (a, b, c)
    ]
    late_claim(monkeypatch, lambda: pending.reject(layout.pending, layout.inbox, [sha[1]], "bo"))
    with pytest.raises(DataError, match=f"'{sha[1]}' matches no pending image"):
        pending.accept(layout.pending, layout.inbox, sha[:2], "rita")  # b rejected meanwhile
    (item,) = [i for i in pending.items(layout.pending) if i.sha256 == sha[2]]
    item.path.write_bytes(a)  # the file no longer holds the image its name says
    with pytest.raises(
        DataError, match=r"not the SHA-256 it is named by \(damaged\?\); nothing was accepted"
    ):
        pending.accept(layout.pending, layout.inbox, [sha[0], sha[2]], "rita")
    assert inbox.entries(layout.inbox) == []
    assert [r["action"] for r in reviewed(tmp_path)] == ["reject"]
    assert {i.sha256 for i in pending.items(layout.pending)} == {sha[0], sha[2]}


def test_an_accept_whose_review_line_cannot_be_written_moves_nothing(tmp_path: Path) -> None:
    """The review line is written before the image enters the inbox: training never gets an
    image the review log does not show accepted."""
    layout = Layout(tmp_path)
    (data,) = (p.read_bytes() for p in sevens(tmp_path / "in", 1))
    sha = pending.submit(layout.pending, layout.inbox, data, "x", 7, "token:x").sha256
    pending.review_log(layout.pending).mkdir(parents=True)  # the log cannot be appended to
    with pytest.raises(OSError):
        pending.accept(layout.pending, layout.inbox, [sha], "rita")
    assert inbox.entries(layout.inbox) == []
    assert [i.sha256 for i in pending.items(layout.pending)] == [sha]  # still to review


def test_a_sidecar_must_name_its_own_image(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (a,) = (p.read_bytes() for p in sevens(tmp_path / "in", 1))
    sha = pending.submit(layout.pending, layout.inbox, a, "a", 7, "token:x").sha256
    sidecar = layout.pending / f"{sha}.json"
    good = json.loads(sidecar.read_text())
    for change in (
        {"sha256": "../../params"},
        {"sha256": "0" * 64},
        {"file": "other.png"},
        {"claims": [{"label": 12, "source": "token:x", "time": "t"}]},
        {"claims": []},
        # fields of other types: the listing and the review commands read them as text
        {"claims": [{"label": 7, "source": 5, "time": "t"}]},
        {"claims": [{"label": 7, "source": "token:x", "time": None}]},
        {"claims": [{"label": 7, "source": "token:x", "time": "t", "client": ["1.2.3.4"]}]},
        {"claims": [{"label": True, "source": "token:x", "time": "t"}]},
    ):
        sidecar.write_text(json.dumps({**good, **change}))
        with pytest.raises(pending.BadRecord, match=f"{sidecar}: "):
            pending.items(layout.pending)
    sidecar.write_bytes(b"\xff\xfe")
    with pytest.raises(pending.BadRecord, match="not a pending-image record"):
        pending.items(layout.pending)
    sidecar.write_text(json.dumps({"claims": good["claims"], "sha256": sha}))
    with pytest.raises(pending.BadRecord) as refused:  # what is missing, and what to do
        pending.items(layout.pending)
    assert str(refused.value) == (
        f"{sidecar}: not a pending-image record (no 'file' key); move it and its image out of "
        f"{layout.pending}"
    )


def test_a_failed_sidecar_write_leaves_no_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    (a,) = (p.read_bytes() for p in sevens(tmp_path / "in", 1))

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pending, "write_json", full)
    with pytest.raises(OSError, match="No space"):
        pending.submit(layout.pending, layout.inbox, a, "a", 7, "token:x")
    assert list(layout.pending.iterdir()) == []


def test_a_submission_does_not_tell_whether_the_inbox_holds_the_image(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    a, b = (p.read_bytes() for p in sevens(tmp_path / "in", 2))
    inbox.add(layout.inbox, a, "a", 7)
    there = pending.submit(layout.pending, layout.inbox, a, "a", 7, "token:x")
    fresh = pending.submit(layout.pending, layout.inbox, b, "b", 7, "token:x")
    assert there.status == fresh.status == "pending"
    (done,) = pending.accept(layout.pending, layout.inbox, [there.sha256], "rita")
    assert not done.new and len(inbox.entries(layout.inbox)) == 1


def test_cli_label_relabels_one_image_and_needs_no_login_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")

    def nobody() -> str:
        raise KeyError("getpwuid(): uid not found: 1234")

    monkeypatch.setattr(getpass, "getuser", nobody)
    a, b = sevens(tmp_path / "in", 2)
    assert cli(tmp_path, "add", str(a), str(b), "--label", "1", "--pending").exit_code == 0
    shas = [i.sha256 for i in pending.items(Layout(tmp_path).pending)]
    assert {i.claims[0].source for i in pending.items(Layout(tmp_path).pending)} == {"cli:unknown"}
    both = cli(tmp_path, "accept", *shas, "--label", "7")
    assert both.exit_code == 2  # a usage error
    assert "--label" in both.output and "relabels one image" in both.output
    assert inbox.entries(Layout(tmp_path).inbox) == []
    assert cli(tmp_path, "accept", *shas).exit_code == 0  # each under its claimed label
    assert [(r["label"], r["who"]) for r in reviewed(tmp_path)] == [(1, "unknown"), (1, "unknown")]


def test_accepted_images_count_for_the_retraining_trigger(tmp_path: Path) -> None:
    """Reviewed digits are the new labelled digits of a trusted loop: `data accept` counts them
    as `data add` does (data/.extra.pending.json here; the store's count with a shared inbox)."""
    from mnist_pipeline.inbox import events as inbox_events

    layout = Layout(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    images = [str(p) for p in sevens(tmp_path / "in", 3)]
    assert cli(tmp_path, "add", *images, "--label", "7", "--pending").exit_code == 0
    assert inbox_events.read_pending(layout.inbox) == 0  # quarantined: not training data yet
    first, *rest = (item.sha256 for item in pending.items(layout.pending))
    assert cli(tmp_path, "accept", first[:8]).exit_code == 0
    assert inbox_events.read_pending(layout.inbox) == 1
    assert cli(tmp_path, "accept", *(sha[:8] for sha in rest)).exit_code == 0
    assert inbox_events.read_pending(layout.inbox) == 3


def test_images_accepted_before_a_failed_write_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnist_pipeline.inbox import events as inbox_events

    layout = Layout(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    images = [str(p) for p in sevens(tmp_path / "in", 2)]
    assert cli(tmp_path, "add", *images, "--label", "7", "--pending").exit_code == 0
    add, calls = inbox.add, []

    def disk_full_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return add(*args, **kwargs)

    monkeypatch.setattr(inbox, "add", disk_full_on_the_second)
    shas = [item.sha256[:8] for item in pending.items(layout.pending)]
    failed = cli(tmp_path, "accept", *shas)
    assert isinstance(failed.exception, OSError)  # the write's own error, not the count's
    assert len(inbox.entries(layout.inbox)) == 1 and inbox_events.read_pending(layout.inbox) == 1


def test_a_pending_area_that_is_a_file_is_named_not_read_as_empty(tmp_path: Path) -> None:
    """`data pending` said nothing waits where data/pending is a file, while `data add
    --pending` failed there: both now name the problem."""
    (tmp_path / "params.yaml").write_text("{}\n")
    Layout(tmp_path).pending.parent.mkdir(parents=True)
    Layout(tmp_path).pending.write_text("")
    listed = cli(tmp_path, "pending")
    assert listed.exit_code == 1 and isinstance(listed.exception, DataError)
    assert "pending area" in str(listed.exception) and "is not a folder" in str(listed.exception)


def test_a_save_folder_that_is_a_link_to_itself_is_one_line(tmp_path: Path) -> None:
    """A symbolic link loop given as --save: the OS's error about it (one line from main()),
    not Python's RuntimeError traceback from resolving the path."""
    (tmp_path / "params.yaml").write_text("{}\n")
    (a,) = sevens(tmp_path / "in", 1)
    assert cli(tmp_path, "add", str(a), "--label", "7", "--pending").exit_code == 0
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    refused = cli(tmp_path, "pending", "--save", str(loop))
    assert isinstance(refused.exception, OSError), refused.exception
    assert not within(loop, tmp_path / "data") and within(loop, tmp_path)


def test_an_accept_one_image_of_which_cannot_be_stored_moves_and_logs_nothing(
    tmp_path: Path,
) -> None:
    """The file the second image would be stored as holds other bytes (edited in place): the
    accept is refused before anything moves, and the review log records no accept."""
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    a, b = sevens(tmp_path / "in", 2)
    assert cli(tmp_path, "add", str(a), str(b), "--label", "1", "--pending").exit_code == 0
    first, second = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b))
    blocking = layout.inbox / "1" / f"{second}.png"
    blocking.parent.mkdir(parents=True)
    blocking.write_bytes(b.read_bytes()[:60])
    refused = cli(tmp_path, "accept", first[:8], second[:8])
    assert isinstance(refused.exception, DataError), refused.output
    assert "holds other bytes than the image its name says" in str(refused.exception)
    assert sorted(item.sha256 for item in pending.items(layout.pending)) == sorted([first, second])
    assert all(entry.sha256 != first for entry in inbox.entries(layout.inbox))
    assert not any(line["action"] == "accept" for line in reviewed(tmp_path))
    assert blocking.read_bytes() == b.read_bytes()[:60]  # the other image's only copy, kept


@pytest.mark.parametrize("label", ["4", "9"])
def test_a_damaged_pending_image_is_repaired_by_sending_it_again(
    tmp_path: Path, label: str
) -> None:
    """A pending copy whose bytes no longer match its name (cut short on disk) cannot be
    accepted; the same image sent again (the same claim, or another) writes it anew."""
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    (a,) = sevens(tmp_path / "in", 1)
    assert cli(tmp_path, "add", str(a), "--label", "4", "--pending").exit_code == 0
    (item,) = pending.items(layout.pending)
    Path(item.path).write_bytes(a.read_bytes()[:100])
    refused = cli(tmp_path, "accept", item.sha256[:8], "--label", "4")
    assert isinstance(refused.exception, DataError)
    assert "`data reject` removes it" in str(refused.exception)
    assert cli(tmp_path, "add", str(a), "--label", label, "--pending").exit_code == 0
    assert Path(item.path).read_bytes() == a.read_bytes()
    assert cli(tmp_path, "accept", item.sha256[:8], "--label", "4").exit_code == 0


def resaved(path: Path, mode: str) -> bytes:
    """The image at `path` saved again as a PNG of `mode`: other bytes, the same drawing."""
    out = io.BytesIO()
    Image.open(path).convert(mode).save(out, format="PNG")
    return out.getvalue()


def test_a_copy_of_an_inbox_drawing_under_another_label_is_not_accepted(tmp_path: Path) -> None:
    """A re-saved copy (RGBA: other bytes, the same pixels once preprocessed) claimed as another
    digit: accepted, ingest would drop it and the inbox's own image; refused with both named."""
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    a, b = sevens(tmp_path / "in", 2)
    assert cli(tmp_path, "add", str(a), "--label", "7").exit_code == 0
    copy, other_copy = tmp_path / "in" / "copy.png", tmp_path / "in" / "copy-la.png"
    copy.write_bytes(resaved(a, "RGBA"))
    other_copy.write_bytes(resaved(b, "LA"))
    for path, label in ((copy, "3"), (other_copy, "1"), (b, "7")):
        assert cli(tmp_path, "add", str(path), "--label", label, "--pending").exit_code == 0
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, copy, other_copy)}
    assert len(set(sha.values())) == 4
    before = inbox.entries(layout.inbox)
    for refs in ([sha[copy][:8]], [sha[b][:8], sha[other_copy][:8]]):
        refused = cli(tmp_path, "accept", *refs)
        assert isinstance(refused.exception, inbox.LabelConflict), refused.output
        assert "the same drawing as" in str(refused.exception)
        assert inbox.entries(layout.inbox) == before and reviewed(tmp_path) == []
    assert len(pending.items(layout.pending)) == 3
    assert cli(tmp_path, "accept", sha[copy][:8], "--label", "7").exit_code == 0
    ingested = ingest(IngestParams(), layout)
    assert ingested.rejected == {}  # one digit, kept once: nothing dropped


def test_data_add_refuses_a_copy_of_an_inbox_drawing_under_another_label(tmp_path: Path) -> None:
    """`data add` as `data accept`: a re-saved copy labelled otherwise would make ingest drop
    both; with the same label it is added (ingest keeps the drawing once)."""
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    (a,) = sevens(tmp_path / "in", 1)
    assert cli(tmp_path, "add", str(a), "--label", "7").exit_code == 0
    copy = tmp_path / "in" / "copy.png"
    copy.write_bytes(resaved(a, "RGBA"))
    refused = cli(tmp_path, "add", str(copy), "--label", "3")
    assert isinstance(refused.exception, inbox.LabelConflict), refused.output
    assert "the same drawing as" in str(refused.exception) and "labelled 7" in str(
        refused.exception
    )
    assert [entry.label for entry in inbox.entries(layout.inbox)] == [7]
    assert cli(tmp_path, "add", str(copy), "--label", "7").exit_code == 0
    assert [entry.label for entry in inbox.entries(layout.inbox)] == [7, 7]


def test_save_lists_a_damaged_pending_image_where_it_is_and_counts_it(tmp_path: Path) -> None:
    """A pending image whose bytes were changed on disk is not copied (it is not the image it
    is named by), but it still waits for review: the listing keeps it, at its own path, the
    count includes it, and the warning says how to recover."""
    (tmp_path / "params.yaml").write_text("{}\n")
    layout = Layout(tmp_path)
    images = sevens(tmp_path / "in", 2)
    assert cli(tmp_path, "add", *map(str, images), "--label", "7", "--pending").exit_code == 0
    damaged, intact = sorted(pending.items(layout.pending), key=lambda i: i.path)
    Path(damaged.path).write_bytes(b"\x89PNG cut short")
    listed = cli(tmp_path, "pending", "--save", str(tmp_path / "look"))
    assert listed.exit_code == 0, listed.output
    text = " ".join(listed.output.split())
    assert "2 pending image(s)" in text
    assert f"{damaged.path} is not the image it is named by" in text
    assert "reject it, or send the image again" in text
    assert [p.name for p in (tmp_path / "look").iterdir()] == [f"{intact.sha256}.png"]
    assert str(damaged.path) in text and str(tmp_path / "look" / f"{intact.sha256}.png") in text
    damaged_source = next(
        p for p in images if hashlib.sha256(p.read_bytes()).hexdigest() == damaged.sha256
    )
    assert cli(tmp_path, "add", str(damaged_source), "--label", "7", "--pending").exit_code == 0
    again = cli(tmp_path, "pending", "--save", str(tmp_path / "look"))
    assert "not the image" not in again.output and len(list((tmp_path / "look").iterdir())) == 2


def test_a_sidecar_under_another_images_name_is_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    a, b = (p.read_bytes() for p in sevens(tmp_path / "in", 2))
    sha_a = pending.submit(layout.pending, layout.inbox, a, "a", 7, "token:x").sha256
    sha_b = pending.submit(layout.pending, layout.inbox, b, "b", 7, "token:x").sha256
    # b's sidecar overwritten with a's record (valid sha256 and file, but not b's own)
    (layout.pending / f"{sha_b}.json").write_bytes((layout.pending / f"{sha_a}.json").read_bytes())
    with pytest.raises(pending.BadRecord, match="not the SHA-256 it is named by"):
        pending.items(layout.pending)
