"""Approval before production (pipeline/approval.py): the held-back decision, the outcomes
recorded in the audit trail, and the CLI's errors (the Prefect part: test_approval_flow.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows import approval as approval_flow  # at import: Prefect sets up logging once
from mnist_pipeline.core.errors import ParamsError, RegistryError, StoreError
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.core.reports import ModelCard, parse_report
from mnist_pipeline.pipeline import approval
from mnist_pipeline.pipeline.approval import Answer, settle
from mnist_pipeline.pipeline.card import evidence_lines
from mnist_pipeline.pipeline.promotion import held_for_approval
from mnist_pipeline.pipeline.register import register_candidate
from mnist_pipeline.registry import Decision, Registry
from mnist_pipeline.registry.registration import AliasMoved
from tests.approval_helpers import approval_params, proposed_project
from tests.registry_helpers import make_candidate
from tests.reports import PARAMS
from tests.test_cli_errors import cli


def test_approval_params_are_validated() -> None:
    assert parse_params({}).registry.approval == "none"
    with pytest.raises(ParamsError, match="registry.approval"):
        parse_params({"registry": {"approval": "maybe"}})
    with pytest.raises(ParamsError, match="registry.approval_timeout_s"):
        parse_params({"registry": {"approval_timeout_s": 0}})


def test_only_a_production_decision_is_held_back_and_its_evidence_is_kept() -> None:
    evidence = {"evidence": {"significance": 0.05, "mnist": {"verdict": "better"}}}
    better = Decision("production", "better than production v1", 1, evidence)
    held = held_for_approval(better, "required")
    assert (held.alias, held.champion) == ("staging", 1)
    assert held.reason == (
        "better than production v1; awaits approval for production (registry.approval: required)"
    )
    assert held.evidence == {**evidence, "proposed": "production"}
    assert held_for_approval(better, "none") == better
    worse = Decision("staging", "worse", 1, evidence)
    assert held_for_approval(worse, "required") == worse


def test_a_first_version_waits_too_and_the_card_says_what_was_proposed(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", "mnist-cnn")
    done = register_candidate(registry, make_candidate(tmp_path / "c", 1), approval_params())
    assert (done.alias, done.pending, done.champion) == ("staging", "production", None)
    assert "awaits approval for production" in done.summary()
    assert registry.aliases() == {"staging": 1}
    card = parse_report(ModelCard, registry.card(1), "card")
    assert (card.decision.alias, card.decision.proposed) == ("staging", "production")
    evidence = card.decision.evidence  # the rules' evidence, whole: a first version has
    assert evidence is not None and evidence.mnist is None  # no production to compare with
    (event,) = registry.alias_log()["events"]
    assert event["evidence"]["proposed"] == "production"
    assert event["evidence"]["evidence"] == evidence.to_dict()  # the card and the log agree


def test_after_a_rejected_first_version_the_next_is_not_called_the_first(tmp_path: Path) -> None:
    """v1 proposed and rejected leaves no production: v2 is compared with nothing, and its
    reason and card say so instead of calling it the first version."""
    registry = Registry(tmp_path / "registry", "mnist-cnn")
    register_candidate(registry, make_candidate(tmp_path / "c1", 1), approval_params())
    settle(registry, 1, None, Answer(False, "not yet", "user:bob"), "prefect:r", 9)
    second = make_candidate(tmp_path / "c2", 2, accuracy=0.93)
    done = register_candidate(registry, second, approval_params())
    assert (done.alias, done.pending, done.champion) == ("staging", "production", None)
    card = parse_report(ModelCard, registry.card(2), "card")
    assert card.decision.reason.startswith(
        "no production version of mnist-cnn to compare with (v1 registered, none production)"
    )
    assert "first version" not in done.summary()
    assert evidence_lines(card.decision) == ["none (no production version to compare with)"]


def test_a_version_not_proposed_is_not_pending(tmp_path: Path) -> None:
    registry, _ = proposed_project(tmp_path)
    worse = make_candidate(tmp_path / "c3", 3, accuracy=0.91)
    done = register_candidate(registry, worse, approval_params())
    assert (done.alias, done.pending) == ("staging", None)


def test_approved_moves_production_by_the_approver_with_the_comment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """And tells Prefect, whose alias.moved event serving replicas follow."""
    from mnist_pipeline.pipeline import announce

    registry, v2 = proposed_project(tmp_path)
    told = []
    monkeypatch.setattr(announce, "moved", lambda *args: told.append(args[1:]))
    settled = settle(registry, 2, v2.champion, Answer(True, "checked", "user:eve"), "prefect:r", 9)
    assert told == [("production", 2, 1, "user:eve")]
    assert settled.outcome == "approved"
    assert settled.message == "user:eve approved v2: production v1 -> v2 (checked)"
    assert registry.aliases()["production"] == 2
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("promote", 2, 1)
    assert (event["actor"], event["evidence"]) == ("user:eve", {"comment": "checked"})
    assert registry.verify() == []


def test_approving_a_card_sealed_again_without_its_model_moves_nothing_and_says_so(
    tmp_path: Path,
) -> None:
    """The approver's answer is not lost: the trail records it and why it moved nothing."""
    from tests.test_registry_integrity import reseal

    registry, v2 = proposed_project(tmp_path)
    reseal(registry, 2, lambda card: card["files"].pop("model.onnx"))
    refused = settle(registry, 2, v2.champion, Answer(True, "ok", "user:eve"), "prefect:r", 9)
    assert refused.outcome == "refused" and registry.aliases() == {"production": 1, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["actor"]) == ("reject", 2, "prefect:r")
    assert event["reason"] == refused.message
    assert refused.message.startswith(
        "user:eve approved v2, but it cannot be promoted (v2 cannot be promoted: the card "
        "lists no model.onnx"
    )
    assert refused.message.endswith("): kept as staging")
    assert event["evidence"] == {"comment": "ok"}


