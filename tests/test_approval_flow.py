"""Approval against a real Prefect server: a flow run waits, in its paused `approval` subflow,
for a version proposed for production, `models approve|reject` (or the UI's form) answer it, and
a run nobody answers ends with the version staging; the retraining flow reaches the pause, and as
a deployment run it keeps its concurrency slot while it waits."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.pipeline.approval import version_tags, waiting_tag
from mnist_pipeline.registry import Registry
from tests.approval_helpers import proposed_project
from tests.conftest import REPO_ROOT
from tests.process_helpers import prefect_server, start, stop, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A `prefect server start` for the module; the environment its clients use."""
    with prefect_server(tmp_path_factory.mktemp("prefect")) as env:
        yield {**env, "PYTHONPATH": str(REPO_ROOT)}


def flow_run(api: str, run_id: str) -> dict:
    response = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30)
    response.raise_for_status()
    return response.json()


def flow_runs(api: str, **criteria: dict) -> list[dict]:
    """The flow runs matching the `flow_runs` filter `criteria`."""
    body = {"flow_runs": criteria, "limit": 5, "offset": 0}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def paused_run(api: str, tag: str) -> dict | None:
    """The paused flow run tagged `tag` (None: none yet)."""
    found = flow_runs(api, tags={"all_": [tag]}, state={"type": {"any_": ["PAUSED"]}})
    return found[0] if found else None


def parent_run(api: str, subflow_run: dict) -> dict:
    """The flow run that started `subflow_run`."""
    task_run = f"{api}/task_runs/{subflow_run['parent_task_run_id']}"
    response = httpx.get(task_run, timeout=30)
    response.raise_for_status()
    return flow_run(api, response.json()["flow_run_id"])


def awaiting_approval(api: str, run_id: str) -> bool:
    """What flows.sweep makes of the flow run `run_id`: waiting for a person, or not."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    from flows.child_runs import awaits_approval

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        return awaits_approval(c, c.read_flow_run(UUID(run_id)))


def models(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cli = [sys.executable, "-m", "mnist_pipeline", "--root", str(project), "models", *args]
    return subprocess.run(cli, env=env, capture_output=True, text=True, timeout=180)


def waiting(project: Path, env: dict[str, str], timeout_s: int) -> subprocess.Popen:
    """A flow run (its own process) waiting for approval of v2, compared with v1."""
    args = [sys.executable, "-m", "tests.approval_helpers", str(project), "2", "1", str(timeout_s)]
    return start(args, env, project / "flow.log", REPO_ROOT)


def answered(
    project: Path, env: dict[str, str], model: str, answer: Callable[[dict], object]
) -> tuple[Registry, dict, dict, object]:
    """Start a run waiting for v2 of `model`, call `answer` with its approval run once paused;
    returns the registry, the finished approval run and the run that waited, and the answer's
    result."""
    registry, _ = proposed_project(project, model)
    api, log = env["PREFECT_API_URL"], project / "flow.log"
    proc = waiting(project, env, 600)
    try:
        run = wait_for(
            lambda: paused_run(api, version_tags(registry, 2)[1]), 180, "pause", proc, log
        )
        assert registry.aliases() == {"production": 1, "staging": 2}  # nothing moved yet
        parent = parent_run(api, run)
        assert parent["state"]["type"] == "RUNNING"  # only the subflow paused
        assert awaiting_approval(api, parent["id"])  # as a sweep sees its registering run
        done = answer(run)
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    return registry, flow_run(api, run["id"]), parent_run(api, run), done


def with_cli(project: Path, env: dict[str, str], *args: str) -> Callable[[dict], object]:
    """An answer given with `mnist-pipeline models *args`."""
    return lambda _: models(project, env, *args)


def test_approve_promotes_with_the_approver_and_comment(
    tmp_path: Path, server: dict[str, str]
) -> None:
    project = tmp_path / "p"
    answer = with_cli(project, server, "approve", "2", "--comment", "ok", "--actor", "user:eve")
    registry, run, parent, done = answered(project, server, "approve-me", answer)
    assert done.returncode == 0 and "to approve v2" in done.stderr, done.stderr
    assert registry.aliases() == {"production": 2, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("promote", 2, 1)
    assert (event["actor"], event["evidence"]) == ("user:eve", {"comment": "ok"})
    assert (run["name"], run["state"]["type"]) == ("approve-v2", "COMPLETED")
    assert run["state"]["message"] == "answered: approve v2 by user:eve"
    assert parent["state"]["type"] == "COMPLETED"
    assert parent["state"]["message"] == "user:eve approved v2: production v1 -> v2 (ok)"
    assert "approval:approved" in run["tags"] and "approval:approved" in parent["tags"]
    assert not set(version_tags(registry, 2)) & set(run["tags"])
    assert registry.verify() == []


def test_another_projects_version_of_the_same_model_is_not_answered(
    tmp_path: Path, server: dict[str, str]
) -> None:
    """Projects A and B share a model name and a Prefect server; only A's v2 waits. Approving
    v2 in B (its own v2, which nothing waits for) must not resume A's run and move A's
    production: it says no run waits; A's own answer then lands."""
    other, project = tmp_path / "b", tmp_path / "a"
    theirs, _ = proposed_project(other, "shared-name")
    time.sleep(1.1)  # cards created a second apart: the same files, yet not the same card
    assert waiting_tag("shared-name", 2, "0" * 64).startswith("awaiting-approval:shared-name:v2:")

    def from_b_then_a(run: dict) -> subprocess.CompletedProcess:
        wrong = models(other, server, "approve", "2", "--actor", "user:b")
        assert wrong.returncode == 1, wrong.stderr
        said = " ".join(wrong.stderr.split())
        assert (
            f"flow run {run['name']} ({run['id']}) waits for approval of a shared-name v2 " in said
        )
        assert "whose card is not this registry's v2" in said and version_tags(theirs, 2)[1] in said
        now = flow_run(server["PREFECT_API_URL"], run["id"])  # as the server has it now
        assert now["state"]["type"] == "PAUSED", now["state"]
        return models(project, server, "approve", "2", "--actor", "user:a")

    registry, run, parent, done = answered(project, server, "shared-name", from_b_then_a)
    assert done.returncode == 0, done.stderr
    assert registry.alias_log()["events"][-1]["actor"] == "user:a"
    assert registry.aliases()["production"] == 2 and theirs.aliases()["production"] == 1
    assert [e["actor"] for e in theirs.alias_log()["events"]].count("user:b") == 0


