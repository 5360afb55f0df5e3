"""The endpoint `recsys serve` runs, attacked the way careless users and hostile clients would:
every case ends in a clear 4xx with the reason only (no stack trace, no server path, no echo of the
request), or in a correct answer. In-process (Starlette's TestClient) on the real MLflow scoring app
with a real saved model; tests/test_serve_process.py covers the process and its signals."""

import io
import json

import pandas as pd
import pytest
from starlette.testclient import TestClient

from serving.http_app import MAX_BODY_BYTES, build_app


@pytest.fixture(scope="module", params=[True, False], ids=["direct", "through-mlflow"])
def client(small_pyfunc, request):
    """The guard answering the model's requests itself (as `recsys serve` does), and passing them
    on to MLflow's app (as for a model saved before ``answer``): every promise holds both ways."""
    return TestClient(build_app(small_pyfunc[0], direct=request.param))


@pytest.fixture(scope="module")
def ids(small_bundle):
    return small_bundle.state.users.ids.to_list(), small_bundle.state.items.ids.to_list()


def _post(client, payload, content_type="application/json"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post("/invocations", content=body, headers=headers)


def _clean(reply) -> str:
    """The error message, after checking the answer carries nothing of the server's insides."""
    error = reply.json()
    assert set(error) == {"error_code", "message"}, error
    assert "Traceback" not in reply.text and "/work/" not in reply.text and ".py" not in reply.text
    assert "Failed to predict data" not in reply.text
    return error["message"]


def test_a_good_request_is_answered(client, ids):
    users, _ = ids
    reply = _post(client, {"dataframe_records": [{"user_id": users[0], "k": 3}]})
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["predictions"][0]["item_ids"]) == 3


@pytest.mark.parametrize("field", ["exlude", "K", "candidate"])
def test_a_misspelled_field_is_a_400_naming_it(client, ids, field):
    users, items = ids
    reply = _post(client, {"dataframe_records": [{"user_id": users[0], "k": 2, field: [items[0]]}]})
    assert reply.status_code == 400
    assert f"unknown request field(s) ['{field}']" in _clean(reply)


def test_a_misspelled_field_in_a_parquet_body_is_a_400_and_a_good_one_is_answered(client, ids):
    users, items = ids
    buffer = io.BytesIO()
    pd.DataFrame({"user_id": [users[0]], "exlude": [[items[0]]]}).to_parquet(buffer)
    reply = _post(client, buffer.getvalue(), "application/x-parquet")
    assert reply.status_code == 400 and "unknown request field(s) ['exlude']" in _clean(reply)
    good = io.BytesIO()
    pd.DataFrame({"user_id": [users[0]], "k": [2], "exclude": [[items[0]]]}).to_parquet(good)
    reply = _post(client, good.getvalue(), "application/x-parquet")
    assert reply.status_code == 200, reply.text
    answer = reply.json()["predictions"][0]
    assert len(answer["item_ids"]) == 2 and items[0] not in answer["item_ids"]


def test_the_other_json_layouts_are_checked_too(client, ids):
    users, _ = ids
    split = {"dataframe_split": {"columns": ["user_id", "kk"], "data": [[users[0], 1]]}}
    assert "['kk']" in _clean(_post(client, split))
    columnar = {"inputs": {"user_id": [users[0]], "exclud": [["x"]]}}
    assert "['exclud']" in _clean(_post(client, columnar))
    good = _post(client, {"dataframe_split": {"columns": ["user_id", "k"], "data": [[users[0], 2]]}})
    assert good.status_code == 200 and len(good.json()["predictions"][0]["item_ids"]) == 2


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "text/csv"])
def test_a_missing_empty_or_unsupported_content_type_is_a_415(client, ids, content_type):
    reply = _post(client, {"dataframe_records": [{"user_id": ids[0][0]}]}, content_type)
    assert reply.status_code == 415
    assert "application/json" in _clean(reply)