def test_approving_a_version_whose_card_no_longer_verifies_is_recorded_as_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its card edited and sealed again, its signature then fails: no promotion, and the
    approver's answer is in the trail all the same."""
    registry, v2 = proposed_project(tmp_path)
    read = registry._card

    def forged(version: int) -> dict:
        if version == 2:
            raise RegistryError("mnist-cnn v2: the signature does not match card.json")
        return read(version)

    monkeypatch.setattr(registry, "_card", forged)
    refused = settle(registry, 2, v2.champion, Answer(True, "ok", "user:eve"), "prefect:r", 9)
    assert refused.outcome == "refused" and "the signature does not match" in refused.message
    assert registry.alias_log()["events"][-1]["action"] == "reject"
    assert registry.aliases() == {"production": 1, "staging": 2}


def test_an_approval_the_store_could_not_record_fails_rather_than_reading_as_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a version that fails the promotion checks is "refused": a registry that kept
    changing under the move (or could not be read) fails the run, and nothing is recorded."""
    registry, v2 = proposed_project(tmp_path)
    before = registry.alias_log()

    def busy(*_: object, **__: object) -> None:
        raise RegistryError("the alias document kept changing under 100 attempts")

    monkeypatch.setattr(registry, "promote", busy)
    with pytest.raises(RegistryError, match="kept changing"):
        settle(registry, 2, v2.champion, Answer(True, "ok", "user:eve"), "prefect:r", 9)
    assert registry.alias_log() == before


def test_a_report_the_store_could_not_read_fails_the_approval_rather_than_refusing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that times out while the promotion checks read v2's metrics.json says nothing
    about v2: the run fails (the answer can be given again), and no reject is recorded."""
    registry, v2 = proposed_project(tmp_path)
    before, read = registry.alias_log(), registry.read_file

    def unreachable(ref: str | int, relpath: str) -> bytes:
        if relpath == "metrics.json":
            raise StoreError("s3://bucket/m: the endpoint did not answer (read timeout)")
        return read(ref, relpath)

    monkeypatch.setattr(registry, "read_file", unreachable)
    with pytest.raises(StoreError, match="did not answer"):
        settle(registry, 2, v2.champion, Answer(True, "ok", "user:eve"), "prefect:r", 9)
    assert registry.alias_log() == before
    assert registry.aliases() == {"production": 1, "staging": 2}


