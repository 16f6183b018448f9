"""The review queue on the shared inbox's store: digits claimed on one host (/feedback, `data add
--pending`) are reviewed on another; quotas count every host's claims; a review decides exactly
the claims it read; a claim object that is not one is never accepted; a host's earlier
quarantine moves into the store; a store that is down stores nothing. On a folder store and on
moto's S3 server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import DataError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.inbox import (
    pending,
    review_move,
    review_queue,
    review_records,
    review_shared,
    seen,
    shared_edits,
    store,
    sync,
)
from mnist_pipeline.inbox.pending import QuotaExceeded
from mnist_pipeline.inbox.shared import SharedInbox, StoreUnavailable
from mnist_pipeline.registry import Registry
from mnist_pipeline.serving.feedback import UNAVAILABLE
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.served_model import ServedModel
from mnist_pipeline.serving.server import feedback_of
from mnist_pipeline.serving.tokens import token_sha256
from tests.example_helpers import draw_digit
from tests.inbox_shared_helpers import digit, labels
from tests.s3_helpers import new_bucket, proxy, use_endpoint

TOKEN = "kiosk-token-for-the-shared-queue"


def review_log(shared: SharedInbox) -> list[dict]:
    keys = shared.storage.list(review_records.REVIEW_LOG)
    return [json.loads(body) for body in shared.storage.read_many(keys)]


def test_claims_made_on_one_host_are_reviewed_on_another(location: str, tmp_path: Path) -> None:
    shared = SharedInbox(location)  # each host opens the store itself; only the store is shared
    three, seven, eight = (digit(tmp_path, seed) for seed in (1, 2, 3))
    first = review_queue.submit(SharedInbox(location), three, "a.png", 3, "token:kiosk", "10.0.0.5")
    assert first.status == "pending"
    again = review_queue.submit(shared, three, "a.png", 3, "token:kiosk", "10.0.0.9")
    assert again.status == "known" and again.claim == first.claim  # as stored, not as sent again
    review_queue.submit(shared, three, "b.png", 3, "cli:ann")  # the same label, another source
    review_queue.submit(shared, seven, "c.png", 7, "token:kiosk")
    review_queue.submit(shared, seven, "c.png", 1, "cli:ann")  # disagrees
    review_queue.submit(shared, eight, "d.png", 8, "token:kiosk")

    read = review_queue.queue(SharedInbox(location))
    found = {item.sha256: item for item in read.found}
    assert [found[first.sha256].labels, found[first.sha256].duplicate] == [[3], True]
    clients = {(c.source, c.client) for c in found[first.sha256].claims}
    assert clients == {("token:kiosk", "10.0.0.5"), ("cli:ann", None)}
    assert [i.labels for i in read.found if i.conflict] == [[1, 7]]
    assert read.images[first.sha256] == three and read.problems == {}

    reviewer = tmp_path / "reviewer" / "extra"  # the reviewing host's inbox folder
    with pytest.raises(DataError, match="the claims disagree"):
        review_shared.accept(shared, reviewer, [first.sha256[:8], seven_sha(read)], "bob")
    assert labels(reviewer) == [] and shared.records() == ({}, {})  # all or nothing

    (added,) = review_shared.accept(shared, reviewer, [first.sha256[:10]], "bob")
    assert (added.new, added.entry.label) == (True, 3)
    assert shared.record(first.sha256).label == 3  # in the shared inbox: every worker syncs it
    eight_sha = next(i.sha256 for i in read.found if i.labels == [8])
    (gone,) = review_shared.reject(shared, reviewer, [eight_sha[:8]], "bob")
    assert gone.sha256 == eight_sha and shared.record(eight_sha) is None

    left = review_queue.queue(shared).found
    assert [i.labels for i in left] == [[1, 7]]  # the conflict still waits for its reviewer
    logged = sorted(review_log(shared), key=lambda line: line["action"])
    assert [(line["action"], line["who"], line["label"]) for line in logged] == [
        ("accept", "bob", 3),
        ("reject", "bob", None),
    ]
    assert logged[0]["sources"] == ["cli:ann", "token:kiosk"]
    local = [json.loads(line) for line in (reviewer.parent / "review-log.jsonl").open()]
    assert [line["action"] for line in local] == ["accept", "reject"]

    worker = tmp_path / "worker" / "extra"
    assert sync.sync(shared, worker, "test").downloaded == [first.sha256]


def test_an_images_claims_are_listed_in_the_order_they_were_made(
    location: str, tmp_path: Path
) -> None:
    shared, png = SharedInbox(location), digit(tmp_path, 10)
    # the store lists keys by their source's hash: made in the reverse of that order
    sources = sorted(["token:kiosk", "cli:ann", "token:desk"], key=review_queue.source_id)[::-1]
    for minute, source in enumerate(sources):
        review_queue.submit(shared, png, "x.png", 5, source, time=f"2026-12-01T10:0{minute}:00Z")
    (item,) = review_queue.queue(shared).found
    assert [c.source for c in item.claims] == sources
    assert [c.time[14:16] for c in item.claims] == ["00", "01", "02"]


def seven_sha(read: review_queue.Queue) -> str:
    return next(i.sha256 for i in read.found if i.conflict)[:8]


def test_a_quota_counts_the_claims_of_every_host(location: str, tmp_path: Path) -> None:
    one, two, three = (digit(tmp_path, seed) for seed in (4, 5, 6))
    review_queue.submit(SharedInbox(location), one, "1.png", 1, "token:kiosk", quota=2)
    review_queue.submit(SharedInbox(location), two, "2.png", 2, "token:kiosk", quota=2)
    with pytest.raises(QuotaExceeded, match=r"token:kiosk has 2 image\(s\) awaiting review"):
        review_queue.submit(SharedInbox(location), three, "3.png", 3, "token:kiosk", quota=2)
    again = review_queue.submit(SharedInbox(location), one, "1.png", 7, "token:kiosk", quota=2)
    assert again.status == "pending"  # another label for an image it already counts
    other = review_queue.submit(SharedInbox(location), three, "3.png", 3, "token:desk", quota=2)
    assert other.status == "pending"  # quotas are per source
    assert len(review_queue.queue(SharedInbox(location)).found) == 3


def test_a_claim_that_arrives_during_a_review_stays_pending(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, png = SharedInbox(location), digit(tmp_path, 7)
    sha = review_queue.submit(shared, png, "x.png", 4, "token:kiosk").sha256
    publish = SharedInbox.publish

    def late(self: SharedInbox, *args: object) -> bool:
        review_queue.submit(shared, png, "x.png", 9, "token:other")  # after the review read
        return publish(self, *args)

    monkeypatch.setattr(SharedInbox, "publish", late)
    review_shared.accept(shared, tmp_path / "extra", [sha[:8]], "bob")
    (left,) = review_queue.queue(shared).found
    assert [(c.label, c.source) for c in left.claims] == [(9, "token:other")]


def test_a_claim_object_that_is_not_one_is_never_accepted(location: str, tmp_path: Path) -> None:
    shared, png, other = SharedInbox(location), digit(tmp_path, 8), digit(tmp_path, 9)
    sha = review_queue.submit(shared, png, "x.png", 2, "token:kiosk").sha256
    (key,) = shared.storage.list(f"{review_queue.REVIEW}{sha}/")
    forged = json.loads(shared.storage.read(key))
    forged["image"] = base64.b64encode(other).decode()  # another image
    shared.storage.delete(key)
    shared.storage.create(key, json.dumps(forged).encode())
    read = review_queue.queue(shared)
    assert read.found == [] and list(read.problems) == [f"{shared.location}/{key}"]
    assert "not the one its key names" in read.problems[f"{shared.location}/{key}"]
    with pytest.raises(DataError, match="no pending image"):
        review_shared.accept(shared, tmp_path / "extra", [sha[:8]], "bob")
    assert shared.records() == ({}, {}) and shared.storage.list(key) == [key]
    # sent again, as the damaged claim's key says: stored afresh (as a damaged pending file is
    # repaired), the damaged object left alone and still reported
    again = review_queue.submit(shared, png, "x.png", 2, "token:kiosk")
    assert again.status == "pending"
    assert len(shared.storage.list(f"{review_queue.REVIEW}{sha}/")) == 2
    read = review_queue.queue(shared)
    assert [(i.sha256, i.labels) for i in read.found] == [(sha, [2])] and read.images[sha] == png
    assert list(read.problems) == [f"{shared.location}/{key}"]
    assert review_queue.submit(shared, png, "x.png", 2, "token:kiosk").status == "known"


@pytest.mark.parametrize("change", [{"label": 7}, {"source": "token:other"}])
def test_a_claim_whose_body_names_another_label_or_source_than_its_key_is_not_one(
    location: str, tmp_path: Path, change: dict
) -> None:
    shared, png = SharedInbox(location), digit(tmp_path, 8)
    sha = review_queue.submit(shared, png, "x.png", 2, "token:kiosk").sha256
    (key,) = shared.storage.list(f"{review_queue.REVIEW}{sha}/")
    stored = json.loads(shared.storage.read(key))
    shared.storage.delete(key)
    shared.storage.create(key, json.dumps({**stored, **change}).encode())
    read = review_queue.queue(shared)
    assert read.found == [] and list(read.problems) == [f"{shared.location}/{key}"]
    assert "not the one its key names" in read.problems[f"{shared.location}/{key}"]


def test_a_claim_sent_again_is_answered_with_its_earliest_copy(
    location: str, tmp_path: Path
) -> None:
    """Two copies of one claim (sent at once by two servers): the answer is the first made."""
    shared, png = SharedInbox(location), digit(tmp_path, 9)
    first = review_queue.submit(
        shared, png, "x.png", 2, "token:kiosk", "early", time="2026-01-01T00:00:00+00:00"
    )
    key = review_queue.claim_key(first.sha256, "token:kiosk", 2, "b" * 32)
    (stored,) = shared.storage.list(f"{review_queue.REVIEW}{first.sha256}/")
    later = {**json.loads(shared.storage.read(stored)), "time": "2026-02-01T00:00:00+00:00"}
    shared.storage.create(key, json.dumps({**later, "client": "late"}).encode())
    again = review_queue.submit(shared, png, "x.png", 2, "token:kiosk", "now")
    assert again.status == "known" and again.claim == first.claim


def test_a_claim_object_with_fields_of_other_types_is_never_accepted(
    location: str, tmp_path: Path
) -> None:
    shared, png = SharedInbox(location), digit(tmp_path, 10)
    sha = review_queue.submit(shared, png, "x.png", 1, "token:kiosk").sha256
    (key,) = shared.storage.list(f"{review_queue.REVIEW}{sha}/")
    stored = json.loads(shared.storage.read(key))
    for change in ({"label": True}, {"time": None}, {"source": 7}, {"client": ["a"]}):
        shared.storage.delete(key)
        shared.storage.create(key, json.dumps({**stored, **change}).encode())
        read = review_queue.queue(shared)
        assert read.found == [], change
        assert "not a review claim" in read.problems[f"{shared.location}/{key}"], change


def test_a_review_reads_only_the_claims_of_the_images_it_decides(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = SharedInbox(location)
    shas = [
        review_queue.submit(shared, digit(tmp_path, 30 + i), f"{i}.png", i, "token:kiosk").sha256
        for i in range(4)
    ]
    review_queue.submit(shared, digit(tmp_path, 30), "0.png", 5, "cli:ann")  # a second claim
    read_many, asked = shared.storage.read_many, []

    def counted(keys: list[str]) -> list[bytes | None]:
        asked.extend(keys)
        return read_many(keys)

    monkeypatch.setattr(shared.storage, "read_many", counted)
    with pytest.raises(DataError, match="the claims disagree"):
        review_shared.accept(shared, tmp_path / "extra", [shas[0][:8]], "bob")
    claims = [k for k in asked if k.startswith(review_queue.REVIEW)]
    assert len(claims) == 2 and all(shas[0] in k for k in claims)
    asked.clear()
    (added,) = review_shared.accept(shared, tmp_path / "extra", [shas[2][:8]], "bob")
    claims = [k for k in asked if k.startswith(review_queue.REVIEW)]
    assert added.entry.label == 2 and len(claims) == 1 and shas[2] in claims[0]
    with pytest.raises(DataError, match="no pending image"):
        review_queue.queue(shared, ["0123456789"])
    assert len(review_queue.queue(shared).found) == 3  # the others still wait


def test_a_hosts_earlier_quarantine_moves_into_the_store(location: str, tmp_path: Path) -> None:
    folder, inbox = tmp_path / "pending", tmp_path / "extra"
    png = digit(tmp_path, 10)
    pending.submit(folder, inbox, png, "x.png", 5, "token:kiosk", "10.0.0.9")
    pending.submit(folder, inbox, png, "x.png", 6, "cli:ann")
    before = pending.items(folder)[0].claims
    shared = SharedInbox(location)
    assert review_move.move_local(shared, folder, inbox) == (1, [])
    assert pending.items(folder) == [] and list(folder.iterdir()) == []
    (moved,) = review_queue.queue(shared).found
    assert set(moved.claims) == set(before)  # source, label, time and client kept
    assert review_move.move_local(shared, folder, inbox) == (0, [])


class Cut(Exception):
    """The process stopped here (killed, the machine lost)."""


def test_a_claim_a_move_cut_short_left_in_the_store_is_not_moved_again_once_reviewed(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move stopped after the claim reached the store and before it left this host; another
    host rejected it meanwhile. The next move finishes without putting it back in the queue."""
    folder, inbox = tmp_path / "pending", tmp_path / "extra"
    png = digit(tmp_path, 14)
    pending.submit(folder, inbox, png, "x.png", 5, "token:kiosk", "10.0.0.9")
    shared = SharedInbox(location)
    submit = review_move.submit

    def stored_then_cut(*args, **kwargs):
        submit(*args, **kwargs)
        raise Cut

    with monkeypatch.context() as patch:
        patch.setattr(review_move, "submit", stored_then_cut)
        with pytest.raises(Cut):
            review_move.move_local(shared, folder, inbox)
    assert len(pending.items(folder)) == 1
    (item,) = review_queue.queue(SharedInbox(location)).found
    review_shared.reject(SharedInbox(location), tmp_path / "other" / "extra", [item.sha256], "bob")
    assert review_move.move_local(shared, folder, inbox) == (1, [])
    assert review_queue.queue(shared).found == [] and pending.items(folder) == []
    # a claim of the same image not moved before (from another client) is moved as ever
    pending.submit(folder, inbox, png, "x.png", 5, "token:kiosk", "10.0.0.10")
    assert review_move.move_local(shared, folder, inbox) == (1, [])
    assert [i.labels for i in review_queue.queue(shared).found] == [[5]]