def test_an_answer_naming_nobody_is_recorded_as_the_ui_of_the_waiting_run(
    tmp_path: Path, server: dict[str, str]
) -> None:
    from prefect.flow_runs import resume_flow_run

    def form(run: dict) -> None:  # what the UI's Resume form sends, `who` left empty
        with temporary_settings(updates={PREFECT_API_URL: server["PREFECT_API_URL"]}):
            resume_flow_run(run["id"], run_input={"approve": True, "comment": "fine\nreally"})

    registry, run, parent, _ = answered(tmp_path / "p", server, "ui-me", form)
    assert registry.aliases() == {"production": 2, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["actor"]) == ("promote", f"prefect-ui:{parent['name']}")
    # a form's line break is kept as its escape: the answer counts, the trail stays one line
    assert event["evidence"] == {"comment": "fine\\nreally"}
    assert run["state"]["message"] == "answered: approve v2"


def test_reject_keeps_staging_and_a_second_answer_finds_no_run(
    tmp_path: Path, server: dict[str, str]
) -> None:
    project = tmp_path / "p"
    answer = with_cli(project, server, "reject", "2", "--comment", "worse on 7s")
    registry, run, parent, done = answered(project, server, "reject-me", answer)
    assert done.returncode == 0, done.stderr
    assert registry.aliases() == {"production": 1, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("reject", 2, 1)
    assert event["actor"] == f"user:{getpass.getuser()}"
    assert event["evidence"] == {"comment": "worse on 7s"}
    assert run["state"]["type"] == "COMPLETED" and "approval:rejected" in run["tags"]
    assert parent["state"]["message"] == (
        f"user:{getpass.getuser()} rejected v2 for production: kept as staging (worse on 7s)"
    )
    before = registry.alias_log()
    again = models(project, server, "approve", "2")  # the run is no longer waiting
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1, again.stderr
    assert "no paused flow run is waiting for approval of reject-me v2" in again.stderr
    assert registry.alias_log() == before


def test_an_answer_that_lands_after_another_is_refused_not_reported_resumed(
    tmp_path: Path, server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two people answer at once: both read the run as paused, one resume reaches the server
    first and the other is refused (ABORT: not paused), which Prefect's `resume_flow_run` passes
    over in silence. The late answer must fail, naming the run, not claim to have resumed it.
    (The reads bob made before alice's answer landed are replayed to him.)"""
    from prefect.client.orchestration import SyncPrefectClient

    from mnist_pipeline.pipeline import approval

    project = tmp_path / "p"

    def two_answers(run: dict) -> str:
        registry = Registry(project / "registry", "both-answer")
        with temporary_settings(updates={PREFECT_API_URL: server["PREFECT_API_URL"]}):
            read_while_paused = approval._paused_runs(version_tags(registry, 2)[0])  # bob's read
            first = models(project, server, "reject", "2", "--actor", "user:alice")
            assert first.returncode == 0, first.stderr
            monkeypatch.setattr(approval, "_paused_runs", lambda _: read_while_paused)
            stale = read_while_paused[0][0]
            monkeypatch.setattr(SyncPrefectClient, "read_flow_run", lambda *_: stale)
            late = approval.Answer(True, "looks fine", "user:bob")
            with pytest.raises(PipelineError) as refused:
                approval.resume_waiting(registry, 2, late)
        return str(refused.value)

    registry, run, parent, message = answered(project, server, "both-answer", two_answers)
    assert f"flow run {run['name']} ({run['id']}) was not resumed (the server said ABORT" in message
    assert "this answer was not taken" in message
    assert registry.aliases() == {"production": 1, "staging": 2}  # alice's reject stands
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["actor"]) == ("reject", "user:alice")
    assert "approval:rejected" in run["tags"]


def test_an_answer_to_a_run_whose_retraining_crashed_moves_nothing_and_says_so(
    tmp_path: Path, server: dict[str, str]
) -> None:
    """The waiting process killed (kill -9, out of memory) and its run marked Crashed, as the
    runner or the heartbeat automation does: its approval subflow stays paused, and answering
    it would resume nothing that acts; the answer is refused, naming the run and what to do."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    project = tmp_path / "p"
    registry, _ = proposed_project(project, "crashed")
    api, log = server["PREFECT_API_URL"], project / "flow.log"
    proc = waiting(project, server, 600)
    try:
        run = wait_for(
            lambda: paused_run(api, version_tags(registry, 2)[1]), 180, "pause", proc, log
        )
        parent = parent_run(api, run)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        c.set_flow_run_state(parent["id"], Crashed(message="process killed"), force=True)
    before = registry.alias_log()
    answer = models(project, server, "approve", "2")
    assert answer.returncode == 1 and answer.stderr.count("\n") == 1, answer.stderr
    assert f"for flow run {parent['name']}, which ended Crashed: no one would act" in answer.stderr
    assert "`mnist-pipeline models promote 2` moves production by hand" in answer.stderr
    assert registry.alias_log() == before and registry.aliases()["production"] == 1


def test_no_answer_in_time_keeps_staging(tmp_path: Path, server: dict[str, str]) -> None:
    project = tmp_path / "p"
    registry, _ = proposed_project(project, "time-me")
    proc = waiting(project, server, 1)
    try:
        assert proc.wait(timeout=180) == 0, (project / "flow.log").read_text()[-3000:]
    finally:
        stop(proc)
    assert "outcome: expired" in (project / "flow.log").read_text()
    assert registry.aliases() == {"production": 1, "staging": 2}
    event = registry.alias_log()["events"][-1]
    assert (event["action"], event["version"], event["previous"]) == ("expire", 2, 1)


def test_the_retraining_flow_pauses_and_keeps_staging_without_an_answer(
    tmp_path: Path, tiny_mirror, server: dict[str, str], receiver
) -> None:
    """...and its notification block is told when v1 starts waiting and when the wait expires."""
    from flows.artifacts import REPORT_KEY
    from flows.retrain import retrain
    from tests.flow_helpers import latest_artifact, make_workdir
    from tests.notify_helpers import webhook_block

    mirror, sha = tiny_mirror
    required = {"approval": "required", "approval_timeout_s": 1}
    workdir = make_workdir(tmp_path, str(mirror), sha, registry=required)
    url, received = receiver
    with temporary_settings(updates={PREFECT_API_URL: server["PREFECT_API_URL"]}):
        slug = webhook_block(url, "approvals")
        state = retrain(workdir=str(workdir), notify_block=slug, return_state=True)
        report = latest_artifact(REPORT_KEY)["data"]
    assert state.is_completed(), state.message
    assert (
        state.message
        == "no answer within 1 s to the proposal of v1 for production: v1 stays staging"
    )
    result = state.result()
    assert (result["version"], result["alias"], result["approval"]) == (1, "staging", "expired")
    assert report.startswith("# MNIST retraining: mnist-cnn v1")  # published before pausing
    registry = Registry(workdir / "registry", "mnist-cnn")
    assert registry.aliases() == {"staging": 1}
    register, expire = registry.alias_log()["events"]
    assert register["evidence"]["proposed"] == "production" and expire["action"] == "expire"
    api, run_id = server["PREFECT_API_URL"], str(state.state_details.flow_run_id)
    assert "approval:expired" in flow_run(api, run_id)["tags"]
    (waited,) = flow_runs(api, parent_flow_run_id={"any_": [run_id]})
    assert (waited["name"], waited["state"]["type"]) == ("approve-v1", "COMPLETED")
    assert waited["state"]["message"] == "no answer within 1 s"
    assert "approval:expired" in waited["tags"]
    assert not set(version_tags(registry, 1)) & set(waited["tags"])
    name = flow_run(api, run_id)["name"]
    assert [n["subject"] for n in received] == [
        f"mnist-retrain run {name}: mnist-cnn v1 awaits approval",
        f"mnist-retrain run {name}: approval of mnist-cnn v1 expired",
    ]
    assert "`mnist-pipeline models approve 1 --comment TEXT`" in received[0]["body"]
    assert "`mnist-pipeline models promote 1` promotes it" in received[1]["body"]


def test_on_a_temporary_server_nothing_waits_for_an_answer(tmp_path: Path, tiny_mirror) -> None:
    """`python -m flows.retrain` without PREFECT_API_URL runs on a temporary server that `models
    approve` cannot reach and that stops with the run: the version stays staging at once."""
    from tests.flow_helpers import make_workdir

    mirror, sha = tiny_mirror
    required = {"approval": "required", "approval_timeout_s": 600}
    workdir = make_workdir(tmp_path, str(mirror), sha, registry=required)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO_ROOT)}
    # a new temporary server with a new database: Prefect's 20 s is short on 2 busy cores
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    done = subprocess.run(
        [sys.executable, "-m", "flows.retrain"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # far less than approval_timeout_s: a run that paused would time out
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = "on a temporary Prefect server: nobody can approve v1 here: v1 stays staging"
    assert said in done.stdout + done.stderr
    registry = Registry(workdir / "registry", "mnist-cnn")
    assert registry.aliases() == {"staging": 1}
    register, expire = registry.alias_log()["events"]  # the trail says why nothing waited
    assert register["evidence"]["proposed"] == "production"
    assert (expire["action"], expire["alias"], expire["version"]) == ("expire", "production", 1)
    assert expire["reason"] == (
        "on a temporary Prefect server: nobody can approve v1 here: kept as staging"
    )


def slots_in_use(api: str, deployment_id: str) -> int:
    """The active slots of the deployment's concurrency limit."""
    response = httpx.get(f"{api}/deployments/{deployment_id}", timeout=30)
    response.raise_for_status()
    return response.json()["global_concurrency_limit"]["active_slots"]


def ended(api: str, run_id: str) -> bool:
    return flow_run(api, run_id)["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_a_deployment_run_keeps_its_concurrency_slot_while_it_waits(
    tmp_path: Path, tiny_mirror, server: dict[str, str]
) -> None:
    from prefect.deployments import run_deployment

    from tests.flow_helpers import make_workdir

    mirror, sha = tiny_mirror
    required = {"approval": "required", "approval_timeout_s": 600}
    schedule = {"deployment_name": "approval", "cron": "0 4 * * 1", "concurrency_limit": 1}
    workdir = make_workdir(tmp_path, str(mirror), sha, registry=required, schedule=schedule)
    api, log = server["PREFECT_API_URL"], tmp_path / "serve.log"
    polling = {**server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    args = [sys.executable, "-m", "flows.serve", "--workdir", str(workdir)]
    proc = start(args, polling, log, REPO_ROOT)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            started = wait_for(
                lambda: run_deployment("mnist-retrain/approval", timeout=0),
                120,
                "the served deployment",
                proc,
                log,
            )
        run_id = str(started.id)
        waiting_run = wait_for(
            lambda: paused_run(
                api, version_tags(Registry(workdir / "registry", "mnist-cnn"), 1)[1]
            ),
            300,
            "the pause",
            proc,
            log,
        )
        parent = parent_run(api, waiting_run)
        assert parent["id"] == run_id
        # The deployment run is not paused: it keeps its slot and the lease it renews.
        assert parent["state"]["type"] == "RUNNING"
        assert parent["state"]["state_details"]["deployment_concurrency_lease_id"]
        deployment_id = parent["deployment_id"]
        assert slots_in_use(api, deployment_id) == 1
        assert waiting_run["deployment_id"] is None
        done = models(workdir, server, "approve", "1", "--comment", "ok")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: ended(api, run_id), 180, "the deployment run to end", proc, log)
    finally:
        stop(proc)
    final = flow_run(api, run_id)
    assert final["state"]["type"] == "COMPLETED", final["state"]["message"]
    assert final["state"]["message"].startswith("user:")  # the CLI's approver
    assert "approval:approved" in final["tags"]
    assert Registry(workdir / "registry", "mnist-cnn").aliases()["production"] == 1
    assert slots_in_use(api, deployment_id) == 0  # given back when the run ended


def test_a_deployment_run_cancelled_while_it_waits_expires_the_proposal_and_says_so(
    tmp_path: Path, tiny_mirror, server: dict[str, str], receiver
) -> None:
    """Cancelled from the UI while v1 waits: the run ends Cancelled, the audit trail closes
    the proposal (an "expire" naming the cancellation) and the notification block is told."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    from tests.flow_helpers import make_workdir
    from tests.notify_helpers import webhook_block

    mirror, sha = tiny_mirror
    required = {"approval": "required", "approval_timeout_s": 600}
    schedule = {"deployment_name": "cancel-me", "cron": "0 4 * * 1"}
    workdir = make_workdir(tmp_path, str(mirror), sha, registry=required, schedule=schedule)
    api, log = server["PREFECT_API_URL"], tmp_path / "serve.log"
    url, received = receiver
    polling = {**server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    args = [sys.executable, "-m", "flows.serve", "--workdir", str(workdir)]
    proc = start(args, polling, log, REPO_ROOT)
    registry = Registry(workdir / "registry", "mnist-cnn")
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            slug = webhook_block(url, "cancelled")
            started = wait_for(
                lambda: run_deployment(
                    "mnist-retrain/cancel-me", parameters={"notify_block": slug}, timeout=0
                ),
                120,
                "the served deployment",
                proc,
                log,
            )
            run_id = str(started.id)
            wait_for(
                lambda: paused_run(api, version_tags(registry, 1)[1]), 300, "the pause", proc, log
            )
            with get_client(sync_client=True) as c:
                c.set_flow_run_state(started.id, Cancelling(message="cancelled in the UI"))
        wait_for(lambda: ended(api, run_id), 180, "the cancelled run to end", proc, log)
        name = flow_run(api, run_id)["name"]
        subject = f"mnist-retrain run {name} cancelled"
        wait_for(lambda: subject in [n["subject"] for n in received], 60, "the notice", proc, log)
    finally:
        stop(proc)
    assert flow_run(api, run_id)["state"]["type"] == "CANCELLED"
    assert registry.aliases() == {"staging": 1}
    register, expire = registry.alias_log()["events"]
    assert register["evidence"]["proposed"] == "production"
    assert (expire["action"], expire["version"]) == ("expire", 1), expire
    assert "stopped (cancelled or terminated) while v1 waited for approval" in expire["reason"]
    subjects = [n["subject"] for n in received]
    assert subjects == [f"mnist-retrain run {name}: mnist-cnn v1 awaits approval", subject]
