"""The multi-host test's review step: a digit posted to the serving host's /feedback waits in
the bucket's review queue, and a reviewer on the client host accepts it into the shared inbox."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.example_helpers import draw_digit
from tests.multi_host_helpers import client, on_host
from tests.netns_helpers import Host

FEEDBACK_TOKEN = "multi-host-kiosk-token"
FEEDBACK_LABEL = 4


def reviewed_elsewhere(me: Host, env: dict[str, str], url: str, folder: Path) -> str:
    """Post a digit from `me` to the server at `url`, accept it with the CLI in `folder` on
    `me`; its SHA-256."""
    image = draw_digit(folder / "feedback.png", 101)
    sent = client(
        me, env, "feedback", f"{url}/feedback", FEEDBACK_TOKEN, str(image), str(FEEDBACK_LABEL)
    )
    assert sent["status"] == 201 and sent["body"]["source"] == "token:kiosk", sent
    sha = sent["body"]["sha256"]
    assert not (folder.parent / "serve" / "data" / "pending").exists()  # not on the server
    cli = [sys.executable, "-m", "mnist_pipeline", "--root", str(folder), "data"]
    (waiting,) = json.loads(on_host(me, [*cli, "pending", "--json"], env).splitlines()[-1])
    assert (waiting["sha256"], waiting["labels"]) == (sha, [FEEDBACK_LABEL]), waiting
    on_host(me, [*cli, "accept", sha[:12]], env)
    assert json.loads(on_host(me, [*cli, "pending", "--json"], env).splitlines()[-1]) == []
    return sha