def test_rejected_and_expired_stay_staging_and_are_recorded(tmp_path: Path) -> None:
    registry, v2 = proposed_project(tmp_path)
    rejected = settle(registry, 2, v2.champion, Answer(False, "too slow"), "prefect:r", 9)
    assert rejected.outcome == "rejected"
    assert rejected.message == "prefect:r rejected v2 for production: kept as staging (too slow)"
    expired = settle(registry, 2, v2.champion, None, "prefect:r", 60)
    assert expired.outcome == "expired"
    assert registry.aliases() == {"production": 1, "staging": 2}
    reject, expire = registry.alias_log()["events"][-2:]
    assert (reject["action"], reject["version"], reject["previous"]) == ("reject", 2, 1)
    assert reject["evidence"] == {"comment": "too slow"} and reject["actor"] == "prefect:r"
    assert expire["action"] == "expire" and expire["evidence"] == {}
    assert expire["reason"] == (
        "no answer within 60 s to the proposal of v2 for production: kept as staging"
    )
    assert registry.verify() == []  # the chain holds the events that moved nothing


def test_rejecting_or_expiring_a_version_promoted_meanwhile_says_it_is_production(
    tmp_path: Path,
) -> None:
    """vN promoted by hand while its proposal waited: a later reject or expiry moves nothing
    and must not record that vN was "kept as staging"."""
    registry, v2 = proposed_project(tmp_path)
    registry.promote(2, "production", "user:ops", "by hand")
    rejected = settle(registry, 2, v2.champion, Answer(False, "no", "user:bob"), "prefect:r", 9)
    expired = settle(registry, 2, v2.champion, None, "prefect:r", 60)
    assert rejected.message == (
        "user:bob rejected v2 for production: v2 is production already (promoted meanwhile), "
        "nothing moved (no)"
    )
    assert expired.message == (
        "no answer within 60 s to the proposal of v2 for production: v2 is production already "
        "(promoted meanwhile), nothing moved"
    )
    assert registry.aliases() == {"production": 2, "staging": 2}
    reasons = [event["reason"] for event in registry.alias_log()["events"][-2:]]
    assert all("staging" not in reason and "production already" in reason for reason in reasons)


def test_answers_to_a_version_no_longer_staging_say_where_it_is(tmp_path: Path) -> None:
    """v3 took staging while v2 waited: a reject or expiry of v2 must not record that it was
    "kept as staging"; an approval of a v2 promoted by hand meanwhile records the approver."""
    registry, v2 = proposed_project(tmp_path)
    params = approval_params()
    v3 = register_candidate(registry, make_candidate(tmp_path / "c3", 3, accuracy=0.99), params)
    assert registry.aliases() == {"production": 1, "staging": 3} and v3.version == 3
    rejected = settle(registry, 2, v2.champion, Answer(False, "no", "user:bob"), "prefect:r", 9)
    expired = settle(registry, 2, v2.champion, None, "prefect:r", 60)
    left = "v2 keeps no alias (staging moved to v3 meanwhile), nothing moved"
    assert rejected.message == f"user:bob rejected v2 for production: {left} (no)"
    assert expired.message.endswith(f"for production: {left}")
    reasons = [event["reason"] for event in registry.alias_log()["events"][-2:]]
    assert all(reason.endswith(left) for reason in reasons), reasons

    registry.promote(2, "production", "user:ops", "by hand")
    approved = settle(registry, 2, v2.champion, Answer(True, "checked", "user:eve"), "prefect:r", 9)
    assert approved.outcome == "approved"
    assert approved.message == (
        "user:eve approved v2: it is production already (promoted meanwhile) (checked)"
    )
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["actor"]) == ("approve", 2, "user:eve")
    assert event["evidence"] == {"comment": "checked"} and registry.aliases()["production"] == 2
    assert registry.verify() == []