def test_mime_types_match_case_insensitively(client, ids):
    reply = _post(client, {"dataframe_records": [{"user_id": ids[0][0]}]}, "APPLICATION/JSON; charset=UTF-8")
    assert reply.status_code == 200, reply.text


def test_json_nested_100000_levels_deep_is_a_400(client):
    reply = _post(client, b"[" * 100_000 + b"]" * 100_000)
    assert reply.status_code == 400
    assert "nested too deeply" in _clean(reply)


@pytest.mark.parametrize("body, message", [
    (b'{"dataframe_records": [{"user_id": "U1", "k": Infinity}]}', "Infinity is not a JSON number"),
    (b'{"dataframe_records": [{"user_id": "U1", "k": 1e400}]}', "1e400 is out of range"),
    (b'{"dataframe_records": [{"user_id": "U1", "k": NaN}]}', "NaN is not a JSON number"),
    (b'{"dataframe_records": [{"user_id": "U1"', "not valid UTF-8 JSON"),
    (b'\xff\xfe', "not valid UTF-8 JSON"),
    (b'[{"user_id": "U1"}]', "request JSON must be an object"),
    (b'{"records": [{"user_id": "U1"}]}', "needs exactly one of"),
    (b'{"dataframe_records": {"user_id": "U1"}}', "'dataframe_records' must be a list of objects"),
])
def test_bad_json_gets_a_reason_not_a_traceback(client, body, message):
    reply = _post(client, body)
    assert reply.status_code == 400
    assert message in _clean(reply)


def test_a_bad_value_is_a_400_with_the_reason_only(client, ids):
    reply = _post(client, {"dataframe_records": [{"user_id": ids[0][0], "k": 1000}]})
    assert reply.status_code == 400
    assert _clean(reply) == "row 0: k must be between 1 and 100, got 1000"


def test_an_explicit_candidate_list_of_unknown_ids_ranks_nothing(client, ids):
    reply = _post(client, {"dataframe_records": [{"user_id": ids[0][0], "candidates": ["NOPE1", "NOPE2"]}]})
    assert reply.status_code == 200
    answer = reply.json()["predictions"][0]
    assert (answer["item_ids"], answer["unknown_ids"]) == ([], ["NOPE1", "NOPE2"])


def test_too_much_work_is_refused_up_front_with_413(client, ids):
    users, items = ids
    many = (items * 40)[:3000]
    reply = _post(client, {"dataframe_records": [{"user_id": f"u{i}", "candidates": many} for i in range(200)]})
    assert reply.status_code == 413
    assert "asks to score 600,000 (user, item) pairs; at most 450,000" in _clean(reply)
    huge = b'{"dataframe_records": [' + b'{"user_id": "u"},' * (MAX_BODY_BYTES // 16) + b'{"user_id": "v"}]}'
    reply = _post(client, huge)
    assert reply.status_code == 413 and "at most 8,388,608" in _clean(reply)


def test_an_unexpected_error_is_a_500_with_an_error_id_and_no_trace(client, small_pyfunc, monkeypatch, caplog):
    model = small_pyfunc[0].unwrap_python_model()

    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("secret detail at /srv/app/internal.py")
    monkeypatch.setattr(model, "bundle", Broken())
    reply = _post(client, {"dataframe_records": [{"user_id": "U1"}]})
    assert reply.status_code == 500
    message = _clean(reply)
    assert message.startswith("internal error while ranking (error id ") and "secret" not in message
    error_id = message.split("error id ")[1].split(")")[0]
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)  # the log has the trace


def test_a_request_that_waits_past_its_deadline_gets_503_and_is_not_worked_on(client, small_pyfunc, ids):
    model = small_pyfunc[0].unwrap_python_model()
    model._batcher._busy = True  # another batch is being ranked
    old, model.deadline_s = model.deadline_s, 0.2
    try:
        reply = _post(client, {"dataframe_records": [{"user_id": ids[0][0]}]})
        assert model._batcher._queue == []  # it left the queue: no work will be done on it
    finally:
        model._batcher._busy = False
        model.deadline_s = old
    assert reply.status_code == 503
    assert "server busy: the request waited 0.2 s for its turn" in _clean(reply)


