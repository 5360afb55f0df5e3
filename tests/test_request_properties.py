"""Property-based: whatever a client sends, the endpoint answers 200 or a 4xx with a reason, never a
5xx or a traceback; the request parser returns requests or raises DataValidationError, nothing else.
Bounded (a few hundred examples, no deadline) so it runs in CI in seconds."""

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from recsys.errors import DataValidationError
from serving.http_app import build_app
from serving.requests import FIELDS, parse_requests

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                            HealthCheck.too_slow])
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**500, max_value=10**500),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                           max_leaves=12)
field_names = st.one_of(st.sampled_from(FIELDS), st.text(max_size=6))
rows = st.lists(st.dictionaries(field_names, json_values, max_size=5), max_size=4)


@pytest.fixture(scope="module")
def client(small_pyfunc):
    return TestClient(build_app(small_pyfunc[0]))


def _assert_handled(reply) -> None:
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, (reply.status_code, reply.text)
    if reply.status_code != 200:
        error = reply.json()
        assert set(error) == {"error_code", "message"} and error["message"]
        assert "Traceback" not in reply.text and ".py" not in reply.text


@SETTINGS
@given(rows=rows, key=st.sampled_from(["dataframe_records", "inputs", "instances"]))
def test_any_json_rows_get_an_answer_or_a_4xx(client, rows, key):
    _assert_handled(client.post("/invocations", content=json.dumps({key: rows}),
                                headers={"Content-Type": "application/json"}))


@SETTINGS
@given(document=json_values)
def test_any_json_document_gets_an_answer_or_a_4xx(client, document):
    _assert_handled(client.post("/invocations", content=json.dumps(document),
                                headers={"Content-Type": "application/json"}))


@SETTINGS
@given(body=st.binary(max_size=64), content_type=st.sampled_from(["application/json", "text/csv",
                                                                  "application/x-parquet", "Application/Json"]))
def test_any_bytes_get_an_answer_or_a_4xx(client, body, content_type):
    _assert_handled(client.post("/invocations", content=body, headers={"Content-Type": content_type}))


@SETTINGS
@given(user=st.sampled_from(["U-known", "U-new"]), k=json_values,
       lists=st.dictionaries(st.sampled_from(["candidates", "history", "exclude"]),
                             st.lists(st.text(max_size=4), max_size=5), max_size=3))
def test_well_formed_users_with_any_k_and_lists(client, small_bundle, user, k, lists):
    user_id = small_bundle.state.users.ids[0] if user == "U-known" else user
    reply = client.post("/invocations", json={"dataframe_records": [{"user_id": user_id, "k": k, **lists}]})
    _assert_handled(reply)
    if reply.status_code == 200:
        answer = reply.json()["predictions"][0]
        assert len(answer["item_ids"]) == len(set(answer["item_ids"])) <= 100


@SETTINGS
@given(rows=rows)
def test_the_parser_returns_requests_or_a_validation_error(rows):
    try:
        requests = parse_requests(pd.DataFrame(rows), default_k=10, candidate_budget=400)
    except DataValidationError:
        return
    assert len(requests) == len(rows)
    assert all(1 <= r.k <= 100 and isinstance(r.user_id, str) and r.user_id for r in requests)


@SETTINGS
@given(users=st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=20, unique=True),
       k=st.one_of(st.none(), st.integers(min_value=1, max_value=100)),
       candidates=st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=8)))
def test_the_parser_accepts_every_well_formed_request_as_sent(users, k, candidates):
    """The other side: valid requests are never refused, and keep their values."""
    rows = [{"user_id": u, **({} if k is None else {"k": k}), **({} if candidates is None else
                                                                  {"candidates": candidates})} for u in users]
    requests = parse_requests(pd.DataFrame(rows), default_k=10, candidate_budget=400)
    assert [r.user_id for r in requests] == users
    assert all(r.k == (10 if k is None else k) for r in requests)
    expected = None if candidates is None else tuple(dict.fromkeys(candidates))
    assert all(r.candidates == expected for r in requests)