def test_a_move_waits_for_a_review_under_way(location: str, tmp_path: Path) -> None:
    """The move takes the reviewers' lease: while another host reviews, nothing moves (the
    review-log records it reads would not say what the review is deciding now)."""
    folder, inbox = tmp_path / "pending", tmp_path / "extra"
    pending.submit(folder, inbox, digit(tmp_path, 15), "x.png", 2, "cli:ann")
    done: list[tuple[int, list[str]]] = []
    with review_shared.reviewers_lease(SharedInbox(location)):  # another host's review
        mover = threading.Thread(
            target=lambda: done.append(review_move.move_local(SharedInbox(location), folder, inbox))
        )
        mover.start()
        mover.join(1.0)
        assert mover.is_alive() and done == [] and len(pending.items(folder)) == 1
    mover.join(30)
    assert done == [(1, [])] and pending.items(folder) == []
    assert [i.labels for i in review_queue.queue(SharedInbox(location)).found] == [[2]]


def test_the_cli_reviews_the_stores_queue(location: str, tmp_path: Path) -> None:
    runner = CliRunner()
    hosts = [tmp_path / "kiosk", tmp_path / "review"]
    for root in hosts:
        root.mkdir()
        (root / "params.yaml").write_text(f"inbox:\n  shared: {location}\n")

    def cli(root: Path, *args: str):  # noqa: ANN202 - typer's Result
        return runner.invoke(app, ["--root", str(root), "data", *args])

    early = draw_digit(tmp_path / "early.png", 11)
    pending.submit(  # quarantined on the reviewing host before the queue moved to the store
        Layout(hosts[1]).pending, Layout(hosts[1]).inbox, early.read_bytes(), "e", 4, "cli:ann"
    )
    image = draw_digit(tmp_path / "one.png", 12)
    added = cli(hosts[0], "add", str(image), "-l", "1", "--pending")
    assert added.exit_code == 0 and "pending review" in added.output, added.output
    assert not Layout(hosts[0]).pending.exists()  # nothing quarantined on the kiosk host

    listed = cli(hosts[1], "pending", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout.splitlines()[-1])
    assert sorted(r["labels"][0] for r in rows) == [1, 4]
    assert "moved 1 image(s)" in listed.output and pending.items(Layout(hosts[1]).pending) == []
    one = next(r["sha256"] for r in rows if r["labels"] == [1])
    accepted = cli(hosts[1], "accept", one[:12])
    assert accepted.exit_code == 0 and "accepted: " in accepted.output, accepted.output
    rejected = cli(hosts[1], "reject", next(r["sha256"] for r in rows if r["labels"] == [4])[:12])
    assert rejected.exit_code == 0, rejected.output
    assert (
        cli(hosts[1], "pending")
        .output.strip()
        .endswith("0 pending image(s); 0 sent more than once, 0 with conflicting labels")
    )
    synced = cli(hosts[0], "sync")
    assert synced.exit_code == 0 and labels(Layout(hosts[0]).inbox) == [(1, one)]
    shared = SharedInbox(location)
    for key in shared.storage.list("") + ["inbox.json"]:
        shared.storage.delete(key)  # wiped, or a share mounted empty
    later = cli(hosts[0], "add", str(draw_digit(tmp_path / "two.png", 13)), "-l", "2", "--pending")
    assert isinstance(later.exception, StoreUnavailable), later.output  # main(): one line
    assert "lost its inbox.json (wiped, or a share not mounted?): nothing submitted" in str(
        later.exception
    )
    assert shared.storage.list("") == []