def test_fields_are_checked_from_the_layout_even_without_values(client, ids):
    user = ids[0][0]
    empty_column = {"inputs": {"user_id": [user], "exlude": []}}
    assert "['exlude']" in _clean(_post(client, empty_column))
    short_rows = {"dataframe_split": {"columns": ["user_id", "k", "exlude"], "data": [[user, 2]]}}
    assert "['exlude']" in _clean(_post(client, short_rows))


def test_a_parquet_body_that_expands_past_the_bound_is_413_before_it_is_decoded(client):
    buffer = io.BytesIO()  # 1,000 users sharing one 100 kB id through the dictionary: ~5 kB on the wire
    pd.DataFrame({"user_id": [f"u{i}" for i in range(1000)], "history": [["h" * 100_000]] * 1000}).to_parquet(buffer)
    assert len(buffer.getvalue()) < 20_000
    reply = _post(client, buffer.getvalue(), "application/x-parquet")
    assert reply.status_code == 413
    assert "Parquet body expands to 100,0" in _clean(reply) and "at most 67,108,864" in _clean(reply)


def test_client_input_is_never_echoed_back_at_length(client, ids):
    long_field = "x" * 100_000
    reply = _post(client, {"dataframe_records": [{"user_id": ids[0][0], long_field: 1}]})
    assert reply.status_code == 400 and len(reply.text) < 500
    reply = _post(client, {"dataframe_records": [{"user_id": "y" * 100_000, "k": "z" * 100_000}]})
    assert reply.status_code == 400 and len(reply.text) < 500
    reply = _post(client, b'{"dataframe_records": [{"user_id": "U1", "k": 1' + b"0" * 400 + b"}]}")
    assert reply.status_code == 400 and "k must be an integer between 1 and 100" in _clean(reply)


def test_k_must_be_a_whole_number_and_is_never_rounded(client, ids):
    users, _ = ids
    for k in (5.5, "5", True):
        reply = _post(client, {"dataframe_records": [{"user_id": users[0], "k": k}]})
        assert reply.status_code == 400, k
        assert "k must be an integer between 1 and 100" in _clean(reply)
    assert len(_post(client, {"dataframe_records": [{"user_id": users[0], "k": 3.0}]}).json()["predictions"][0]
               ["item_ids"]) == 3


def test_rows_may_leave_out_fields_that_other_rows_send(client, ids):
    """The typed signature refuses a column with holes; the guard fills them (default k, no lists)
    so a mixed request is answered as its rows would be one by one."""
    users, items = ids
    rows = [{"user_id": users[0], "k": 2, "history": items[:2]}, {"user_id": users[1]},
            {"user_id": "someone-new", "candidates": items[:3], "exclude": items[:1]}]
    reply = _post(client, {"dataframe_records": rows})
    assert reply.status_code == 200, reply.text
    answer = {row["user_id"]: row for row in reply.json()["predictions"]}
    for row in rows:
        alone = _post(client, {"dataframe_records": [row]}).json()["predictions"][0]
        assert answer[row["user_id"]]["item_ids"] == alone["item_ids"]
    assert len(answer[users[0]]["item_ids"]) == 2 and len(answer[users[1]]["item_ids"]) == 10
    assert sorted(answer["someone-new"]["item_ids"]) == sorted(items[1:3])


def test_a_parquet_body_with_missing_k_values_is_answered(client, ids):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    users, _ = ids
    buffer = io.BytesIO()
    pq.write_table(pa.table({"user_id": users[:2], "k": pa.array([4.0, None])}), buffer)
    reply = _post(client, buffer.getvalue(), "application/vnd.apache.parquet")
    assert reply.status_code == 200, reply.text
    assert [len(row["item_ids"]) for row in reply.json()["predictions"]] == [4, 10]