def test_approving_after_production_moved_keeps_it_staging(tmp_path: Path) -> None:
    registry, v2 = proposed_project(tmp_path)
    third = make_candidate(tmp_path / "c3", 3, accuracy=0.97)
    moved = register_candidate(registry, third, PARAMS)  # approval not required there
    assert (moved.version, moved.alias) == (3, "production")  # production moved while v2 waited
    settled = settle(registry, 2, v2.champion, Answer(True, "ok", "user:eve"), "prefect:r", 9)
    assert settled.outcome == "outdated"
    assert "production moved from v1 to v3 since v2 was compared with it" in settled.message
    assert registry.aliases()["production"] == 3
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["actor"]) == ("reject", 2, "prefect:r")


def test_a_conditional_promote_moves_nothing_when_the_alias_moved(tmp_path: Path) -> None:
    registry, _ = proposed_project(tmp_path)
    before = registry.alias_log()
    with pytest.raises(AliasMoved, match="production is v1, no longer v7"):
        registry.promote(2, "production", expected=7)
    assert registry.alias_log() == before
    assert registry.promote(2, "production", expected=1) == 1


def test_cli_without_a_prefect_api_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, _ = proposed_project(tmp_path)
    before = registry.alias_log()
    monkeypatch.setattr(approval, "server_configured", lambda: None)
    assert cli(tmp_path, "models", "approve", "2", "--comment", "ok") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: no Prefect API configured (set PREFECT_API_URL)" in err
    assert cli(tmp_path, "models", "reject", "9") == 1  # an unknown version is named first
    assert capsys.readouterr().err == "error: unknown version 9 of mnist-cnn; versions: 1, 2\n"
    # usage errors, before the paused run is looked for (resumed, it would fail to record them)
    assert cli(tmp_path, "models", "approve", "2", "--comment", "ok\nreally") == 2
    assert (
        "the comment holds a control character ('\\n' at 2): give one line of printable text"
        in " ".join(capsys.readouterr().err.replace("│", " ").split())
    )
    assert cli(tmp_path, "models", "approve", "2", "--actor", " ") == 2
    assert "the actor is blank: name who makes this move (or leave it out)" in " ".join(
        capsys.readouterr().err.replace("│", " ").split()
    )
    assert registry.alias_log() == before


def test_cli_with_prefect_settings_prefect_refuses_is_one_line(tmp_path: Path) -> None:
    """A PREFECT_* variable Prefect cannot read ended `models approve` in a pydantic traceback."""
    registry, _ = proposed_project(tmp_path)
    before = registry.alias_log()
    # a process of its own: Prefect reads its settings once per process
    env = {**os.environ, "PREFECT_CLIENT_RETRY_EXTRA_CODES": "abc"}
    approve = [sys.executable, "-m", "mnist_pipeline", "--root", str(tmp_path), "models"]
    done = subprocess.run(
        [*approve, "approve", "2"], env=env, capture_output=True, text=True, timeout=120
    )
    err = done.stderr  # after what Prefect itself prints on import ("Failed to initialize ...")
    assert done.returncode == 1 and "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("error: Prefect's settings are refused: "), err
    assert "retry_extra_codes" in last
    assert registry.alias_log() == before


