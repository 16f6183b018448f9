"""Several hosts that share nothing but a network, on one machine (network namespaces).

Hosts: **db** (Debian's PostgreSQL on its own loopback, `prefect server start` on it with basic
auth), **s3** (moto's S3 server), **git** (`git daemon` serving this commit plus a params file for
these hosts), **mirror** (the MNIST files over HTTP, standing in for the public mirrors), two
**worker** hosts (`prefect worker start`, each in its own empty folder), **serve** (`mnist-pipeline
serve` following production on S3) and **client** (deploys prefect.yaml, starts runs, promotes,
checks). Each host has its own folder; the registry lives only in the bucket. Three runs with
different params go to the two workers; every version's card must state the accuracy its ONNX file
gives on MNIST test, and a promotion must reach the serving host; six labelled digits added on the
client reach both workers' ingest through the shared inbox in the bucket; a digit posted to the
serving host's /feedback waits in the bucket's review queue until a reviewer on the client accepts
it, and every later run trains on it (tests/multi_host_review.py). Then 8 registrations and
8 promotions at once from the two worker hosts (tests/multi_host_races.py), and two faults
(tests/multi_host_faults.py): a worker host loses every process while its run trains (the other run
completes; the host comes back with a new worker; the killed run ends Crashed through the heartbeat
automation, which notifies once), and, while the server waits out that run's heartbeats, the s3
host becomes unreachable before a registration (the run fails naming the endpoint, its hook
notifies once, the same run registers once the store is back). Then the Prefect server's side
(tests/multi_host_prefect.py): PostgreSQL on the db host restarts while a run trains (the run
completes, the server still lists every earlier run), and a run with that run's params
completes up to date, adding no version (with $MULTI_HOST_FIGURES naming a JSON file, three do,
and their trigger-to-end times go there, for benchmarks/multi_host_noop.py). Last, a sweep
started on the client (flows/sweep.py): its trials run on both workers and the best by validation
accuracy is retrained and registered by one of them. The bucket then holds versions 1-7 that
verify clean, with nothing left by any fault.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.inbox import store as inbox_store
from tests.conftest import REPO_ROOT
from tests.example_helpers import draw_digit
from tests.multi_host_faults import (
    CRASH_SUBJECT,
    HEARTBEATS_S,
    Site,
    ended_crashed,
    notifications,
    store_goes_down,
    told,
    worker_host_dies,
)
from tests.multi_host_helpers import (
    base_env,
    client,
    git,
    launch,
    on_host,
    publish_repository,
    shared_inbox,
    start_postgres,
)
from tests.multi_host_prefect import database_restarts, noop_runs, sweep_on_workers
from tests.multi_host_races import race
from tests.multi_host_review import FEEDBACK_LABEL, FEEDBACK_TOKEN, reviewed_elsewhere
from tests.netns_helpers import hosts
from tests.process_helpers import start, stop, wait_for
from tests.s3_helpers import CREDENTIALS
from tests.test_scale_out import worker_of

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
BIN = Path(sys.executable).parent
AUTH = "mnist:multi-host-secret"
ROLES = ["db", "s3", "git", "mirror", "w1", "w2", "serve", "client"]
EPOCHS = (1, 2, 3)
BUCKET = "mnist-models"
CLI = [sys.executable, "-m", "mnist_pipeline"]
DIGITS_ADDED = 6


def test_hosts_sharing_only_a_network_train_register_and_serve(
    tmp_path: Path, real_mirror: Path
) -> None:
    if shutil.which("git") is None or not (BIN / "moto_server").exists():
        pytest.fail("git and moto_server are needed (the dev extra installs moto_server)")
    with hosts(ROLES) as net, ExitStack() as procs:
        folders = {role: tmp_path / role for role in ROLES}
        for folder in folders.values():
            folder.mkdir()
        db, s3, repo, mirror, serve, me = (
            net[r] for r in ("db", "s3", "git", "mirror", "serve", "client")
        )
        api = f"http://{db.address}:4200/api"
        endpoint = f"http://{s3.address}:5000"
        mirror_url = f"http://{mirror.address}:8000"
        registry = f"s3://{BUCKET}/registry"
        prefect_env = {"PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH}
        aws_env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}

        # the hosts' servers
        postgres = start_postgres(procs, db)
        server_env = {
            **base_env(folders["db"] / "home"),
            "PREFECT_SERVER_API_AUTH_STRING": AUTH,
            "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url,
            "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true",  # the database restart shows in its log
        }
        prefect = str(BIN / "prefect")
        launch(
            procs,
            db,
            [prefect, "server", "start", "--host", db.address, "--port", "4200"],
            server_env,
            folders["db"] / "server.log",
            folders["db"],
            f"{api}/health",
            me,
        )
        launch(
            procs,
            s3,
            [str(BIN / "moto_server"), "-H", s3.address, "-p", "5000"],
            base_env(folders["s3"] / "home"),
            folders["s3"] / "moto.log",
            folders["s3"],
            f"{endpoint}/",
            me,
        )
        launch(
            procs,
            mirror,
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                mirror.address,
                "--directory",
                str(real_mirror),
                "8000",
            ],
            base_env(folders["mirror"] / "home"),
            folders["mirror"] / "http.log",
            folders["mirror"],
            f"{mirror_url}/",
            me,
        )
        served = publish_repository(folders["git"], mirror_url, registry)
        daemon = start(
            repo.run(
                [
                    "git",
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    f"--listen={repo.address}",
                    "--port=9418",
                    f"--base-path={served}",
                    str(served),
                ]
            ),
            dict(os.environ),
            folders["git"] / "daemon.log",
            served,
        )
        procs.callback(stop, daemon)
        repository = f"git://{repo.address}/mnist-pipeline.git"
        client_env = {**base_env(folders["client"] / "home"), **prefect_env, **aws_env}
        probe = me.run(["git", "ls-remote", repository])
        wait_for(
            lambda: subprocess.run(probe, capture_output=True).returncode == 0,
            30,
            "git daemon",
            daemon,
            folders["git"] / "daemon.log",
        )

        # the client: a bucket, the pool, prefect.yaml deployed from its own clone
        client(me, client_env, "bucket", BUCKET)
        deployer = folders["client"] / "deployer"
        git("clone", "-q", str(served / "mnist-pipeline.git"), str(deployer), cwd=tmp_path)
        for args in (
            [prefect, "work-pool", "create", "mnist", "--type", "process"],
            [prefect, "--no-prompt", "deploy", "--all"],
        ):
            on_host(me, args, {**client_env, "MNIST_PIPELINE_REPO": repository}, deployer)

        # two workers, each in its own empty folder
        worker_env = {
            **prefect_env,
            **aws_env,
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEATS_S),
            # while its database is down the server answers 500: retried, as for 502 and 503
            "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
        }
        logs: list[Path] = []

        def start_worker(name: str, log: Path) -> None:
            command = [prefect, "worker", "start", "--pool", "mnist", "--limit", "1"]
            env = {**base_env(folders[name] / "home"), **worker_env}
            worker = start(net[name].run([*command, "--name", name]), env, log, folders[name])
            procs.callback(stop, worker)
            logs.append(log)

        for name in ("w1", "w2"):
            start_worker(name, folders[name] / "worker.log")

        # labelled digits added on the client reach the workers' ingest through the bucket
        client_params = {
            "registry": {"root": registry},
            "inbox": {"shared": shared_inbox(registry)},
        }
        (folders["client"] / "params.yaml").write_text(yaml.safe_dump(client_params))
        added = {}
        add_env = {**base_env(folders["client"] / "home"), **aws_env}
        for label, seeds in ((1, range(0, 3)), (7, range(3, DIGITS_ADDED))):
            images = [draw_digit(folders["client"] / f"digit-{s}.png", s) for s in seeds]
            added |= {hashlib.sha256(i.read_bytes()).hexdigest(): label for i in images}
            data_add = [*CLI, "--root", str(folders["client"]), "data", "add", "--label"]
            done = subprocess.run(
                me.run([*data_add, str(label), *map(str, images)]),
                env=add_env,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0 and "shared: 3 image(s) in s3://" in done.stderr, done

        runs = [json.dumps({"params_file": "hosts.yaml", "epochs": e}) for e in EPOCHS]
        ids = client(me, client_env, "run", "mnist-retrain/weekly", *runs)
        finals = client(me, client_env, "wait", *ids)
        worker_logs = "".join(log.read_text() for log in logs)
        assert [f["state"] for f in finals] == ["Completed"] * 3, (finals, worker_logs[-4000:])
        assert {worker_of(logs, i) for i in ids} == {"w1", "w2"}  # both workers took runs

        # the registry is in the bucket, and only there
        seen = client(me, client_env, "check", registry, mirror_url, str(folders["client"]))
        assert seen["problems"] == []
        versions = seen["versions"]
        assert [v["version"] for v in versions] == [1, 2, 3]
        # each version made by the run it names, with that run's epochs
        made = {v["flow_run_id"]: v["epochs"] for v in versions}
        assert made == dict(zip(ids, EPOCHS, strict=True))
        for version in versions:
            assert version["onnx_accuracy"] == version["card_accuracy"], version
        for name in ("w1", "w2"):
            clone = folders[name] / "mnist-pipeline"
            assert (clone / "hosts.yaml").is_file() and any((clone / "runs").iterdir())
            assert not (clone / "registry").exists()
            inbox = {e.sha256: e.label for e in inbox_store.entries(clone / "data" / "extra")}
            assert inbox == added, name  # synced from the bucket before ingest
            reports = list((clone / "runs").glob("*/reports/ingest.json"))
            assert reports, name  # one per run this worker took
            for ingested in reports:
                counts = json.loads(ingested.read_text())["counts"]
                assert sum(counts.values()) == DIGITS_ADDED, (ingested, counts)
        assert not (deployer / "runs").exists() and not (deployer / "registry").exists()

        # the serving host follows production in the bucket
        serve_root = folders["serve"]
        serve_params = {
            "registry": {"root": registry},
            "inbox": {"shared": shared_inbox(registry)},  # where /feedback's claims wait
            "serve": {"reload_interval_s": 0.5},
        }
        (serve_root / "params.yaml").write_text(yaml.safe_dump(serve_params))
        serve_env = {
            **base_env(serve_root / "home"),
            **aws_env,
            "PYTHONPATH": str(REPO_ROOT),
            "MNIST_FEEDBACK_TOKENS": f"kiosk:{FEEDBACK_TOKEN}",
        }
        url = f"http://{serve.address}:8000"
        launch(
            procs,
            serve,
            [
                sys.executable,
                "-m",
                "mnist_pipeline",
                "--root",
                str(serve_root),
                "serve",
                "--host",
                serve.address,
                "--port",
                "8000",
            ],
            serve_env,
            serve_root / "serve.log",
            REPO_ROOT,
            f"{url}/readyz",
            me,
        )
        production = seen["aliases"]["production"]
        served_now = client(me, client_env, "get", f"{url}/model")["body"]["model"]["version"]
        assert served_now == production
        other = next(v["version"] for v in versions if v["version"] != production)
        promote = [
            *CLI,
            "--root",
            str(folders["client"]),
            "models",
            "promote",
            str(other),
            "--comment",
            "multi-host",
        ]
        on_host(me, promote, client_env)
        deadline = time.monotonic() + 30
        while client(me, client_env, "get", f"{url}/model")["body"]["model"]["version"] != other:
            assert time.monotonic() < deadline, (serve_root / "serve.log").read_text()[-3000:]
            time.sleep(0.5)

        # a digit sent to the serving host is reviewed on the client; later runs train on it
        added[reviewed_elsewhere(me, client_env, url, folders["client"])] = FEEDBACK_LABEL

        # races: 8 registrations, then 8 promotions, at once from both worker hosts
        race(net, folders, aws_env)

        # faults: a worker host dies mid-run; the store goes away before a registration
        site = Site(net, client_env, logs)
        slug, block_id, received = notifications(procs, site, folders["client"])
        crash = worker_host_dies(site, block_id)
        victim = crash["victim"]
        start_worker(victim, folders[victim] / "worker-again.log")  # the host is back
        # while the server waits out the killed run's heartbeats, the store goes down
        store = store_goes_down(site, endpoint, slug)
        ended_crashed(site, crash, received)
        earlier = set(client(me, client_env, "runs"))
        assert {*ids, crash["crashed"], crash["completed"], *store.values()} <= earlier
        # the database restarts mid-run; then runs whose inputs are registered train nothing
        restarted = database_restarts(site, postgres, epochs=25)
        noop_runs(site, epochs=25, version=6)
        assert earlier <= set(client(me, client_env, "runs"))  # the server lost no run

        swept = sweep_on_workers(site, deployer, version=7)
        seen = client(me, client_env, "check", registry, mirror_url, str(folders["client"]))
        assert seen["problems"] == []
        assert [v["version"] for v in seen["versions"]] == [1, 2, 3, 4, 5, 6, 7]  # no-ops: none
        later = [v["flow_run_id"] for v in seen["versions"][3:]]
        assert later == [crash["completed"], store["completed"], restarted, swept["run"]]
        assert seen["versions"][6]["learning_rate"] == swept["learning_rate"]
        verify = [*promote[:6], "verify"]
        done = subprocess.run(
            me.run(verify),
            env=client_env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0 and "7 version(s) intact" in done.stderr, done.stderr
        assert "unreferenced" not in done.stderr, done.stderr  # no half-registered objects
        notes = told(received)
        crashed = [n for n in notes if n["subject"] == CRASH_SUBJECT]
        failed = [n for n in notes if n["subject"].endswith(" failed")]
        killed = [n for n in crashed if crash["crashed"] in n["body"]]
        assert len(killed) == 1, notes
        # Prefect may also time out the heartbeats of a run that finished, when one of them
        # reached the server after its final state (PrefectHQ/prefect#18653): the
        # notification goes out, but the run must not be made Crashed.
        listed = client(me, client_env, "runs")
        for note in crashed:
            if note is not killed[0]:
                (named,) = [run for run in listed if run in note["body"]]
                (final,) = site.call("wait", named)
                assert final["state"] != "Crashed", (note, final)
        assert len(failed) == 1 and f"at {endpoint}:" in failed[0]["body"], notes
        assert len(notes) == len(crashed) + 1, notes
        for name in ("w1", "w2"):  # the sweep's trials ran on both, each synced first
            clone = folders[name] / "mnist-pipeline"
            assert {
                e.sha256: e.label for e in inbox_store.entries(clone / "data" / "extra")
            } == added
        # and each trial ingested every digit, the one reviewed from /feedback included
        trial_reports = [
            report
            for name in ("w1", "w2")
            for run in swept["trials"]
            for report in (folders[name] / "mnist-pipeline" / "runs").glob(
                f"*-{run.replace('-', '')[-12:]}/reports/ingest.json"
            )
        ]
        assert len(trial_reports) == len(swept["trials"]), trial_reports
        for report in trial_reports:
            counts = json.loads(report.read_text())["counts"]
            assert sum(counts.values()) == len(added), (report, counts)