def test_the_server_process_keeps_pandas_strings_as_objects():
    """create_app (the uvicorn factory, the server process only) turns off pandas 3's Arrow-backed
    strings, whose conversions dominated the server's profile; loading the model elsewhere does not."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error'); import pandas as pd; "
            "before = str(pd.DataFrame({'a': ['x']})['a'].dtype); "
            "from serving.http_app import _object_strings; _object_strings(); "
            "print(before, pd.DataFrame({'a': ['x']})['a'].dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["str", "object"]


def test_the_guard_answers_as_mlflows_server_would(small_pyfunc, ids, monkeypatch):
    """recsys serve answers its model's requests itself, from the rows it has parsed; the reply is
    the JSON MLflow's server gives for the same requests (JSON and Parquet bodies), and MLflow's
    predict is not called on the way."""
    users, items = ids
    rows = [{"user_id": users[0], "k": 2, "history": items[:2]}, {"user_id": users[1], "exclude": ["NOPE"]},
            {"user_id": "someone-new", "candidates": [*items[:3], "GONE"], "exclude": items[:1]},
            {"user_id": "someone-else", "k": 4.0}]
    payload = {"dataframe_records": rows}
    through_mlflow = _post(TestClient(build_app(small_pyfunc[0], direct=False)), payload)
    assert through_mlflow.status_code == 200, through_mlflow.text
    monkeypatch.setattr(type(small_pyfunc[0].unwrap_python_model()), "predict",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("MLflow's path was taken")))
    direct = _post(TestClient(build_app(small_pyfunc[0])), payload)
    assert direct.status_code == 200, direct.text
    assert direct.headers["content-type"] == "application/json"
    assert direct.json() == through_mlflow.json()
    answer = {row["user_id"]: row for row in direct.json()["predictions"]}
    assert [len(answer[u]["item_ids"]) for u in (users[0], users[1], "someone-new", "someone-else")] == [2, 10, 2, 4]
    assert answer["someone-new"]["unknown_ids"] == ["GONE"] and answer[users[1]]["unknown_ids"] == ["NOPE"]
    buffer = io.BytesIO()
    pd.DataFrame({"user_id": users[:2], "k": [3, 5], "exclude": [items[:1], []]}).to_parquet(buffer)
    parquet = _post(TestClient(build_app(small_pyfunc[0])), buffer.getvalue(), "application/vnd.apache.parquet")
    monkeypatch.undo()
    expected = _post(TestClient(build_app(small_pyfunc[0], direct=False)), buffer.getvalue(),
                     "application/vnd.apache.parquet")
    assert parquet.status_code == 200 and parquet.json() == expected.json()
    assert [len(row["item_ids"]) for row in parquet.json()["predictions"]] == [3, 5]


def test_dataframe_split_columns_must_be_distinct_names(client, ids):
    for columns in (["user_id", ["k"]], ["user_id", "user_id"]):
        reply = _post(client, {"dataframe_split": {"columns": columns, "data": [[ids[0][0], 1]]}})
        assert reply.status_code == 400
        assert "'dataframe_split' columns must be distinct field names" in _clean(reply)


def test_a_model_without_answer_is_served_through_mlflow(small_pyfunc, ids, monkeypatch):
    """A model version saved before ``answer`` existed still works: its requests go through MLflow's
    server, in the canonical form its typed signature takes (a row may leave out what another sends)."""
    from types import SimpleNamespace

    from serving import http_app

    users, items = ids
    old_model = SimpleNamespace(bundle=small_pyfunc[0].unwrap_python_model().bundle)  # no answer()
    monkeypatch.setattr(http_app, "_python_model", lambda model: old_model)
    guard = build_app(small_pyfunc[0])
    assert guard.answer is None
    reply = _post(TestClient(guard), {"dataframe_records": [{"user_id": users[0], "k": 3},
                                                            {"user_id": users[1], "candidates": items[:2]}]})
    assert reply.status_code == 200, reply.text
    assert [len(row["item_ids"]) for row in reply.json()["predictions"]] == [3, 2]