def test_an_answer_recorded_is_the_outcome_even_if_the_runs_cannot_be_tagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the answer moved production, a Prefect API that fails the runs' tags is a warning:
    the retraining run still ends with the approval's outcome (not Failed, which would notify a
    failure for a promotion that happened)."""
    registry, v2 = proposed_project(tmp_path)
    answered = SimpleNamespace(
        result=lambda: Answer(True, "checked", "user:eve"),
        state_details=SimpleNamespace(flow_run_id="approval-run"),
    )

    def api_down(*_: object, **__: object) -> None:
        raise ConnectionError("the Prefect API does not answer")

    monkeypatch.setattr(approval_flow, "flow_run", SimpleNamespace(id="r", name="r", parameters={}))
    monkeypatch.setattr(approval_flow, "server_configured", lambda: "http://127.0.0.1:9/api")
    monkeypatch.setattr(approval_flow, "tell", lambda *_: None)
    monkeypatch.setattr(approval_flow, "approval", lambda *_, **__: answered)
    monkeypatch.setattr(approval_flow, "tag_run", api_down)
    with caplog.at_level("WARNING", logger="mnist_pipeline.flows"):
        settled = approval_flow.await_approval(registry, v2, 60)
    assert settled.outcome == "approved" and registry.aliases()["production"] == 2
    assert caplog.text.count("could not tag") == 2 and "does not answer" in caplog.text


def test_an_approval_run_that_ends_without_an_answer_is_recorded_before_the_run_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled in the UI or crashed: the retraining run fails, and the audit trail says the
    proposal ended (it recorded nothing, leaving the proposal open for good)."""
    registry, v2 = proposed_project(tmp_path)

    def cancelled() -> None:
        raise RuntimeError("the flow run was cancelled")

    ended = SimpleNamespace(name="Cancelled", result=cancelled)
    monkeypatch.setattr(approval_flow, "flow_run", SimpleNamespace(id="r", name="r", parameters={}))
    monkeypatch.setattr(approval_flow, "server_configured", lambda: "http://127.0.0.1:9/api")
    monkeypatch.setattr(approval_flow, "tell", lambda *_: None)
    monkeypatch.setattr(approval_flow, "approval", lambda *_, **__: ended)
    with pytest.raises(RuntimeError, match="cancelled"):
        approval_flow.await_approval(registry, v2, 60)
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"]) == ("expire", 2)
    assert event["reason"] == (
        "the approval run ended Cancelled (the flow run was cancelled), taking no answer: "
        "kept as staging"
    )
    assert registry.aliases() == {"production": 1, "staging": 2}


