"""JetStream's publish replies read as acknowledgements, errors, or no answer yet."""

from __future__ import annotations

from broker.errors import Conflict, InternalError, StorageFull
from broker.jetstream_records import DUPLICATE_IN_PROCESS, PubAck, ack_result


def test_a_reply_is_an_acknowledgement_an_error_or_no_answer_yet() -> None:
    assert ack_result(b'{"stream":"S","seq":7,"duplicate":true}', "s.x") == PubAck(
        stream="S", seq=7, duplicate=True
    )
    # A copy sent again while the first copy of the same msg id is still being stored: that copy answers.
    in_process = (
        b'{"error":{"code":409,"err_code":%d,"description":"duplicate message id is in process"}}'
        % DUPLICATE_IN_PROCESS
    )
    assert ack_result(in_process, "s.x") is None
    full = ack_result(
        b'{"error":{"code":503,"err_code":10077,"description":"maximum bytes exceeded"}}', "s.x"
    )
    assert isinstance(full, StorageFull)
    wrong = ack_result(
        b'{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}', "s.x"
    )
    assert isinstance(wrong, InternalError) and not isinstance(wrong, Conflict)
    assert isinstance(ack_result(b"not json", "s.x"), InternalError)
