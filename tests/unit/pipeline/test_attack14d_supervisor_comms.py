"""An account's time limit never lands inside a request the task sends its Airflow supervisor.

A task asks its supervisor for connections, variables, the task state store (``SUPERVISOR_COMMS``,
one socket, answers read in order and not matched to their request). A SIGALRM raising between a
request and its answer leaves that answer unread: the batch goes on with its next account, and every
request after that reads the answer of the one before it -- the next account's connection gets the
last account's, the ledger's write gets a connection, and so on, for the rest of the batch.

The supervisor here is the other end of a socket pair speaking Airflow's own frames, slowly (as a
supervisor waiting on a busy API server does).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import msgspec
import pytest

from tiktok_pipeline.time_limits import AccountTimeLimitReached, account_time_limit


@pytest.fixture
def supervisor(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """The task's end of a socket whose other end answers each GetConnection after 0.5 s (or the param)."""
    from airflow.sdk.execution_time.comms import ConnectionResult, _RequestFrame, _ResponseFrame

    task_end, supervisor_end = socket.socketpair()
    decoder = msgspec.msgpack.Decoder(_RequestFrame)
    delay = getattr(request, "param", 0.5)

    def serve() -> None:
        with contextlib.closing(supervisor_end), contextlib.suppress(OSError):
            while True:
                size = supervisor_end.recv(4, socket.MSG_WAITALL)
                if len(size) < 4:
                    return
                frame = decoder.decode(supervisor_end.recv(int.from_bytes(size, "big"), socket.MSG_WAITALL))
                time.sleep(delay)
                answer = ConnectionResult(
                    conn_id=frame.body["conn_id"],
                    conn_type="http",
                    host=None,
                    schema=None,
                    login=None,
                    password=None,
                    port=None,
                    extra=None,
                )
                supervisor_end.sendall(_ResponseFrame(id=frame.id, body=answer.model_dump(by_alias=True)).as_bytes())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield task_end
    task_end.close()
    supervisor_end.close()
    thread.join(5)


def test_an_account_stopped_mid_request_leaves_the_supervisor_channel_in_step(supervisor: socket.socket) -> None:
    from airflow.sdk.execution_time.comms import CommsDecoder, GetConnection, ToSupervisor, ToTask

    comms = CommsDecoder[ToTask, ToSupervisor](socket=supervisor)
    left, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if armed
    with contextlib.suppress(AccountTimeLimitReached), account_time_limit(timedelta(seconds=0.1), "over"):
        comms.send(GetConnection(conn_id="first_account"))  # the account's hook asks for its connection
    assert signal.getitimer(signal.ITIMER_REAL)[0] <= max(left, 0.0) + 1e-6

    answer = comms.send(GetConnection(conn_id="next_account"))

    assert answer.conn_id == "next_account", "the next request read the answer of the interrupted one"


class TaskTimeout(BaseException):
    pass


@pytest.mark.parametrize("supervisor", [3.0], indirect=True)
def test_the_task_timeout_is_not_put_off_by_a_request_the_account_limit_waits_for(supervisor: socket.socket) -> None:
    """The account's limit waits for the supervisor's answer; the task's own timeout does not."""
    from airflow.sdk.execution_time.comms import CommsDecoder, GetConnection, ToSupervisor, ToTask

    def ring(signum: int, frame: object) -> None:
        raise TaskTimeout()

    comms = CommsDecoder[ToTask, ToSupervisor](socket=supervisor)
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    before = signal.signal(signal.SIGALRM, ring)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # the task's own: due long before the answer
        with pytest.raises(TaskTimeout), account_time_limit(timedelta(seconds=0.1), "over"):
            comms.send(GetConnection(conn_id="first_account"))
            pytest.fail("the task's timeout waited for the supervisor's answer")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        if left:
            signal.setitimer(signal.ITIMER_REAL, left)


@pytest.mark.parametrize("supervisor", [3.0], indirect=True)
def test_the_task_timeout_waits_for_a_supervisor_answer_within_its_grace_only(supervisor: socket.socket) -> None:
    """Airflow's own timer, wrapped for the task: put off inside the request, for ``grace`` at most."""
    from airflow.sdk.execution_time.comms import CommsDecoder, GetConnection, ToSupervisor, ToTask

    from tiktok_pipeline.time_limits import task_timeout_spares_token_calls

    rang: list[float] = []

    def airflow_ring(signum: int, frame: object) -> None:
        rang.append(time.monotonic())
        raise TaskTimeout()

    comms = CommsDecoder[ToTask, ToSupervisor](socket=supervisor)
    left, _ = signal.getitimer(signal.ITIMER_REAL)
    before = signal.signal(signal.SIGALRM, airflow_ring)
    try:
        with task_timeout_spares_token_calls(grace=0.5):
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            started = time.monotonic()
            with pytest.raises(TaskTimeout):
                comms.send(GetConnection(conn_id="first_account"))
            assert len(rang) == 1 and rang[0] - started >= 0.4, "put off while the request was under way"
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(TaskTimeout):  # outside a request: at once
                time.sleep(5)
        assert signal.getsignal(signal.SIGALRM) is airflow_ring, "Airflow's handler is back"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        if left:
            signal.setitimer(signal.ITIMER_REAL, left)