def test_a_proposal_nobody_can_answer_is_recorded_as_expired_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a flow run (or on a temporary server) nothing waits: the audit trail says why
    the proposed version stays staging, and nothing else moves."""
    registry, v2 = proposed_project(tmp_path)
    monkeypatch.setattr(approval_flow, "flow_run", SimpleNamespace(id=None, name=None))
    settled = approval_flow.await_approval(registry, v2, 60)
    assert settled.outcome == "expired"
    assert settled.message.startswith("not in a flow run: nobody can approve v2 here: v2 stays")
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("expire", 2, 1)
    assert event["reason"] == "not in a flow run: nobody can approve v2 here: kept as staging"
    assert registry.aliases() == {"production": 1, "staging": 2}


def test_an_expiry_the_registry_refuses_to_record_is_a_warning_not_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """v2 is committed and stays staging whatever the trail says: a store that refuses the
    "expire" event (down, or a lost alias document) must not fail the run that registered it."""
    registry, v2 = proposed_project(tmp_path)
    monkeypatch.setattr(approval_flow, "flow_run", SimpleNamespace(id=None, name=None))
    before = registry.alias_log()

    def down(*_: object, **__: object) -> None:
        raise StoreError("s3://bucket/m: the endpoint did not answer")

    monkeypatch.setattr(registry, "note", down)
    with caplog.at_level("WARNING"):
        settled = approval_flow.await_approval(registry, v2, 60)
    assert settled.outcome == "expired" and "v2 stays staging" in settled.message
    assert "could not record the proposal's expiry" in caplog.text
    assert "did not answer" in caplog.text and registry.alias_log() == before


def test_a_card_the_store_cannot_give_before_the_wait_expires_the_proposal_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """v2 is committed: a store briefly away when its card is read to tag the waiting run
    does not fail the run that registered it; the proposal is recorded as expired, as when
    nobody can answer, and nobody is told to approve a run that never waits."""
    registry, v2 = proposed_project(tmp_path)

    def down(*_: object) -> tuple[str, str]:
        raise StoreError("s3://bucket/m: the endpoint did not answer")

    told: list[object] = []
    monkeypatch.setattr(approval_flow, "flow_run", SimpleNamespace(id="r", name="r", parameters={}))
    monkeypatch.setattr(approval_flow, "server_configured", lambda: "http://127.0.0.1:9/api")
    monkeypatch.setattr(approval_flow, "version_tags", down)
    monkeypatch.setattr(approval_flow, "tell", lambda *args: told.append(args))
    monkeypatch.setattr(approval_flow, "tag_run", lambda *_, **__: None)
    settled = approval_flow.await_approval(registry, v2, 60)
    assert settled.outcome == "expired" and told == []
    assert "v2's card could not be read" in settled.message and "did not answer" in settled.message
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"]) == ("expire", 2)
    assert registry.aliases() == {"production": 1, "staging": 2}
    assert approval_flow.aliases_after(registry, 2, settled) == "staging"

    def damaged(*_: object) -> tuple[str, str]:
        raise RegistryError("mnist-cnn v2: the card's seal does not match its contents")

    monkeypatch.setattr(approval_flow, "version_tags", damaged)
    with pytest.raises(RegistryError, match="seal"):  # not a store away: the run fails
        approval_flow.await_approval(registry, v2, 60)

    def state_down() -> None:
        raise StoreError("s3://bucket/m: the endpoint did not answer")

    monkeypatch.setattr(registry, "state", state_down)
    with caplog.at_level("WARNING", logger="mnist_pipeline.flows"):
        approved = approval.Settled("approved", "approved by eve")
        said = approval_flow.aliases_after(registry, 2, approved)
        assert said == "unknown (the registry could not be read after v2 was approved)"
    assert "could not read v2's aliases after the approval" in caplog.text


def test_an_approval_run_that_cannot_be_tagged_says_to_resume_it_in_the_ui(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models approve` finds the waiting run by its tag: without the tag it would not, so the
    run tells the UI's Resume only."""

    def api_down(*_: object, **__: object) -> None:
        raise ConnectionError("the Prefect API does not answer")

    answer = approval_flow.ApprovalInput(approve=True, comment="ok")
    monkeypatch.setattr(approval_flow, "pause_flow_run", lambda **_: answer)
    for tagging, told in ((lambda *_, **__: None, True), (api_down, False)):
        monkeypatch.setattr(approval_flow, "tag_run", tagging)
        state = approval_flow.approval.fn(2, 60, ["awaiting-approval:mnist-cnn:v2"])
        said = capsys.readouterr().out
        assert state.is_completed() and "Resume this run in the Prefect UI" in said
        assert ("or `mnist-pipeline models approve 2" in said) is told, said
        assert ("cannot find it: its tag could not be set" in said) is not told, said


def test_an_answer_whose_who_was_left_blank_in_the_form_is_the_uis() -> None:
    """The Prefect UI accepts the form (the schema allows any text), so a blank `who` must not
    fail the resumed run and lose the answer."""
    for blank in ("", "   ", " \t "):
        answer = approval_flow.ApprovalInput(approve=True, comment="ok", who=blank).answer()
        assert answer.approve and answer.who is None and answer.comment == "ok"
    two_lines = approval_flow.ApprovalInput(approve=True, comment="fine\nreally").answer()
    assert two_lines.comment == "fine\\nreally"  # one line in the trail, as escapes
    named = approval_flow.ApprovalInput(approve=False, who="  alice \n").answer()
    assert named.who == "alice" and not named.approve


def test_an_answer_naming_nobody_is_refused_before_any_run_is_answered() -> None:
    """`models approve 2 --actor ""` gave an Answer whose empty `who` passed unchecked."""
    for nobody in ("", "  "):
        with pytest.raises(RegistryError, match="the actor is blank"):
            Answer(True, "ok", nobody)
    assert Answer(True, "ok").who is None  # none given: the waiting run's UI
