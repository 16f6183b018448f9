"""prefect.yaml: the deployment for workers on other machines, checked and deployed for real.

The slow test serves the commit under test (this checkout's HEAD: commit first) with
`git daemon` on 127.0.0.1, runs `prefect deploy --all` from a clone of it against a real Prefect
server with basic auth on, and starts a process worker in a different, empty folder: the run
must clone the deployed commit into the worker's folder and write everything there.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.events import DeploymentEventTrigger
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from flows import deploy_spec
from flows.deploy_source import SourceError, check_pushed, check_url, resolve_source, source
from flows.serve import deployment_options, sweep_options, trial_options, trials_at_once
from mnist_pipeline.core.params import load_params
from mnist_pipeline.registry import Registry
from tests.conftest import REPO_ROOT, unavailable
from tests.process_helpers import git_daemon, prefect_server, start, stop, wait_for

BIN = Path(sys.executable).parent
AUTH = "mnist:test-secret"
CHECKOUT = "mnist_pipeline.deployment.checkout.git_checkout"


def spec() -> dict:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_prefect_yaml_deploys_what_serve_deploys() -> None:
    """The same name, schedule, trigger, limits and parameters as flows/serve.py builds from
    params.yaml, with the clone (".") as the project folder."""
    deployment = deployments()["weekly"]
    options = deployment_options(load_params(REPO_ROOT / "params.yaml"), ".", "params.yaml")
    assert deployment["name"] == options["name"]
    assert deployment["entrypoint"] == "flows/retrain.py:retrain"
    assert [(s["cron"], s["timezone"]) for s in deployment["schedules"]] == [
        (c.cron, c.timezone) for c in options["schedules"]
    ]
    assert deployment["parameters"] == options["parameters"]
    limit = options["concurrency_limit"]
    assert deployment["concurrency_limit"] == {
        "limit": limit.limit,
        "collision_strategy": limit.collision_strategy.value,
    }
    assert deployment["description"] == options["description"]
    assert deployment["tags"] == options["tags"]
    triggers = [DeploymentEventTrigger(**t) for t in deployment["triggers"]]
    assert [t.model_dump() for t in triggers] == [t.model_dump() for t in options["triggers"]]
    # what the build step checks, the same way
    assert deploy_spec.check(REPO_ROOT / "prefect.yaml", REPO_ROOT) == []


def deployments() -> dict[str, dict]:
    return {d["name"]: d for d in spec()["deployments"]}


def test_prefect_yaml_deploys_the_sweep_as_serve_does() -> None:
    """The sweep and its trials: the same options as flows/serve.py builds, on the same pool."""
    found = deployments()
    assert sorted(found) == ["sweep", "trial", "weekly"]
    built = {"trial": trial_options(".", "params.yaml"), "sweep": sweep_options(".", "params.yaml")}
    for name, options in built.items():
        deployment = found[name]
        assert deployment["name"] == options["name"]
        for key in ("parameters", "description", "tags"):
            assert deployment[key] == options[key], (name, key)
        assert deployment["work_pool"] == found["weekly"]["work_pool"]
        assert "schedules" not in deployment and "triggers" not in deployment
    assert found["trial"]["entrypoint"] == "flows/retrain.py:retrain"
    assert found["sweep"]["entrypoint"] == "flows/sweep.py:sweep"


def test_one_host_runs_as_many_trials_at_once_as_its_cores_hold() -> None:
    assert [trials_at_once(2, cores) for cores in (1, 2, 3, 8)] == [1, 1, 1, 4]
    assert [trials_at_once(1, cores) for cores in (1, 2, 8)] == [1, 2, 8]
    assert "concurrency_limit" not in trial_options(".", "params.yaml")  # workers bound theirs


def test_source_refuses_what_a_worker_cannot_clone(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MNIST_PIPELINE_REPO", raising=False)
    with pytest.raises(SystemExit) as exited:
        source(str(REPO_ROOT))  # the build step: one line, exit status 1
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("prefect deploy: MNIST_PIPELINE_REPO is not set: ")
    assert error.count("\n") == 1
    for local in (
        "/srv/git/mnist-pipeline.git",
        "file:///srv/git/mnist-pipeline.git",
        "./repos:old/mnist-pipeline.git",  # a slash before the colon: git reads a local path
        "mnist-pipeline.git",
        "C:/repos/mnist-pipeline.git",  # a drive letter: git on Windows reads a local path
    ):
        with pytest.raises(SourceError, match="cannot clone a local path"):
            check_url(local)
    for secret in (
        "https://ci:s3cret-token@git.example.com/mnist-pipeline.git",
        "https://s3cret-token@git.example.com/mnist-pipeline.git",
        "ssh://git:s3cret-token@git.example.com/mnist-pipeline.git",
    ):
        with pytest.raises(SourceError, match="holds a password or token") as refused:
            check_url(secret)
        assert "s3cret" not in str(refused.value)
    assert check_url("git@git.example.com:ml/mnist-pipeline.git")
    assert check_url("git.example.com:ml/mnist-pipeline.git")  # scp-like without a user
    assert check_url("gitserver:mnist-pipeline.git")  # a host alias from ~/.ssh/config
    assert check_url("ssh://git@git.example.com/ml/mnist-pipeline.git")
    bare = tmp_path / "remote.git"
    git("init", "--bare", "-q", str(bare), cwd=tmp_path)
    head = git("rev-parse", "HEAD", cwd=REPO_ROOT)
    with pytest.raises(SourceError, match=f"commit {head} is not on"):
        check_pushed(head, str(bare), REPO_ROOT)  # an empty repository
    git("push", "-q", str(bare), f"{head}:refs/heads/main", cwd=REPO_ROOT)
    check_pushed(head, str(bare), REPO_ROOT)
    with pytest.raises(SourceError, match=f"cannot read repository {tmp_path / 'missing.git'}"):
        check_pushed(head, str(tmp_path / "missing.git"), REPO_ROOT)
    monkeypatch.setenv("MNIST_PIPELINE_REPO", "https://git.example.com/mnist-pipeline.git")
    with pytest.raises(SourceError, match="not a git checkout"):
        resolve_source(tmp_path)  # e.g. an unpacked archive


def test_deploy_notes_stores_that_each_worker_keeps_in_its_clone(tmp_path: Path) -> None:
    """With prefect.yaml every worker runs in its own clone: a registry or inbox in the clone is
    one per worker, which a deploy for workers on several machines should hear of (a note,
    not a refusal: one worker, or one host, is a setup of its own)."""
    from flows.deploy_source import per_worker_stores
    from mnist_pipeline.core.params import parse_params

    default = per_worker_stores(parse_params({}))
    assert default == (
        "note: registry.root 'registry' and the inbox are folders of the worker's clone, one "
        "per worker: workers on several machines share no versions or labelled digits (set "
        "registry.root and inbox.shared to s3://BUCKET/PREFIX, docs/scale-out.md)"
    )
    shared = {"registry": {"root": "s3://team/models"}, "inbox": {"shared": "s3://team/inbox"}}
    assert per_worker_stores(parse_params(shared)) is None
    mounted = {"registry": {"root": "/mnt/team/registry"}, "inbox": {"shared": "/mnt/team/in"}}
    assert per_worker_stores(parse_params(mounted)) is None  # the same path on every worker
    as_url = {
        "registry": {"root": "file:///mnt/team/registry"},
        "inbox": {"shared": "s3://team/in"},
    }
    assert per_worker_stores(parse_params(as_url)) is None
    inbox_only = per_worker_stores(parse_params({"registry": {"root": "s3://team/models"}}))
    assert inbox_only is not None and inbox_only.startswith("note: the inbox is a folder of")


def test_deploy_refuses_a_prefect_yaml_that_params_yaml_contradicts(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """`prefect deploy --all` reads only prefect.yaml: a schedule or model name edited in
    params.yaml alone (or prefect.yaml alone) is refused by the build step, before any git."""
    monkeypatch.setenv("MNIST_PIPELINE_REPO", "https://git.example.com/mnist-pipeline.git")
    shutil.copy(REPO_ROOT / "prefect.yaml", tmp_path / "prefect.yaml")
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    assert deploy_spec.check(tmp_path / "prefect.yaml", tmp_path) == []
    edited = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    edited["schedule"] |= {"cron": "0 4 * * 2", "timezone": "Europe/Berlin"}
    edited["registry"]["model_name"] = "digits"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited))
    with pytest.raises(SystemExit) as exited:
        source(str(tmp_path))
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith(
        f"prefect deploy: {tmp_path / 'prefect.yaml'}'s retraining deployment does not say"
    )
    assert (
        "schedules [('0 3 * * 1', 'UTC')] in prefect.yaml, [('0 4 * * 2', 'Europe/Berlin')]"
        in error
    )
    assert "its triggers are not those of params.yaml" in error and error.count("\n") == 1
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    weekly = deployments()["weekly"]
    same = {  # written otherwise, meaning what params.yaml says: accepted
        "concurrency_limit": 1,
        "parameters": {"workdir": "."},  # the flow's defaults for the rest
        "triggers": weekly["triggers"][::-1],
        "schedules": [{"cron": "0 3 * * 1"}],  # UTC, Prefect's default
    }
    for key, value in same.items():
        edited_spec = {**spec, "deployments": [{**weekly, key: value}]}
        assert deploy_spec.differences(edited_spec, REPO_ROOT) == [], key
    unlimited = {k: v for k, v in weekly.items() if k != "concurrency_limit"}
    assert deploy_spec.differences({"deployments": [unlimited]}, REPO_ROOT) == [
        "concurrency_limit None in prefect.yaml, "
        "{'limit': 1, 'collision_strategy': 'ENQUEUE'} from params.yaml"
    ]
    (problem,) = deploy_spec.differences(
        {"deployments": [{**weekly, "schedules": ["0 3 * * 1"]}]}, REPO_ROOT
    )
    assert problem.startswith("its schedules, concurrency_limit or triggers are not Prefect's: ")
    for schedules in ([{"interval": 3600}], [{"cron": "0 3 * * 1"}, {"rrule": "FREQ=DAILY"}]):
        (problem,) = deploy_spec.differences(
            {"deployments": [{**weekly, "schedules": schedules}]}, REPO_ROOT
        )  # Prefect's, but not the params file's: named as such, not as a KeyError 'cron'
        assert problem.startswith(f"schedule {schedules[-1]!r} is not a cron schedule: "), problem
    for schedules in (5, True, "0 3 * * 1"):  # no list at all
        (problem,) = deploy_spec.differences(
            {"deployments": [{**weekly, "schedules": schedules}]}, REPO_ROOT
        )
        assert problem.startswith("its schedules, concurrency_limit or triggers are not Prefect"), (
            problem
        )
    spec["deployments"] = [d for d in spec["deployments"] if d["name"] != "weekly"]
    assert deploy_spec.differences(spec, REPO_ROOT) == [
        "prefect.yaml has 0 retraining deployments (flows/retrain.py:retrain), not one"
    ]
    # the file `prefect deploy` reads: `--prefect-file` when given, else ./prefect.yaml
    assert deploy_spec.deploying_file(tmp_path, ["prefect", "deploy", "--all"]) == (
        tmp_path / "prefect.yaml"
    )
    for named in (["--prefect-file", "o.yaml"], ["--prefect-file=o.yaml"]):
        assert deploy_spec.deploying_file(tmp_path, ["prefect", "deploy", *named]) == Path("o.yaml")
    (tmp_path / "prefect.yaml").unlink()  # a build step run outside `prefect deploy`
    assert deploy_spec.check(tmp_path / "prefect.yaml", tmp_path) == []


def smoke_params(path: Path, mirror: Path) -> str:
    """A params file for a short run on real MNIST (1 thread, a few batches)."""
    params = {
        "data": {"mirrors": [str(mirror)]},
        "train": {"epochs": 1, "max_batches_per_epoch": 30, "val_size": 1000, "num_threads": 1},
        "evaluate": {"min_accuracy": 0.0, "robustness_per_transform": 0},
    }
    path.write_text(yaml.safe_dump(params))
    return str(path)


def read_deployment(env: dict[str, str], name: str, auth: bool = True) -> httpx.Response:
    return httpx.get(
        f"{env['PREFECT_API_URL']}/deployments/name/{name}",
        auth=tuple(AUTH.split(":", 1)) if auth else None,
        timeout=30,
    )


def final_state(flow_run_id, worker: subprocess.Popen, log: Path):
    def done():
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
        return state if state is not None and state.is_final() else None

    return wait_for(done, 480, "the flow run to finish", worker, log, every=2)


@pytest.mark.e2e
def test_deployed_commit_runs_in_the_workers_own_folder(tmp_path: Path, real_mirror: Path) -> None:
    if subprocess.run(["git", "daemon", "-h"], capture_output=True).returncode not in (0, 129):
        unavailable("git daemon is not installed")
    head = git("rev-parse", "HEAD", cwd=REPO_ROOT)
    served, deployer, worker_dir = tmp_path / "served", tmp_path / "deployer", tmp_path / "worker"
    for folder in (served, worker_dir, tmp_path / "prefect"):
        folder.mkdir()
    git("init", "--bare", "-q", "-b", "main", str(served / "mnist-pipeline.git"), cwd=tmp_path)
    git("push", "-q", str(served / "mnist-pipeline.git"), f"{head}:refs/heads/main", cwd=REPO_ROOT)
    secrets = {"PREFECT_SERVER_API_AUTH_STRING": AUTH, "PREFECT_API_AUTH_STRING": AUTH}
    with (
        git_daemon(served, tmp_path / "git-daemon.log") as git_url,
        prefect_server(tmp_path / "prefect", **secrets) as server_env,
        temporary_settings(
            updates={PREFECT_API_URL: server_env["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: AUTH}
        ),
    ):
        repository = f"{git_url}/mnist-pipeline.git"
        # No PYTHONPATH to this checkout: the deployer and the worker import their clones' code.
        env = {k: v for k, v in server_env.items() if k not in ("PYTHONPATH",)}
        git("clone", "-q", repository, str(deployer), cwd=tmp_path)
        prefect = str(BIN / "prefect")
        deploy = [prefect, "--no-prompt", "deploy", "--all"]

        def run(args: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                args,
                env={**env, **extra},
                cwd=deployer,
                capture_output=True,
                text=True,
                timeout=300,
            )

        done = run([prefect, "work-pool", "create", "mnist", "--type", "process"])
        assert done.returncode == 0, done.stdout + done.stderr
        # A repository workers could not clone is refused at deploy time, naming it.
        missing = f"{git_url}/missing.git"
        refused = run(deploy, MNIST_PIPELINE_REPO=missing)
        assert read_deployment(env, "mnist-retrain/weekly").status_code == 404
        # Another deployments file (`--prefect-file`) is checked against params.yaml too.
        other = yaml.safe_load((deployer / "prefect.yaml").read_text())
        for entry in other["deployments"]:
            if entry["name"] == "weekly":
                entry["schedules"][0]["cron"] = "0 4 * * 2"
        (deployer / "other.yaml").write_text(yaml.safe_dump(other))
        mismatched = run([*deploy, "--prefect-file", "other.yaml"], MNIST_PIPELINE_REPO=repository)
        assert read_deployment(env, "mnist-retrain/weekly").status_code == 404
        done = run(deploy, MNIST_PIPELINE_REPO=repository)
        assert done.returncode == 0, done.stdout + done.stderr
        found = read_deployment(env, "mnist-retrain/weekly")
        assert read_deployment(env, "mnist-retrain/weekly", auth=False).status_code == 401
        log = tmp_path / "worker.log"
        worker_env = {**env, "MNIST_MIRROR": str(real_mirror), "PREFECT_WORKER_QUERY_SECONDS": "2"}
        worker = start([prefect, "worker", "start", "--pool", "mnist"], worker_env, log, worker_dir)
        try:
            # A run parameter (the deployment keeps params.yaml): a short run, 1 torch thread.
            params_file = smoke_params(tmp_path / "smoke.yaml", real_mirror)
            parameters = {"params_file": params_file}
            flow_run = run_deployment("mnist-retrain/weekly", parameters=parameters, timeout=0)
            state = final_state(flow_run.id, worker, log)
            # A second commit deployed: the worker's clone is checked out at it, in place.
            (deployer / "RELEASE").write_text("second\n")
            git("add", "RELEASE", cwd=deployer)
            git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm",
                "second", cwd=deployer)  # fmt: skip
            git("push", "-q", str(served / "mnist-pipeline.git"), "HEAD:main", cwd=deployer)
            second = git("rev-parse", "HEAD", cwd=deployer)
            redeployed = run(deploy, MNIST_PIPELINE_REPO=repository)
            assert redeployed.returncode == 0, redeployed.stdout + redeployed.stderr
            found = read_deployment(env, "mnist-retrain/weekly")
            again = run_deployment("mnist-retrain/weekly", parameters=parameters, timeout=0)
            again_state = final_state(again.id, worker, log)
            # A deployment whose repository cannot be cloned (any more): the run ends Failed.
            deployment = found.json()
            with get_client(sync_client=True) as client:
                bad_id = client.create_deployment(
                    flow_id=deployment["flow_id"],
                    name="unclonable",
                    entrypoint=deployment["entrypoint"],
                    work_pool_name="mnist",
                    job_variables={"working_dir": "."},
                    pull_steps=[
                        {
                            CHECKOUT: {
                                "repository": missing,
                                "commit_sha": head,
                                "clone_directory_name": "unclonable",
                            }
                        }
                    ],
                )
            bad_run = run_deployment(bad_id, parameters=parameters, timeout=0)
            bad_state = final_state(bad_run.id, worker, log)
            # The pull step fails the run before its process exits; the worker relays that
            # process's output to its own log a moment later.
            wait_for(
                lambda: f"cannot clone {missing}: " in log.read_text(),
                60,
                "the worker's log to say why the pull step failed",
                worker,
                log,
            )
            with get_client(sync_client=True) as client:
                bad_logs = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[bad_run.id]))
                )
        finally:
            stop(worker)
    output = log.read_text()
    assert state.is_completed(), output[-4000:]
    assert again_state.is_completed(), output[-4000:]
    assert again_state.message == "up to date: v1 has the same inputs", again_state.message
    # The deployment holds the repository URL and the commit, no path of the deploying machine.
    deployment = found.json()
    assert deployment["pull_steps"] == [
        {
            CHECKOUT: {
                "id": "clone",
                "repository": repository,
                "commit_sha": second,
                "clone_directory_name": "mnist-pipeline",
            }
        }
    ]
    assert deployment["job_variables"] == {"working_dir": "."}
    assert deployment["version"] == second  # deployed again
    assert deployment["parameters"]["workdir"] == "."
    text = json.dumps(deployment)
    for path in (deployer, REPO_ROOT, tmp_path):
        assert str(path) not in text, path
    # The worker cloned the deployed commit into its own folder and the runs wrote there; the
    # second deployment's run checked its commit out in the same clone.
    clone = worker_dir / "mnist-pipeline"
    assert git("rev-parse", "HEAD", cwd=clone) == second != head
    # ...and its runs ran the clone's code, not the worker's installed package
    assert output.count(f"; code: {clone / 'mnist_pipeline'}") == 2, output[-4000:]
    assert (clone / "RELEASE").read_text() == "second\n"
    run_folders = sorted(p.name for p in (clone / "runs").iterdir())
    assert len(run_folders) == 2, run_folders
    assert any(name.startswith(flow_run.name) for name in run_folders), run_folders
    cards = Registry(clone / "registry", "mnist-cnn").versions()
    assert [(c["version"], c["origin"]["flow_run_id"]) for c in cards] == [(1, str(flow_run.id))]
    assert (clone / "data" / "mnist").is_dir()
    assert not {"runs", "registry"} & {p.name for p in deployer.iterdir()}
    assert list((deployer / "data").iterdir()) == [deployer / "data" / ".gitignore"]
    assert mismatched.returncode != 0
    assert (
        "prefect deploy: other.yaml's retraining deployment does not say what the params file "
        "does: schedules [('0 4 * * 2', 'UTC')] in other.yaml, [('0 3 * * 1', 'UTC')] from "
        "params.yaml" in mismatched.stderr
    ), mismatched.stdout + mismatched.stderr
    assert refused.returncode != 0
    assert f"prefect deploy: cannot read repository {missing}: " in refused.stderr
    assert "Traceback" not in refused.stderr
    assert bad_state.is_failed(), bad_state
    assert bad_state.message.startswith(f"cannot clone {missing}: "), bad_state.message
    # Why is in the worker's log and, told by the pull step itself (Prefect 3.8.8 would say it
    # only to the worker and end the run Crashed), in the run's logs and its Failed state.
    assert f"cannot clone {missing}: " in output
    errors = [entry.message for entry in bad_logs if entry.level == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"cannot clone {missing}: "), bad_logs
