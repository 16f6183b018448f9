"""What the retraining flow's state hook says for each way a run can end badly."""

from __future__ import annotations

from prefect.states import Cancelled, Cancelling, Crashed, Failed

from flows.notify import failure_message


def test_the_subject_names_how_the_run_ended_and_the_body_its_message() -> None:
    ended = {
        "failed": Failed(message="gate: accuracy 0.5 < 0.9"),
        "crashed": Crashed(message="process killed"),
        "cancelled": Cancelling(message="cancelled in the UI"),
    }
    for word, state in ended.items():
        subject, body = failure_message("brave-otter", state)
        assert (subject, body) == (f"mnist-retrain run brave-otter {word}", state.message)
    assert failure_message("brave-otter", Cancelled())[0].endswith(" cancelled")
    assert failure_message("brave-otter", Failed(message=None))[1] == "no message"
