"""The registry on object storage: the storage contract on a real S3-compatible server (moto),
the registry's guarantees there, and every bad location refused in one line."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from mnist_pipeline.core.errors import ParamsError, RegistryError, StoreError
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import LostAliases, Registry, blobs, s3, s3_retry
from mnist_pipeline.registry.backends import open_storage
from mnist_pipeline.registry.garbage import GRACE_S
from mnist_pipeline.registry.s3 import S3Bucket, parse_url
from mnist_pipeline.registry.s3_lease import Lease
from mnist_pipeline.registry.signing import Signing
from tests.conftest import REPO_ROOT
from tests.registry_helpers import MODEL, PARAMS, key_pair
from tests.s3_helpers import STRIPPED, new_bucket, proxy, use_endpoint


def test_create_swap_and_list_keep_the_storage_contract(s3_url: str) -> None:
    store = open_storage(s3_url)
    assert isinstance(store, S3Bucket)
    assert store.create("m/v1/card.json", b"one") is True
    assert store.create("m/v1/card.json", b"two") is False
    assert store.create("m/v1/card.json", b"one") is False  # the same bytes, already there
    assert store.read("m/v1/card.json") == b"one" and store.read("m/v2/card.json") is None
    for key in ("m/v22/card.json", "m/blobs/sha256/ab", "m/aliases.json"):
        store.create(key, b"x")
    assert store.list("m/v") == ["m/v1/card.json", "m/v22/card.json"]
    assert store.list("m/v2") == ["m/v22/card.json"]
    assert store.list("n/") == [] and store.list("") == store.list("m/")
    assert store.swap("m/doc", b"a", None) is True and store.swap("m/doc", b"b", None) is False
    data, revision = store.read_document("m/doc")
    assert data == b"a"
    assert store.swap("m/doc", b"c", "not-the-etag") is False
    assert store.swap("m/doc", b"c", revision) is True
    assert store.swap("m/doc", b"d", revision) is False  # the old revision is gone
    assert store.read_document("m/doc")[0] == b"c"
    store.delete("m/doc")
    assert store.read("m/doc") is None and store.swap("m/doc", b"e", revision) is False


def test_a_write_whose_answer_was_lost_is_known_as_its_own(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore retries a PUT that got no answer; when the first attempt was stored, the retry
    fails its own condition. That write was this one (True), while the same bytes stored by
    someone else are not (False: a blob that was already there has its age renewed)."""
    with proxy(s3_endpoint) as lossy:
        use_endpoint(monkeypatch, lossy.url)
        store = open_storage(f"s3://{new_bucket(s3_endpoint)}/r")
        store.create("m/blobs/a", b"blob")  # the endpoint's conditions checked first

        def card(method: str, path: str) -> bool:
            return method == "PUT" and path.split("?")[0].endswith("/m/v1/card.json")

        lossy.lose_answer = card
        assert store.create("m/v1/card.json", b"card") is True
        assert lossy.lose_answer is None  # the answer was lost, and the PUT retried
        assert store.create("m/v1/card.json", b"card") is False  # there before this one
        lossy.lose_answer = lambda method, path: method == "PUT" and "/m/doc" in path
        assert store.swap("m/doc", b"a", None) is True and lossy.lose_answer is None
        revision = store.read_document("m/doc")[1]
        lossy.lose_answer = lambda method, path: method == "PUT" and "/m/doc" in path
        assert store.swap("m/doc", b"b", revision) is True and lossy.lose_answer is None
        assert store.read_document("m/doc")[0] == b"b"


