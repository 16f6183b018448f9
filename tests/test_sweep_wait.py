"""The sweep's wait for its registering run, against a client whose answers the test scripts."""

from __future__ import annotations

from uuid import uuid4

from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Paused, Running

from flows.child_runs import awaits_approval, wait_registering


class ScriptedClient:
    """Answers read_flow_run with the next of `states` and read_flow_runs (the paused children
    `awaits_approval` asks for) with the next of `paused_children`."""

    def __init__(self, states: list, paused_children: list[bool]) -> None:
        self.states, self.paused = states, paused_children
        self.parent = FlowRun(flow_id=uuid4(), name="winner")

    def read_flow_run(self, run_id):
        return self.parent.model_copy(update={"id": run_id, "state": self.states.pop(0)})

    def read_flow_runs(self, **filters):
        paused = self.paused.pop(0)
        return [FlowRun(flow_id=uuid4(), name="approval", state=Paused())] if paused else []


def test_an_approval_answered_between_two_looks_is_waited_out() -> None:
    """The first look sees the approval subflow paused; by the second it was approved and the
    run trains on: the sweep waits again, for the run's end, instead of failing it as neither
    finished nor waiting."""
    client = ScriptedClient([Running(), Completed()], paused_children=[True, False])
    run, awaiting = wait_registering(client, uuid4(), timeout_s=60)
    assert run.state.is_completed() and not awaiting
    assert client.states == [] and client.paused == []  # it looked again


def test_a_run_still_waiting_for_approval_is_a_result() -> None:
    """Seen waiting by the wait's look and again by the check after it: done, no third look."""
    client = ScriptedClient([Running()], paused_children=[True, True])
    run, awaiting = wait_registering(client, uuid4(), timeout_s=60)
    assert run.state.is_running() and awaiting
    assert client.states == [] and client.paused == []


class FilteringClient(ScriptedClient):
    """Reads child runs as the server does: those of the parent asked for, in the states asked
    for (`children`: (parent id, state) pairs)."""

    def __init__(self, state, children: list) -> None:
        super().__init__([], [])
        self.state, self.children = state, children

    def read_flow_run(self, run_id):
        return self.parent.model_copy(update={"id": run_id, "state": self.state})

    def read_flow_runs(self, flow_run_filter=None, **_):
        parents = flow_run_filter.parent_flow_run_id.any_
        wanted = flow_run_filter.state.type.any_ if flow_run_filter.state else None
        return [
            FlowRun(flow_id=uuid4(), name="approval", state=state)
            for parent, state in self.children
            if parent in parents and (wanted is None or state.type in wanted)
        ]


def test_only_a_paused_approval_subflow_of_the_run_is_waiting() -> None:
    """An approval already answered (completed), or another run's paused one, is no wait."""
    run_id = uuid4()
    client = FilteringClient(Running(), [(run_id, Completed()), (uuid4(), Paused())])
    assert not awaits_approval(client, client.read_flow_run(run_id))
    client.children.append((run_id, Paused()))
    assert awaits_approval(client, client.read_flow_run(run_id))


def test_a_run_paused_itself_is_waiting_without_looking_at_its_children() -> None:
    client = FilteringClient(Paused(), [])
    client.read_flow_runs = None  # not asked: the run's own state says it
    assert awaits_approval(client, client.read_flow_run(uuid4()))
    client.state = None  # no state yet: nothing to wait for
    assert not awaits_approval(client, client.read_flow_run(uuid4()))