def test_a_damaged_record_of_a_claimed_image_stops_no_cli_claim(
    location: str, tmp_path: Path
) -> None:
    """`data add --pending` looks up each claimed image's label in the shared inbox only to
    warn: a record there that is not one stops nothing, and every image is claimed."""
    (tmp_path / "params.yaml").write_text(f"inbox:\n  shared: {location}\n")
    images = [draw_digit(tmp_path / f"{d}.png", 20 + d) for d in range(2)]
    damaged = hashlib.sha256(images[0].read_bytes()).hexdigest()
    SharedInbox(location).storage.create(f"labels/{damaged}.json", b"{")
    args = ["--root", str(tmp_path), "data", "add", "--pending", "-l", "3", *map(str, images)]
    added = CliRunner().invoke(app, args)
    assert added.exit_code == 0, (added.output, added.exception)
    assert added.output.count("pending review: ") == 2
    assert len(review_queue.queue(SharedInbox(location)).found) == 2


def test_feedback_goes_to_the_stores_queue_and_a_store_down_is_a_503(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tokens").write_text(f"kiosk {token_sha256(TOKEN)}\n")
    serve = ServeParams(feedback_tokens_file="tokens", feedback_rate_per_minute=1000)
    with proxy(s3_endpoint) as store_proxy:
        use_endpoint(monkeypatch, store_proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        url = f"s3://{new_bucket(s3_endpoint)}/inbox"
        feedback = feedback_of(serve, Layout(tmp_path), url)
        assert feedback is not None and feedback.shared is not None
        served = ServedModel(Registry(tmp_path / "r", "m"), "production")
        api = TestClient(create_app(served, serve, feedback))

        def post(seed: int):  # noqa: ANN202 - the response
            image = draw_digit(tmp_path / f"{seed}.png", seed).read_bytes()
            headers = {"Authorization": f"Bearer {TOKEN}"}
            files = {"file": ("d.png", image)}
            return api.post("/feedback", headers=headers, files=files, data={"label": "3"})

        sent = post(1)
        assert sent.status_code == 201, sent.text
        (item,) = review_queue.queue(SharedInbox(url)).found
        assert (item.sha256, item.claims[0].source) == (sent.json()["sha256"], "token:kiosk")
        assert not Layout(tmp_path).pending.exists()

        store_proxy.down.set()
        refused = post(2)
        assert (refused.status_code, refused.json()) == (503, {"error": UNAVAILABLE})
        (tmp_path / "params.yaml").write_text(f"inbox:\n  shared: {url}\n")
        for command in (["pending"], ["accept", item.sha256[:12]], ["reject", item.sha256[:12]]):
            args = ["--root", str(tmp_path), "data", *command]
            done = CliRunner().invoke(app, args)
            assert isinstance(done.exception, StoreUnavailable), done.output
            assert store_proxy.url in str(done.exception) and "\n" not in str(done.exception)
        store_proxy.down.clear()
        assert len(review_queue.queue(SharedInbox(url)).found) == 1  # nothing half-stored
        assert store.entries(Layout(tmp_path).inbox) == []


def test_an_accept_the_shared_inbox_refuses_publishes_nothing(
    location: str, tmp_path: Path
) -> None:
    shared = SharedInbox(location)
    one, two = digit(tmp_path, 20), digit(tmp_path, 21)
    first = review_queue.submit(shared, one, "1.png", 3, "token:kiosk").sha256
    second = review_queue.submit(shared, two, "2.png", 5, "token:kiosk").sha256
    shared.publish(two, 6, "png", "another host")
    with pytest.raises(store.LabelConflict, match=r"labelled 6 in the shared inbox .*not 5"):
        review_shared.accept(shared, tmp_path / "extra", [first[:8], second[:8]], "bob")
    assert shared.record(first) is None and labels(tmp_path / "extra") == []
    assert len(review_queue.queue(shared).found) == 2 and review_log(shared) == []


def test_an_accept_this_hosts_inbox_cannot_take_publishes_nothing(
    location: str, tmp_path: Path
) -> None:
    """The file the second image would be stored as here holds other bytes (edited in place):
    refused before the first is published, recorded or moved."""
    shared, extra = SharedInbox(location), tmp_path / "extra"
    one, two = digit(tmp_path, 20), digit(tmp_path, 21)
    first = review_queue.submit(shared, one, "1.png", 3, "token:kiosk").sha256
    second = review_queue.submit(shared, two, "2.png", 5, "token:kiosk").sha256
    blocking = extra / "5" / f"{second}.png"
    blocking.parent.mkdir(parents=True)
    blocking.write_bytes(two[:60])
    with pytest.raises(DataError, match="holds other bytes than the image its name says"):
        review_shared.accept(shared, extra, [first[:8], second[:8]], "bob")
    assert shared.record(first) is None and shared.record(second) is None
    assert len(review_queue.queue(shared).found) == 2 and review_log(shared) == []
    assert blocking.read_bytes() == two[:60]


def test_a_copy_of_a_drawing_this_host_holds_under_another_label_is_not_accepted(
    location: str, tmp_path: Path
) -> None:
    """Re-saved as RGBA (other bytes, the same pixels once preprocessed) and claimed as 3 while
    this host's inbox holds it as 7: ingest would drop both, so the accept is refused."""
    shared, extra = SharedInbox(location), tmp_path / "extra"
    one = digit(tmp_path, 20)
    store.add(extra, one, "one.png", 7)
    out = io.BytesIO()
    Image.open(io.BytesIO(one)).convert("RGBA").save(out, format="PNG")
    copy = review_queue.submit(shared, out.getvalue(), "copy.png", 3, "token:kiosk").sha256
    with pytest.raises(store.LabelConflict, match=r"the same drawing as .* \(labelled 7\)"):
        review_shared.accept(shared, extra, [copy[:8]], "bob")
    assert shared.record(copy) is None and [label for label, _ in labels(extra)] == [7]
    assert len(review_queue.queue(shared).found) == 1 and review_log(shared) == []


def test_an_accept_cut_short_is_finished_once_and_cannot_be_rejected(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    one, two = digit(tmp_path, 22), digit(tmp_path, 23)
    first = review_queue.submit(shared, one, "1.png", 3, "token:kiosk").sha256
    second = review_queue.submit(shared, two, "2.png", 5, "token:kiosk").sha256
    deletes = []

    def store_gone(shared: SharedInbox, keys: list[str]) -> None:
        deletes.append(keys)
        if len(deletes) == 2:  # the second image: published and recorded, then the store goes
            raise StoreUnavailable("shared inbox: the store stopped answering")
        delete(shared, keys)

    delete = review_shared._delete
    monkeypatch.setattr(review_shared, "_delete", store_gone)
    with pytest.raises(StoreUnavailable):
        review_shared.accept(shared, inbox, [first[:8], second[:8]], "bob")
    monkeypatch.setattr(review_shared, "_delete", delete)
    assert [e.sha256 for e in store.entries(inbox)] == [first]  # the first went to its end
    assert seen.read_seen(inbox, shared) == {first: 3}  # a removal elsewhere is followed here
    assert shared.record(second).label == 5  # the second was published, its claims stayed
    cut_short = r"bob decided to accept it at .* cut short: accept it --label 5 to finish"
    with pytest.raises(DataError, match=cut_short):
        review_shared.reject(shared, inbox, [second[:8]], "eve")
    with pytest.raises(DataError, match="labelled 5 in the shared inbox .*not 6"):
        review_shared.accept(shared, inbox, [second[:8]], "eve", label=6)
    (finished,) = review_shared.accept(shared, inbox, [second[:8]], "bob")
    assert finished.entry.label == 5 and finished.new  # counted once, by the accept that ends it
    assert review_queue.queue(shared).found == []
    assert sorted(line["sha256"] for line in review_log(shared)) == sorted([first, second])
    local = (inbox.parent / "review-log.jsonl").read_text().splitlines()
    assert len(local) == 2  # each review recorded once, here too


def test_claims_about_an_image_the_shared_inbox_holds_can_be_rejected(
    location: str, tmp_path: Path
) -> None:
    shared, png = SharedInbox(location), digit(tmp_path, 27)
    shared.publish(png, 7, "png", "another host")  # a correct 7, added there
    sha = review_queue.submit(shared, png, "x.png", 1, "token:kiosk").sha256  # "it is a 1"
    with pytest.raises(store.LabelConflict, match="labelled 7 in the shared inbox"):
        review_shared.accept(shared, tmp_path / "extra", [sha[:8]], "bob")
    (rejected,) = review_shared.reject(shared, tmp_path / "extra", [sha[:8]], "bob")
    assert rejected.labels == [1] and review_queue.queue(shared).found == []
    assert shared.record(sha).label == 7  # the image stays as it was
    assert [line["action"] for line in review_log(shared)] == ["reject"]


def test_a_review_that_lost_its_lease_stops(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, png = SharedInbox(location), digit(tmp_path, 24)
    sha = review_queue.submit(shared, png, "x.png", 2, "token:kiosk").sha256
    read = review_shared.queue

    def decided_elsewhere(shared: SharedInbox, refs: list[str]) -> review_queue.Queue:
        found = read(shared, refs)
        for key in found.keys[sha]:  # another reviewer, holding the lease now, rejected it
            shared.storage.delete(key)
        return found

    monkeypatch.setattr(review_shared, "queue", decided_elsewhere)
    with pytest.raises(DataError, match="reviewed elsewhere meanwhile"):
        review_shared.accept(shared, tmp_path / "extra", [sha[:8]], "bob")
    assert shared.record(sha) is None and review_log(shared) == []


@pytest.mark.parametrize("decision", ["accept", "reject"])
def test_a_review_whose_lease_was_taken_over_writes_nothing_more(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decision: str
) -> None:
    """The review stalled past its lease's time to live after its checks, and another reviewer
    took the lease over (on S3; a folder's lock cannot be lost): it records, publishes and
    deletes nothing, and says to run it again."""
    shared = SharedInbox(s3_url.replace("/registry", "/inbox"))
    sha = review_queue.submit(shared, digit(tmp_path, 25), "x.png", 4, "token:kiosk").sha256
    check = review_shared._check_still_pending
    lease = f".leases/{review_shared.LEASE}"

    def then_taken_over(shared: SharedInbox, item, keys) -> None:
        check(shared, item, keys)
        shared.storage._put(lease, json.dumps({"owner": "another reviewer"}).encode())

    monkeypatch.setattr(review_shared, "_check_still_pending", then_taken_over)
    taken = r"lease .leases/review in s3:.* was taken over while held"
    with pytest.raises(StoreUnavailable, match=taken):
        getattr(review_shared, decision)(shared, tmp_path / "extra", [sha[:8]], "bob")
    assert review_log(shared) == [] and shared.record(sha) is None
    assert [p.sha256 for p in review_queue.queue(shared).found] == [sha]  # still pending
    shared.storage._delete(lease)


def test_a_damaged_local_quarantine_stays_where_it_is(location: str, tmp_path: Path) -> None:
    folder, inbox = tmp_path / "pending", tmp_path / "extra"
    good, bad = digit(tmp_path, 25), digit(tmp_path, 26)
    pending.submit(folder, inbox, good, "g.png", 1, "cli:ann")
    altered = pending.submit(folder, inbox, bad, "b.png", 2, "cli:ann").sha256
    (folder / f"{altered}.png").write_bytes(good)  # its bytes no longer its name
    shared = SharedInbox(location)
    moved, stayed = review_move.move_local(shared, folder, inbox)
    assert moved == 1 and len(stayed) == 1 and "not the SHA-256 it is named by" in stayed[0]
    assert [i.sha256 for i in pending.items(folder)] == [altered]
    (folder / f"{altered}.json").write_text("{half")
    moved, stayed = review_move.move_local(shared, folder, inbox)
    assert moved == 0 and "nothing in" in stayed[0] and len(review_queue.queue(shared).found) == 1


def test_a_server_whose_store_is_missing_starts_and_answers_503(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"kiosk {token_sha256(TOKEN)}\n")
    serve = ServeParams(feedback_tokens_file="tokens", feedback_rate_per_minute=1000)
    feedback = feedback_of(serve, Layout(tmp_path), "not-mounted")  # no such folder
    served = ServedModel(Registry(tmp_path / "r", "m"), "production")
    api = TestClient(create_app(served, serve, feedback))
    assert api.get("/healthz").status_code == 200
    image = draw_digit(tmp_path / "1.png", 1).read_bytes()

    def post():  # noqa: ANN202 - the response
        headers = {"Authorization": f"Bearer {TOKEN}"}
        files = {"file": ("d.png", image)}
        return api.post("/feedback", headers=headers, files=files, data={"label": "3"})

    refused = post()
    assert (refused.status_code, refused.json()) == (503, {"error": UNAVAILABLE})
    (tmp_path / "not-mounted").mkdir()  # mounted now: the next claim is stored
    assert post().status_code == 201


def test_a_claim_arriving_after_an_accept_was_recorded_does_not_let_a_reject_through(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    png = digit(tmp_path, 31)
    sha = review_queue.submit(shared, png, "1.png", 3, "token:kiosk").sha256

    def store_gone(shared: SharedInbox, *args) -> None:
        raise StoreUnavailable("shared inbox: the store stopped answering")

    with monkeypatch.context() as patch:  # recorded, then cut short before publishing
        patch.setattr(shared, "publish", store_gone)
        with pytest.raises(StoreUnavailable):
            review_shared.accept(shared, inbox, [sha[:8]], "bob")
    review_queue.submit(shared, png, "1.png", 8, "token:other")  # a claim arrives meanwhile
    with pytest.raises(DataError, match=r"bob decided to accept it at .* accept it --label 3"):
        review_shared.reject(shared, inbox, [sha[:8]], "eve")
    assert review_shared.accept(shared, inbox, [sha[:8]], "bob", label=3)[0].entry.label == 3
    assert review_queue.queue(shared).found == [] and shared.record(sha).label == 3


def test_a_review_recorded_elsewhere_on_the_same_claims_stops_this_one(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer that lost its lease and then passed its checks finds the other's record."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    sha = review_queue.submit(shared, digit(tmp_path, 32), "1.png", 3, "token:kiosk").sha256
    record, check = review_records.record, review_shared._check_still_pending

    def other_reviewer_first(shared, item, keys) -> None:
        check(shared, item, keys)
        line = pending.review_line("eve", "reject", item, None)
        record(shared, tmp_path / "elsewhere" / "extra", keys, line)

    monkeypatch.setattr(review_shared, "_check_still_pending", other_reviewer_first)
    with pytest.raises(DataError, match="reviewed elsewhere meanwhile .eve decided to reject"):
        review_shared.accept(shared, inbox, [sha[:8]], "bob")
    assert shared.record(sha) is None and store.entries(inbox) == []


def test_an_add_with_another_label_during_an_accept_leaves_the_claims_reviewable(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data add` takes no review lease: it can label the image 5 in the shared inbox between
    the accept's checks and its publish. The accept's record is withdrawn (never carried out)
    and the claims stay pending, so a reviewer can reject them or accept them as 5."""
    shared, inbox = SharedInbox(location), tmp_path / "review" / "extra"
    png = digit(tmp_path, 41)
    sha = review_queue.submit(shared, png, "1.png", 3, "token:kiosk").sha256
    recorded = review_shared.record

    def add_elsewhere_after_recording(*args, **kwargs) -> None:
        recorded(*args, **kwargs)
        shared_edits.add(
            SharedInbox(location), tmp_path / "other" / "extra", png, "x.png", 5, "cli:carol"
        )

    monkeypatch.setattr(review_shared, "record", add_elsewhere_after_recording)
    with pytest.raises(store.LabelConflict, match="with label 5 since this review began"):
        review_shared.accept(shared, inbox, [sha[:8]], "bob")
    monkeypatch.undo()
    assert review_log(shared) == [] and store.entries(inbox) == []
    assert [item.sha256 for item in review_queue.queue(shared).found] == [sha]
    log = [
        json.loads(line) for line in (inbox.parent / pending.REVIEW_LOG).read_text().splitlines()
    ]
    assert [(line["action"], line["label"]) for line in log] == [("accept", 3), ("withdraw", 3)]
    assert review_shared.accept(shared, inbox, [sha[:8]], "bob", label=5)[0].entry.label == 5
    assert review_queue.queue(shared).found == [] and shared.record(sha).label == 5


def test_an_accept_record_the_shared_inbox_can_no_longer_take_does_not_block_a_reject(
    location: str, tmp_path: Path
) -> None:
    """An accept recorded as 3 whose image the shared inbox took as 5 meanwhile (a review cut
    short before that withdrawal existed) is withdrawn by the next review instead of demanding
    an accept as 3 that can never succeed."""
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    png = digit(tmp_path, 42)
    sha = review_queue.submit(shared, png, "1.png", 3, "token:kiosk").sha256
    (item,) = review_queue.queue(shared).found
    keys = review_queue.queue(shared).keys[sha]
    review_records.record(shared, inbox, keys, pending.review_line("bob", "accept", item, 3))
    shared_edits.add(shared, tmp_path / "other" / "extra", png, "x.png", 5, "cli:carol")
    assert review_shared.reject(shared, inbox, [sha[:8]], "eve")[0].sha256 == sha
    assert review_queue.queue(shared).found == [] and shared.record(sha).label == 5
    assert [r["action"] for r in review_log(shared)] == ["reject"]


def test_an_accept_counts_as_new_what_the_shared_inbox_did_not_hold(
    location: str, tmp_path: Path
) -> None:
    """What an accept reports as new is what every host counts for the retraining trigger: new
    to the shared inbox, not merely to this host."""
    shared, inbox = SharedInbox(location), tmp_path / "review" / "extra"
    fresh, known = digit(tmp_path, 43), digit(tmp_path, 44)
    shared_edits.add(shared, tmp_path / "other" / "extra", known, "k.png", 4, "cli:carol")
    shas = [
        review_queue.submit(shared, d, "x.png", 4, "token:kiosk").sha256 for d in (fresh, known)
    ]
    accepted = review_shared.accept(shared, inbox, [sha[:8] for sha in shas], "bob")
    assert {a.entry.sha256: a.new for a in accepted} == {shas[0]: True, shas[1]: False}


def test_an_accept_whose_host_inbox_stays_busy_says_the_image_was_accepted(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long sync or ingest holds this host's inbox: the image is in the shared inbox by then,
    and the error says so (before: only that a file lock could not be acquired)."""
    from filelock import Timeout

    shared, inbox = SharedInbox(location), tmp_path / "review" / "extra"
    sha = review_queue.submit(shared, digit(tmp_path, 45), "x.png", 4, "token:kiosk").sha256

    class Busy:
        def __enter__(self) -> None:
            raise Timeout(str(inbox.parent / ".extra.lock"))

        def __exit__(self, *_: object) -> None:
            pass

    monkeypatch.setattr(store, "lock", lambda _inbox: Busy())
    heard: list[store.Added] = []
    with pytest.raises(DataError) as busy:
        review_shared.accept(shared, inbox, [sha[:8]], "bob", each=heard.append)
    said = str(busy.value)
    assert said.startswith(f"{sha[:12]} was accepted as 4 into the shared inbox") and "busy" in said
    assert shared.record(sha).label == 4 and "`data sync` brings it here" in said
    # told as new, so the retraining trigger counts it; not as stored here
    told = [(a.entry.sha256, a.entry.label, a.new, a.here) for a in heard]
    assert told == [(sha, 4, True, False)]
    assert not any(inbox.rglob("*.png"))


def test_a_finished_accept_stays_in_the_log_after_the_image_is_relabelled(
    location: str, tmp_path: Path
) -> None:
    """Accepted as 3, removed, added as 5 elsewhere, claimed again and rejected: the first
    accept was carried out, so its record stays and nothing is logged as withdrawn."""
    shared, inbox = SharedInbox(location), tmp_path / "review" / "extra"
    png = digit(tmp_path, 45)
    sha = review_queue.submit(shared, png, "1.png", 3, "token:kiosk").sha256
    review_shared.accept(shared, inbox, [sha[:8]], "bob")
    shared_edits.remove(shared, inbox, [sha[:8]])
    shared_edits.add(shared, tmp_path / "other" / "extra", png, "x.png", 5, "cli:carol")
    review_queue.submit(shared, png, "1.png", 3, "token:kiosk")
    review_shared.reject(shared, inbox, [sha[:8]], "eve")
    assert sorted((r["action"], r["who"]) for r in review_log(shared)) == [
        ("accept", "bob"),
        ("reject", "eve"),
    ]
    log = (inbox.parent / pending.REVIEW_LOG).read_text()
    assert "withdraw" not in log


def test_claims_are_rejected_while_the_images_label_record_is_damaged(
    location: str, tmp_path: Path
) -> None:
    shared, inbox = SharedInbox(location), tmp_path / "extra"
    png = digit(tmp_path, 46)
    shared_edits.add(shared, tmp_path / "other" / "extra", png, "x.png", 5, "cli:carol")
    sha = review_queue.submit(shared, png, "1.png", 3, "token:kiosk").sha256
    key = f"labels/{sha}.json"
    shared.storage.delete(key)
    shared.storage.create(key, b"{not json")
    assert [item.sha256 for item in review_shared.reject(shared, inbox, [sha[:8]], "eve")] == [sha]
    assert review_queue.queue(shared).found == []
    assert shared.storage.list(f"{review_queue.REVIEW}{sha}/") == []  # its claims are gone
    assert [(r["action"], r["sha256"], r["who"]) for r in review_log(shared)] == [
        ("reject", sha, "eve")
    ]


def test_feedback_to_a_store_that_went_away_is_a_503_not_a_claim_left_on_the_mount_point(
    tmp_path: Path,
) -> None:
    """The share is unmounted under a running server (its mount point left empty): a claim
    written there would be hidden, and lost, once the share is back."""
    store, project = tmp_path / "store", tmp_path / "serve"
    for folder in (store, project):
        folder.mkdir()
    (project / "tokens").write_text(f"kiosk {token_sha256(TOKEN)}\n")
    (project / "params.yaml").write_text(f"inbox:\n  shared: {store}\n")
    first = draw_digit(tmp_path / "first.png", 1)
    added = CliRunner().invoke(  # an image added on this host: the store has its identity
        app, ["--root", str(project), "data", "add", "-l", "2", str(first)]
    )
    assert added.exit_code == 0, added.output
    serve = ServeParams(feedback_tokens_file="tokens", feedback_rate_per_minute=1000)
    fresh = tmp_path / "replica"  # a serving host that never synced
    fresh.mkdir()
    (fresh / "tokens").write_text(f"kiosk {token_sha256(TOKEN)}\n")
    served = ServedModel(Registry(tmp_path / "r", "m"), "production")
    apis = [
        TestClient(create_app(served, serve, feedback_of(serve, Layout(root), str(store))))
        for root in (project, fresh)
    ]

    def post(api: TestClient, seed: int):  # noqa: ANN202 - the response
        image = draw_digit(tmp_path / f"{seed}.png", seed).read_bytes()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return api.post("/feedback", headers=headers, files={"file": ("d.png", image)},
                        data={"label": "3"})  # fmt: skip

    for seed, api in enumerate(apis, 30):
        assert post(api, seed).status_code == 201
    store.rename(tmp_path / "store.real")  # unmounted: the mount point stays, empty
    store.mkdir()
    for seed, api in enumerate(apis, 40):
        refused = post(api, seed)
        assert (refused.status_code, refused.json()) == (503, {"error": UNAVAILABLE})
    assert list(store.iterdir()) == []  # nothing written where the share belongs
    store.rmdir()
    (tmp_path / "store.real").rename(store)  # mounted again: both take claims again
    for seed, api in enumerate(apis, 50):
        assert post(api, seed).status_code == 201
    assert len(review_queue.queue(SharedInbox(str(store))).found) == 4


def test_rejecting_claims_about_an_image_the_store_holds_says_it_still_trains(
    tmp_path: Path,
) -> None:
    store_folder, project = tmp_path / "store", tmp_path / "p"
    store_folder.mkdir()
    project.mkdir()
    (project / "params.yaml").write_text(f"inbox:\n  shared: {store_folder}\n")
    png = digit(tmp_path, 28)
    SharedInbox(str(store_folder)).publish(png, 7, "png", "another host")  # not synced here
    image = tmp_path / "claimed.png"
    image.write_bytes(png)
    root = ["--root", str(project), "data"]
    added = CliRunner().invoke(app, [*root, "add", "--pending", "-l", "7", str(image)])
    assert added.exit_code == 0, added.output
    sha = hashlib.sha256(png).hexdigest()
    rejected = CliRunner().invoke(app, [*root, "reject", sha[:12]])
    assert rejected.exit_code == 0, rejected.output
    assert f"warning: {sha[:12]} is in the inbox labelled 7, so it still trains" in " ".join(
        rejected.output.split()
    )
    assert SharedInbox(str(store_folder)).record(sha).label == 7


def test_a_reviewer_saves_the_images_of_the_stores_queue_to_look_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a shared inbox the pending images are inside claim objects in the store:
    `data pending --save DIR` writes each one there, named by its SHA-256, and lists those."""
    store_folder, project, view = tmp_path / "store", tmp_path / "p", tmp_path / "view"
    store_folder.mkdir()
    project.mkdir()
    (project / "params.yaml").write_text(f"inbox:\n  shared: {store_folder}\n")
    pngs = [digit(tmp_path, seed) for seed in (31, 32)]
    for png in pngs:
        review_queue.submit(SharedInbox(str(store_folder)), png, "x.png", 4, "token:kiosk")
    root = ["--root", str(project), "data", "pending"]
    hint = CliRunner().invoke(app, root)
    assert hint.exit_code == 0, hint.output
    assert "`data pending --save DIR` writes them to a folder here" in " ".join(hint.output.split())
    saved = CliRunner().invoke(app, [*root, "--save", str(view)])
    assert saved.exit_code == 0, saved.output
    for png in pngs:
        sha = hashlib.sha256(png).hexdigest()
        assert (view / f"{sha}.png").read_bytes() == png
        assert f"{view / sha}.png" in saved.output
    as_json = CliRunner().invoke(app, [*root, "--save", str(view), "--json"])
    assert sorted(row["path"] for row in json.loads(as_json.stdout)) == sorted(
        str(p) for p in view.iterdir()
    )
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("COLUMNS", "250")  # the error box on one line
    for inside in (project / "data" / "extra" / "3", project / "data" / "pending", store_folder):
        refused = CliRunner().invoke(app, [*root, "--save", str(inside)])  # read as images
        assert refused.exit_code == 2, refused.output
        shown = " ".join(refused.output.replace("│", " ").split())  # the error box's lines
        assert "where copies would be read as images to train" in shown
    assert not (project / "data" / "extra").exists()
    refused = CliRunner().invoke(app, [*root, "--save", str(tmp_path / "a-file")])
    assert refused.exit_code == 2
    assert "is not a folder" in " ".join(refused.output.replace("│", " ").split())


def test_a_store_that_stops_answering_after_a_reject_leaves_it_done_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_folder, project = tmp_path / "store", tmp_path / "p"
    store_folder.mkdir()
    project.mkdir()
    (project / "params.yaml").write_text(f"inbox:\n  shared: {store_folder}\n")
    shas = [
        review_queue.submit(
            SharedInbox(str(store_folder)), digit(tmp_path, s), "x.png", 5, "t:k"
        ).sha256
        for s in (33, 34)
    ]

    def down(self: SharedInbox, digest: str) -> None:
        raise StoreUnavailable(f"shared inbox {self.location}: endpoint timed out")

    reject = review_shared.reject

    def then_down(*args: object) -> list:
        done = reject(*args)  # type: ignore[arg-type]
        monkeypatch.setattr(SharedInbox, "readable_record", down)  # once the rejects are done
        return done

    monkeypatch.setattr(review_shared, "reject", then_down)
    done = CliRunner().invoke(app, ["--root", str(project), "data", "reject", *shas])
    assert done.exit_code == 0, (done.output, done.exception)
    text = " ".join(done.output.split())
    assert all(f"rejected: {sha}" in text for sha in shas)
    assert text.count("warning: could not check whether") == 2 and "endpoint timed out" in text
    assert review_queue.queue(SharedInbox(str(store_folder))).found == []