def test_a_move_whose_answer_never_came_says_it_may_have_landed(
    s3_endpoint: str, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store took the alias document's write, then went away before it answered: the
    command cannot know the outcome, and must not read as if nothing moved (run again, a
    rollback would roll back twice)."""
    bucket = new_bucket(s3_endpoint)
    with proxy(s3_endpoint) as lossy:
        use_endpoint(monkeypatch, lossy.url)
        registry = Registry(f"s3://{bucket}/r", MODEL)
        register_candidate(registry, make(1, accuracy=0.99), PARAMS)
        register_candidate(registry, make(2, accuracy=0.97), PARAMS)  # staging
        lossy.lose_answer = lambda method, path: (
            method == "PUT" and "aliases.json" in path and (lossy.down.set() or True)
        )
        with pytest.raises(StoreError) as failed:
            registry.promote(2, "production")
        assert "the store may have done it before it stopped answering" in str(failed.value)
        lossy.down.clear()
        assert registry.aliases()["production"] == 2  # it had landed


def test_blobs_a_registration_finds_already_stored_have_their_age_restarted(s3_url: str) -> None:
    """A retry that finds its blobs stored by an attempt that never committed renews each one
    (a copy onto itself), so that gc, which keeps young blobs, cannot take them before the
    retry's card commits."""
    from mnist_pipeline.registry.blobs import store as store_blobs

    registry = Registry(s3_url, MODEL)
    blobs = {hashlib.sha256(data).hexdigest(): data for data in (b"model", b"card")}
    renewed: list[str] = []
    renew = registry.storage.renew
    registry.storage.renew = lambda key: renewed.append(key) or renew(key)
    store_blobs(registry, blobs)
    assert renewed == []  # stored now: young already
    store_blobs(registry, blobs)
    assert sorted(renewed) == sorted(f"{MODEL}/blobs/sha256/{h}" for h in blobs)


def test_an_unchanged_document_is_answered_from_the_last_read(s3_url: str) -> None:
    """A replica polling the alias document re-reads it with If-None-Match: an unchanged one
    is a 304 and the very pair read before; a changed one is read again."""
    store = open_storage(s3_url)
    store.swap("m/aliases.json", b"v1", None)
    first = store.read_document("m/aliases.json")
    assert store.read_document("m/aliases.json") is first
    other = open_storage(s3_url)  # another host moves the alias
    other.swap("m/aliases.json", b"v2", other.read_document("m/aliases.json")[1])
    assert store.read_document("m/aliases.json")[0] == b"v2"
    other.delete("m/aliases.json")
    assert store.read_document("m/aliases.json") is None


def test_a_registration_asks_the_store_nothing_it_already_knows(s3_url: str, make) -> None:
    """Counted at the client: a card read earlier in the registration is not read again (its
    own new card is not read back), nor the alias document read under the lease, a refused
    create sent once needs no look at who wrote the object, a blob already stored is renewed
    and read at once, and the lease is released with one DELETE on the ETag its last check
    read."""
    registry = Registry(s3_url, MODEL)
    register_candidate(registry, make(1, accuracy=0.97), PARAMS)
    sent: list[tuple[str, str, bool]] = []

    def note(request, **_: object) -> None:
        path = request.url.split("?")[0].split(f"/{MODEL}/", 1)[-1]  # the lease's: "register"
        copy = "x-amz-copy-source" in {k.lower() for k in request.headers}
        sent.append((request.method, path, copy))

    registry.storage.client.meta.events.register("before-send", note)
    assert register_candidate(registry, make(2, accuracy=0.99), PARAMS).version == 2
    card_gets = [path for method, path, _ in sent if method == "GET" and "card.json" in path]
    # v1's read when the registration looks for a version with these files, and as production
    # while the candidate is compared with it; not again under the lease, and v2's, created
    # here, is not read back
    assert card_gets == ["v1/card.json", "v1/card.json"], card_gets
    assert not [m for m, _, _ in sent if m == "HEAD"], sent
    renewed = [path for method, path, copy in sent if method == "PUT" and copy]
    assert renewed and all(path.startswith("blobs/sha256/") for path in renewed), sent
    lease = [method for method, path, _ in sent if path == "register"]
    assert lease == ["PUT", "GET", "DELETE"], sent  # take, check before the card, release
    # read to find production, read under the lease, not again for recording v2 (its revision
    # is checked by the swap)
    aliases = [method for method, path, _ in sent if path == "aliases.json"]
    assert aliases == ["GET", "GET", "PUT"], sent
    assert registry.version_numbers() == [1, 2] and registry.verify() == []
    assert registry.storage.read(f".leases/{MODEL}/register") is None


def test_an_alias_moved_while_a_registration_records_its_own_is_kept(
    s3_url: str, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registration records v2 on the alias document it read under its lease; another host
    moved an alias after that read (before v2's card), so the swap's revision fails, and the
    retry reads the document again and records v2 on top of the move."""
    registry = Registry(s3_url, MODEL)
    register_candidate(registry, make(1, accuracy=0.97), PARAMS)
    other = Registry(s3_url, MODEL)  # another host
    store_blobs = blobs.store

    def moved_meanwhile(*args, **kwargs):
        other.promote(1, "staging", "tester", "a second look")
        return store_blobs(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(blobs, "store", moved_meanwhile)
        done = register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    assert (done.version, done.alias, done.warning) == (2, "production", None)
    log = Registry(s3_url, MODEL).alias_log()
    assert log["aliases"] == {"production": 2, "staging": 1}
    assert [(e["action"], e["alias"], e["version"]) for e in log["events"]] == [
        ("register", "production", 1),
        ("promote", "staging", 1),
        ("register", "production", 2),
    ]
    assert "replayed" not in log["events"][2]["evidence"]  # recorded by its own writer
    assert registry.verify() == []


def test_the_registry_keeps_its_guarantees_on_s3(s3_url: str, make, tmp_path: Path) -> None:
    key, public = key_pair(tmp_path)
    registry = Registry(s3_url, MODEL, Signing.load(key, [public], True))
    first = register_candidate(registry, make(1, accuracy=0.97), PARAMS)
    second = register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    assert (first.version, second.version) == (1, 2) and registry.aliases()["production"] == 2
    again = register_candidate(registry, make(2, accuracy=0.99), PARAMS)  # identical files
    assert again.version == 2 and registry.version_numbers() == [1, 2]
    assert registry.read_file("production", "model.onnx") == make(2).onnx.read_bytes()
    registry.promote(1, "production", "tester", "back to one")
    assert registry.alias_log()["history"]["production"] == [1, 2, 1]
    assert registry.rollback("production", "tester", "undo") == 2
    assert registry.alias_log()["history"]["production"] == [1, 2]
    assert [e["actor"] for e in registry.alias_log()["events"]][-2:] == ["tester", "tester"]
    assert registry.verify() == [] and registry.location == f"{s3_url}/{MODEL}"
    # a blob changed behind the registry's back is refused on load and reported by verify
    onnx_sha = registry.card(2)["files"]["model.onnx"]
    blob = f"{MODEL}/blobs/sha256/{onnx_sha}"
    bucket = s3_url.removeprefix("s3://").split("/")[0]
    registry.storage.client.put_object(Bucket=bucket, Key=f"registry/{blob}", Body=b"tampered")
    with pytest.raises(RegistryError, match="v2: model.onnx was modified"):
        registry.read_file("production", "model.onnx")
    assert any("model.onnx" in problem for problem in registry.verify())
    # registering the same files again writes it anew (compare-and-swap on its ETag)
    assert register_candidate(registry, make(2, accuracy=0.99), PARAMS).version == 2
    assert registry.read_file("production", "model.onnx") == make(2).onnx.read_bytes()
    assert registry.verify() == []


def test_a_deleted_alias_document_on_s3_is_refused_then_restarted(
    s3_url: str, make, tmp_path: Path
) -> None:
    """Deleting aliases.json must not make the rolled-back v2 production again; the restart
    creates the document afresh (a create-only write), signed."""
    key, public = key_pair(tmp_path)
    registry = Registry(s3_url, MODEL, Signing.load(key, [public], True))
    register_candidate(registry, make(1, accuracy=0.97), PARAMS)
    register_candidate(registry, make(2, accuracy=0.99), PARAMS)
    registry.rollback("production", "tester", "v2 regressed")
    assert registry.aliases() == {"production": 1}
    bucket = s3_url.removeprefix("s3://").split("/")[0]
    registry.storage.client.delete_object(Bucket=bucket, Key=f"registry/{MODEL}/aliases.json")
    with pytest.raises(LostAliases, match=f"the last one when {MODEL} v2 was registered"):
        registry.aliases()
    assert registry.restart_aliases("tester", "aliases.json deleted").newest == 2
    assert registry.aliases() == {} and registry.verify() == []
    registry.promote(1, "production", "tester", "the last good one")
    assert registry.aliases() == {"production": 1} and registry.verify() == []


def test_unreferenced_blobs_are_reported_and_collected(s3_url: str, make) -> None:
    registry = Registry(s3_url, MODEL)
    register_candidate(registry, make(1), PARAMS)
    registry.storage.create(f"{MODEL}/blobs/sha256/{'0' * 64}", b"left by a dead writer")
    assert registry.garbage() == [f"{MODEL}/blobs/sha256/{'0' * 64}"]
    assert registry.verify() == []  # leftovers of a dead writer are garbage, not damage
    ages = registry.storage.ages(f"{MODEL}/")  # by the server's clock (its Date header)
    assert sorted(ages) == registry.storage.list(f"{MODEL}/")
    assert all(0 <= age < 60 for age in ages.values()), ages
    assert registry.collect_garbage().removed == []  # young: a registration may still be storing it
    etag = registry.storage.read_document(f"{MODEL}/blobs/sha256/{'0' * 64}")[1]
    assert registry.storage.renew(f"{MODEL}/blobs/sha256/{'0' * 64}")  # a copy onto itself
    assert registry.storage.read_document(f"{MODEL}/blobs/sha256/{'0' * 64}") == (
        b"left by a dead writer",
        etag,
    )
    assert not registry.storage.renew(f"{MODEL}/blobs/sha256/{'1' * 64}")  # not there
    assert registry.collect_garbage(min_age_s=0).removed == [f"{MODEL}/blobs/sha256/{'0' * 64}"]
    assert registry.garbage() == [] and registry.version_numbers() == [1]


def test_a_probe_left_by_a_process_that_died_is_garbage_once_old(
    s3_url: str, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conditional-write check writes `.probe/<id>` and deletes it; a process killed in
    between left it for good. Younger than PROBE_GRACE_S it may still be in use."""
    from mnist_pipeline.registry import s3_conditions

    registry = Registry(s3_url, MODEL)
    register_candidate(registry, make(1), PARAMS)
    store = registry.storage
    assert isinstance(store, S3Bucket)
    assert store._put(".probe/left", b"1", IfNoneMatch="*")  # as the check's first put
    assert registry.garbage() == []  # just written: a process may be checking right now
    assert registry.collect_garbage(min_age_s=0).removed == []
    now = time.time()

    def clock_at(moved: float) -> None:  # the store's clock, moved on
        monkeypatch.setattr(s3, "server_time", lambda _answer, t=now + moved: t)

    clock_at(s3_conditions.PROBE_GRACE_S - 10)
    assert registry.collect_garbage(min_age_s=0).removed == []
    # verify counts it at an hour, as a folder's temp files; gc takes it from 5 minutes
    clock_at(s3_conditions.PROBE_GRACE_S + 1)
    assert registry.garbage() == []
    assert registry.collect_garbage(min_age_s=0).removed == [".probe/left"]
    assert store._listed(".probe/") == {} and registry.garbage() == []
    assert store._put(".probe/left", b"1", IfNoneMatch="*")  # another one, left for an hour
    clock_at(GRACE_S + 1)
    assert registry.garbage() == [".probe/left"]
    assert registry.collect_garbage(min_age_s=0).removed == [".probe/left"]
    assert store._listed(".probe/") == {} and registry.garbage() == []
    assert registry.version_numbers() == [1] and registry.verify() == []
    with pytest.raises(RegistryError, match="is not a probe's name"):
        store.remove_abandoned(f"{MODEL}/card.json")


def test_gc_stops_deleting_once_its_lease_was_taken_over(
    s3_url: str, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc stalled past its lease's time to live: a registration took the lease over and may be
    using the blobs gc found unreferenced, so gc deletes no more of them."""
    registry = Registry(s3_url, MODEL)
    register_candidate(registry, make(1), PARAMS)
    left = [f"{MODEL}/blobs/sha256/{c * 64}" for c in "01"]
    for key in left:
        registry.storage.create(key, b"left by a dead writer")
    store, delete = registry.storage, registry.storage.delete
    lease_key = f".leases/{MODEL}/register"

    def delete_then_lose_the_lease(key: str) -> None:
        delete(key)
        store._put(lease_key, json.dumps({"owner": "a registration"}).encode())  # taken over

    monkeypatch.setattr(store, "delete", delete_then_lose_the_lease)
    with pytest.raises(RegistryError, match=r"lease .*register.* was taken over while held"):
        registry.collect_garbage(min_age_s=0)
    monkeypatch.undo()
    assert registry.garbage() == left[1:]  # the first one deleted, the second kept
    store._delete(lease_key)
    abandoned = store.abandoned

    def taken_over_before_any_delete(*args, **kwargs) -> list[str]:
        store._put(lease_key, json.dumps({"owner": "a registration"}).encode())
        return abandoned(*args, **kwargs)

    monkeypatch.setattr(store, "abandoned", taken_over_before_any_delete)
    with pytest.raises(RegistryError, match=r"lease .*register.* was taken over while held"):
        registry.collect_garbage(min_age_s=0)
    monkeypatch.undo()
    assert registry.garbage() == left[1:]  # checked before each delete: none deleted
    store._delete(lease_key)


def test_a_registration_whose_lease_gc_took_over_commits_nothing(
    s3_url: str, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration stalled past its lease's time to live; gc took the lease over and listed
    the old blobs no card needs, one of them this registration's own (left by an attempt that
    did not commit). The registration then restarts that blob's age and would commit a card
    that gc deletes the blob of: it must stop before the card instead."""
    registry = Registry(s3_url, MODEL)
    register_candidate(registry, make(1), PARAMS)
    store, lease_key = registry.storage, f".leases/{MODEL}/register"
    candidate = make(2)
    model = candidate.onnx.read_bytes()
    leftover = f"{MODEL}/blobs/sha256/{hashlib.sha256(model).hexdigest()}"
    store.create(leftover, model)  # an attempt that did not commit
    store_blobs, gc_found = blobs.store, []

    def stalled_then_gc_took_over(*args, **kwargs) -> None:
        store._put(lease_key, json.dumps({"owner": "models gc"}).encode())  # taken over
        gc_found.extend(registry.garbage())  # what gc lists, ages before the restart
        store_blobs(*args, **kwargs)

    monkeypatch.setattr(blobs, "store", stalled_then_gc_took_over)
    with pytest.raises(RegistryError, match=r"lease .*register.* was taken over while held"):
        register_candidate(registry, candidate, PARAMS)
    monkeypatch.undo()
    assert leftover in gc_found and registry.version_numbers() == [1]  # nothing committed
    store._delete(lease_key)  # the gc finishes: what it found is deleted
    for key in gc_found:
        store.delete(key)
    assert registry.verify() == [] and registry.garbage() != []  # this attempt's other blobs
    assert register_candidate(registry, candidate, PARAMS).version == 2  # run again: stored anew
    assert registry.verify() == [] and registry.read_file(2, "model.onnx") == model


def refuse_blob_writes(store: S3Bucket, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    """The store's client answers AccessDenied to a PUT of the blob whose key ends with
    `ending`, as a bucket policy would; every other request reaches the server."""
    put = store.client.put_object

    def put_object(**request):  # noqa: ANN003, ANN202
        if "/blobs/" in request["Key"] and request["Key"].endswith(ending):
            error = {"Error": {"Code": "AccessDenied", "Message": "denied by policy"}}
            raise ClientError(error, "PutObject")
        return put(**request)

    monkeypatch.setattr(store.client, "put_object", put_object)


def test_a_write_refused_among_parallel_writes_fails_them_as_one(
    s3_url: str, make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """create_many's pool: one refused write fails the call with its one-line error (the rest
    may or may not be stored: blobs are create-only), and a registration whose blob is refused
    commits no version."""
    store = open_storage(s3_url)
    assert isinstance(store, S3Bucket)
    refuse_blob_writes(store, monkeypatch, ending="/05")
    items = [(f"m/blobs/sha256/{i:02d}", b"%d" % i) for i in range(20)]
    with pytest.raises(
        RegistryError, match=r"access denied: cannot write .*/05' \(AccessDenied: denied"
    ):
        store.create_many(items)
    stored = store.read_many([key for key, _ in items])
    assert stored[5] is None
    assert all(s in (None, data) for s, (_, data) in zip(stored, items, strict=True))

    registry = Registry(s3_url, MODEL)
    refuse_blob_writes(registry.storage, monkeypatch, ending="")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="AccessDenied"):
        register_candidate(registry, make(1), PARAMS)
    assert registry.version_numbers() == [] and registry.verify() == []
    again = Registry(s3_url, MODEL)  # a new client: nothing refused
    assert register_candidate(again, make(1), PARAMS).version == 1 and again.verify() == []


def conflict_first(store: S3Bucket, monkeypatch: pytest.MonkeyPatch, times: int) -> None:
    """The store's client answers 409 ConditionalRequestConflict to the first `times` PUTs, as
    S3 does while another conditional write on the key is under way; then they reach the server."""
    put, left = store.client.put_object, [times]

    def put_object(**request):  # noqa: ANN003, ANN202
        if left[0] > 0:
            left[0] -= 1
            error = {"Error": {"Code": "ConditionalRequestConflict", "Message": "in flight"}}
            raise ClientError(error, "PutObject")
        return put(**request)

    monkeypatch.setattr(store.client, "put_object", put_object)


@pytest.mark.parametrize("jitter", ["longest", "shortest"])
def test_conflicting_conditional_writes_are_retried_with_capped_exponential_backoff(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, jitter: str
) -> None:
    """Each wait is drawn between 0 and a bound that doubles from 50 ms up to 1 s, so racing
    writers spread out; a write that conflicts every time fails naming the key, after 19 waits."""
    store = open_storage(s3_url)
    assert isinstance(store, S3Bucket)
    assert store.create("m/first", b"1")  # the store's conditions checked before the 409s
    waits: list[float] = []
    monkeypatch.setattr(s3_retry.time, "sleep", waits.append)
    pick = (lambda low, high: high) if jitter == "longest" else (lambda low, high: low)
    monkeypatch.setattr(s3_retry.random, "uniform", pick)
    conflict_first(store, monkeypatch, times=7)
    assert store.create("m/key", b"data") and store.read("m/key") == b"data"
    bounds = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert waits == (bounds if jitter == "longest" else [0.0] * 7)

    waits.clear()
    conflict_first(store, monkeypatch, times=s3_retry.CONFLICT_RETRIES)
    with pytest.raises(StoreError, match=r"m/other: writes kept conflicting at http"):
        store.create("m/other", b"data")
    assert len(waits) == s3_retry.CONFLICT_RETRIES - 1 and store.read("m/other") is None
    if jitter == "longest":
        assert sum(waits) == pytest.approx(1.55 + 14 * 1.0)


def test_a_write_that_landed_before_a_conflict_is_known_as_its_own(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's first try of a PUT timed out but was stored, and its retry met that very write
    still under way (409). The re-sent PUT is refused (412) on its first try: the loop's own
    re-send may have landed as well, so the write is looked at, and known as this one."""
    store = open_storage(s3_url)
    assert isinstance(store, S3Bucket)
    assert store.create("m/first", b"1")  # the store's conditions checked first
    monkeypatch.setattr(s3_retry.time, "sleep", lambda _: None)
    put, calls = store.client.put_object, []

    def landed_then_conflict(**request):  # noqa: ANN003, ANN202
        calls.append(request["Key"])
        if len(calls) == 1:
            put(**request)  # stored; its answer lost, and botocore's retry answered 409
            meta = {"HTTPStatusCode": 409, "RetryAttempts": 1}
            error = {"Error": {"Code": "ConditionalRequestConflict"}, "ResponseMetadata": meta}
            raise ClientError(error, "PutObject")
        return put(**request)

    monkeypatch.setattr(store.client, "put_object", landed_then_conflict)
    assert store.create("m/v1/card.json", b"card") is True and len(calls) == 2
    assert store.create("m/v1/card.json", b"card") is False  # there before this one


def test_racing_identical_registrations_make_one_version(s3_url: str, make) -> None:
    candidate, go, done = make(1), threading.Barrier(4), []

    def register() -> None:
        registry = Registry(s3_url, MODEL)
        go.wait()
        done.append(register_candidate(registry, candidate, PARAMS).version)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert done == [1, 1, 1, 1] and Registry(s3_url, MODEL).version_numbers() == [1]


def test_a_stale_lease_is_taken_over_and_a_live_one_waited_for(s3_url: str) -> None:
    store = open_storage(s3_url)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    from mnist_pipeline.registry.s3_lease import this_host

    body = json.dumps({"owner": "x", "host": this_host(), "pid": int(dead)}).encode()
    store._put(".leases/m/register", body, IfNoneMatch="*")
    with Lease(store, ".leases/m/register", wait_s=5):  # its holder no longer exists
        pass
    assert store._get(".leases/m/register") is None  # released
    elsewhere = json.dumps({"owner": "y", "host": "another-host", "pid": 1}).encode()
    store._put(".leases/m/register", elsewhere, IfNoneMatch="*")
    started = time.monotonic()
    with Lease(store, ".leases/m/register", ttl_s=0.5, wait_s=10):  # unchanged past its TTL
        assert time.monotonic() - started >= 0.5
    held, waiting = (Lease(store, ".leases/m/register", ttl_s=60, wait_s=0.3) for _ in "ab")
    with held, pytest.raises(RegistryError, match="is busy: lease .* held for over 0 s by"):
        waiting.__enter__()


def test_a_lease_just_taken_is_never_seen_as_abandoned_by_its_own_process(s3_url: str) -> None:
    """A lease of this process that no lease of it holds was left by a failed release, and is
    taken at once; so the taker must count as holding it from the moment its write lands, or
    another thread of the process reading it in that instant takes it over."""
    from mnist_pipeline.registry.s3_lease import holder_died

    store = open_storage(s3_url)
    put, seen = store._put, []

    def put_then_look(key: str, data: bytes, **condition: str) -> bool:
        stored = put(key, data, **condition)
        if stored and key.startswith(".leases/"):
            seen.append(holder_died(data))  # what another thread here would make of it now
        return stored

    store._put = put_then_look
    with Lease(store, ".leases/m/instant", wait_s=5):
        pass
    assert seen and seen[0] is False
    waiting = Lease(store, ".leases/m/instant", ttl_s=60, wait_s=0.2)
    with Lease(store, ".leases/m/instant", wait_s=5), pytest.raises(RegistryError):
        waiting.__enter__()  # refused: and it holds nothing afterwards
    assert holder_died(waiting.body) is True


def test_a_lease_being_released_is_never_seen_as_abandoned_by_its_own_process(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Its holder still counts as holding it until the delete: a thread of the same process
    waiting meanwhile waits for the delete rather than take the lease over as abandoned."""
    from mnist_pipeline.registry.s3_lease import holder_died

    store, key = open_storage(s3_url), ".leases/m/leaving"
    delete, seen = store._delete, []

    def look_then_delete(k: str, **condition: str) -> bool:
        found = store._get(k)
        seen.append(found is not None and holder_died(found[0]))  # a waiter's view now
        return delete(k, **condition)

    monkeypatch.setattr(store, "_delete", look_then_delete)
    with caplog.at_level("WARNING"), Lease(store, key, wait_s=5):
        pass
    assert seen == [False] and store._get(key) is None
    assert "took over" not in caplog.text and "while it was released" not in caplog.text


def test_a_live_holder_keeps_its_lease_past_the_time_to_live(s3_url: str) -> None:
    """Renewals change the lease's ETag (S3's is the body's MD5), so a waiter never sees a live
    holder's lease unchanged for a whole TTL, however long the holder keeps it."""
    store = open_storage(s3_url)
    key = ".leases/m/long"
    # a TTL long against a stall of a loaded machine (moto runs in this process, sharing the
    # GIL with the renewing thread), short against the test
    with Lease(store, key, ttl_s=2.0, wait_s=20):
        etags = set()
        for _ in range(8):  # 8 s: four times the TTL
            etags.add(store._get(key)[1])  # type: ignore[index]
            time.sleep(1.0)
        assert len(etags) >= 4  # renewed every third of the TTL, each renewal a new ETag
        with pytest.raises(RegistryError, match="is busy"):
            Lease(store, key, ttl_s=2.0, wait_s=6.0).__enter__()
    assert store._get(key) is None


def test_a_lease_taken_over_while_it_is_released_stays_with_its_new_holder(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Release reads the lease, then deletes it only if unchanged: a waiter that takes it over
    between the two (the holder looked stale to it) keeps it."""
    store = open_storage(s3_url)
    key, taker = ".leases/m/release", json.dumps({"owner": "t", "host": "h", "pid": 1}).encode()
    read = store._get

    def read_then_taken_over(k: str, cached: tuple[bytes, str] | None = None):  # noqa: ANN202
        found = read(k, cached)
        assert found is not None and store._put(k, taker, IfMatch=found[1])  # the takeover
        return found

    with Lease(store, key, wait_s=5):
        monkeypatch.setattr(store, "_get", read_then_taken_over)
    monkeypatch.undo()
    assert store._get(key)[0] == taker  # type: ignore[index]
    assert store._delete(key, IfMatch='"0123456789abcdef0123456789abcdef"') is False
    assert store._get(key) is not None
    assert store._delete(key) is True and store._get(key) is None
    assert store._delete(key) is True  # already gone


def test_a_lease_taken_over_after_its_last_check_stays_with_its_new_holder(s3_url: str) -> None:
    """Release deletes on the ETag the last check read, without reading the lease again: a
    takeover after that check changed the ETag, so the delete is refused and the lease kept."""
    store = open_storage(s3_url)
    key, taker = ".leases/m/checked", json.dumps({"owner": "t", "host": "h", "pid": 1}).encode()
    with Lease(store, key, wait_s=5) as lease:
        lease.check_held()
        assert store._put(key, taker, IfMatch=store._get(key)[1])  # type: ignore[index]
    assert store._get(key)[0] == taker  # type: ignore[index]
    with Lease(store, ".leases/m/kept", wait_s=5) as lease:
        lease.check_held()
    assert store._get(".leases/m/kept") is None  # released on the ETag its check read


@pytest.mark.parametrize(
    ("url", "problem", "in_params"),  # in_params: refused when params.yaml is read, too
    [
        ("s3://", "names no bucket", False),
        ("s3:///prefix", "names no bucket", False),
        ("s3://Bad_Bucket/x", "'Bad_Bucket' is not a valid bucket name", True),
        ("s3://models:9000/x", "'models:9000' is not a valid bucket name", True),
        ("s3://ok-bucket/a/../b", "parts may not start with '.'", True),
        ("s3://ok-bucket//models", "empty", True),
        ("s3://ok-bucket/a//b/", "empty", True),
        ("s3://ok-bucket//", "empty", True),
        ("gs://bucket/x", "unsupported scheme 'gs'", True),
        ("s3:/bucket/x", "is not a URL: write s3://", True),
        ("s3://[bucket/x", "is not a valid URL", True),
        ("s3://bucket/x?versionId=1", "takes no \\?query or #fragment", True),
    ],
)
def test_malformed_locations_are_refused(url: str, problem: str, in_params: bool) -> None:
    with pytest.raises(RegistryError, match=problem):
        open_storage(url)
    if in_params:
        for section, key in (("registry", "root"), ("inbox", "shared")):
            with pytest.raises(ParamsError, match=f"{section}.{key}: .*{problem}"):
                parse_params({section: {key: url}}, "params.yaml")


@pytest.mark.parametrize(
    ("url", "prefix"),
    [("s3://ok-bucket", ""), ("s3://ok-bucket/", ""), ("s3://ok-bucket/a/b/", "a/b")],
)
def test_a_trailing_slash_is_a_separator(url: str, prefix: str) -> None:
    assert parse_url(url) == ("ok-bucket", prefix)
    assert parse_params({"registry": {"root": url}}, "params.yaml").registry.root == url


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [("AWS_PROFILE", "no-such-profile", "no-such-profile"), ("AWS_ENDPOINT_URL", "x y", "x y")],
)
def test_a_bad_aws_setting_is_one_line_naming_it(
    variable: str, value: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(RegistryError, match=f"registry location 's3://models/r': .*{problem}"):
        open_storage("s3://models/r")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_named(monkeypatch: pytest.MonkeyPatch, make) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    use_endpoint(monkeypatch, endpoint)
    registry = Registry("s3://models/registry", MODEL)
    with pytest.raises(RegistryError, match=f"registry s3://models/registry at {endpoint}: "):
        register_candidate(registry, make(1), PARAMS)


def test_a_missing_bucket_is_named(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_endpoint(monkeypatch, s3_endpoint)
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist"):
        Registry("s3://no-such-bucket/registry", MODEL).version_numbers()


@pytest.mark.parametrize(
    ("stripped", "named"), [(STRIPPED, "If-None-Match"), ({"if-match"}, "If-Match")]
)
def test_an_endpoint_ignoring_conditional_writes_is_refused(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, make, stripped: set[str], named: str
) -> None:
    bucket = new_bucket(s3_endpoint)
    with proxy(s3_endpoint, strip=stripped) as stripping:
        use_endpoint(monkeypatch, stripping.url)
        registry = Registry(f"s3://{bucket}/registry", MODEL)
        with pytest.raises(RegistryError, match=f"ignores conditional writes \\({named}\\)"):
            register_candidate(registry, make(1), PARAMS)
    use_endpoint(monkeypatch, s3_endpoint)
    assert Registry(f"s3://{bucket}/registry", MODEL).storage.list("") == []  # nothing written


@pytest.mark.parametrize("header", ["IfNoneMatch", "IfMatch"])
def test_an_endpoint_that_does_not_implement_conditional_writes_is_refused_by_name(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, make, header: str
) -> None:
    """A store answering a conditional PUT 501 NotImplemented is refused with the header named,
    not as a failed write of a probe key."""
    bucket = new_bucket(s3_endpoint)
    use_endpoint(monkeypatch, s3_endpoint)
    registry = Registry(f"s3://{bucket}/registry", MODEL)
    put = registry.storage.client.put_object

    def put_object(**request):  # noqa: ANN003, ANN202
        if header in request:
            error = {"Error": {"Code": "NotImplemented", "Message": "A header you provided"}}
            raise ClientError(error, "PutObject")
        return put(**request)

    monkeypatch.setattr(registry.storage.client, "put_object", put_object)
    named = "If-None-Match" if header == "IfNoneMatch" else "If-Match"
    with pytest.raises(RegistryError, match=f"does not implement conditional writes \\({named}\\)"):
        register_candidate(registry, make(1), PARAMS)
    monkeypatch.undo()
    assert registry.storage.list("") == []  # nothing written, the probe removed


def test_a_store_that_does_not_implement_conditional_deletes_is_used_with_a_warning(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, make, caplog: pytest.LogCaptureFixture
) -> None:
    """Conditional writes honoured, If-Match on DELETE answered 501 NotImplemented (as some
    S3-compatible stores do): registrations work, and deletes go out without the condition."""
    bucket = new_bucket(s3_endpoint)
    use_endpoint(monkeypatch, s3_endpoint)
    registry = Registry(f"s3://{bucket}/registry", MODEL)
    store = registry.storage
    delete = store.client.delete_object

    def delete_object(**request):  # noqa: ANN003, ANN202
        if "IfMatch" in request:
            error = {"Error": {"Code": "NotImplemented", "Message": "If-Match on DELETE"}}
            raise ClientError(error, "DeleteObject")
        return delete(**request)

    monkeypatch.setattr(store.client, "delete_object", delete_object)
    with caplog.at_level("WARNING", logger="mnist_pipeline"):
        assert registry.collect_garbage().removed == []  # the first use: a lease, no write
        register_candidate(registry, make(1), PARAMS)
    assert registry.version_numbers() == [1] and registry.verify() == []
    assert "does not implement If-Match on DELETE" in caplog.text
    assert "could not release lease" not in caplog.text
    assert store.read(f".leases/{MODEL}/register") is None  # released each time
    key = f"{MODEL}/notes/one"
    assert store.create(key, b"a note")
    _, revision = store.read_document(key)
    assert store.delete_document(key, revision) and store.read(key) is None


def test_the_cli_reads_an_s3_registry_and_names_a_bad_one(
    s3_url: str, make, tmp_path: Path
) -> None:
    register_candidate(Registry(s3_url, MODEL), make(1, accuracy=0.97), PARAMS)
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(f"registry:\n  root: {s3_url}\n")

    def models(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mnist_pipeline",
                "--root",
                str(project),
                "--params",
                str(project / "params.yaml"),
                "models",
                *args,
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = models("list")
    assert listed.returncode == 0, listed.stderr
    assert "production" in listed.stdout  # v1's row with its alias
    assert models("verify").returncode == 0
    (project / "params.yaml").write_text(f"registry:\n  root: {s3_url}\n  model_name: mnist-cmn\n")
    for command in ("list", "gc"):  # not an empty registry, and nothing created
        typo = models(command)
        assert typo.returncode != 0 and typo.stderr.strip().splitlines()[-1] == (
            f"error: no model 'mnist-cmn' in the registry at {s3_url} (registry.model_name); "
            f"models there: {MODEL}"
        ), typo.stderr
    assert Registry(s3_url, "mnist-cmn").storage.list("mnist-cmn/") == []
    (project / "params.yaml").write_text("registry:\n  root: s3:///registry\n")
    refused = models("list")
    assert refused.returncode == 2  # a bad params value, refused when params.yaml is read
    last = refused.stderr.strip().splitlines()[-1]
    assert "registry.root: 's3:///registry' names no bucket: write s3://BUCKET/PREFIX" in last


def test_a_store_that_stops_mid_registration_leaves_no_half_version(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, make
) -> None:
    """The store goes away after the first blob of v2 is stored: the registration fails in one
    line naming the endpoint, v2 is not visible, and once the store is back the next
    registration commits v2 and `models gc` removes what the failed one left."""
    bucket = new_bucket(s3_endpoint)
    with proxy(s3_endpoint) as store:
        use_endpoint(monkeypatch, store.url)
        url = f"s3://{bucket}/registry"
        register_candidate(Registry(url, MODEL), make(1, accuracy=0.97), PARAMS)
        store.down_after = lambda method, path: method == "PUT" and "/blobs/" in path
        with pytest.raises(RegistryError) as failed:
            register_candidate(Registry(url, MODEL), make(2, accuracy=0.99), PARAMS)
        message = str(failed.value)
        assert message.startswith(f"registry {url} at {store.url}: ") and "\n" not in message
        store.down_after = None
        store.down.clear()
        registry = Registry(url, MODEL)
        assert registry.version_numbers() == [1] and registry.verify() == []
        assert registry.aliases() == {"production": 1}
        left = registry.garbage()
        assert left and all("/blobs/" in key for key in left)
        done = register_candidate(registry, make(2, accuracy=0.99), PARAMS)
        assert done.version == 2 and registry.aliases()["production"] == 2
        registry.collect_garbage(min_age_s=0)
        assert registry.garbage() == [] and registry.verify() == []


def test_a_store_that_stops_after_the_listing_fails_list_and_verify_as_a_whole(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, make
) -> None:
    """The store answers the listing of versions, then no more: reading the cards fails in one
    line naming the endpoint, read once (not again card by card), rather than every version
    shown as refused (`models list` exiting 0 with nothing read)."""
    bucket = new_bucket(s3_endpoint)
    with proxy(s3_endpoint) as store:
        use_endpoint(monkeypatch, store.url)
        url = f"s3://{bucket}/registry"
        for number in (1, 2, 3):
            register_candidate(Registry(url, MODEL), make(number, accuracy=0.97), PARAMS)
        registry = Registry(url, MODEL)
        reads: list[list[str]] = []
        read_many = registry.storage.read_many
        monkeypatch.setattr(
            registry.storage, "read_many", lambda keys: reads.append(keys) or read_many(keys)
        )
        # verify lists the versions once before its catalogue does
        for look, listings in ((registry.catalogue, 1), (registry.verify, 2)):
            listed = iter(range(listings, 0, -1))
            store.down_after = lambda _, path, n=listed: "list-type" in path and next(n) == 1
            store.down.clear()
            reads.clear()
            with pytest.raises(StoreError) as failed:
                look()
            assert str(failed.value).startswith(f"registry {url} at {store.url}: ")
            assert len(reads) == 1 and len(reads[0]) == 3  # the cards at once, and no more
