"""lblab's REST routing (controller/rest.py), as a pure function: what a client of the VIP API
gets for each kind of request, right or wrong."""
from __future__ import annotations

from controller.rest import RestError, Route, dispatch


class Bad(ValueError):
    pass


def boom(params, body):
    raise KeyError("secret detail")


ROUTES = [
    Route("GET", "/vips", lambda p, b: ["us1"]),
    Route("GET", "/vips/{vip}", lambda p, b: {"name": p["vip"]}),
    Route("PUT", "/vips/{vip}", lambda p, b: {"body": b.decode()}),
    Route("POST", "/vips/{vip}/backends/{backend}/drain",
          lambda p, b: {"drained": p["backend"], "of": p["vip"]}),
    Route("GET", "/bad", lambda p, b: (_ for _ in ()).throw(Bad("no such VIP 'x'"))),
    Route("GET", "/teapot", lambda p, b: (_ for _ in ()).throw(RestError(418, "short"))),
    Route("GET", "/boom", boom),
]


def test_paths_and_parameters_route_to_their_handler():
    assert dispatch(ROUTES, "GET", "/vips", b"") == (200, {}, ["us1"])
    assert dispatch(ROUTES, "GET", "/vips/", b"")[2] == ["us1"]           # trailing slash
    assert dispatch(ROUTES, "GET", "/vips/us1?x=1", b"")[2] == {"name": "us1"}
    assert dispatch(ROUTES, "PUT", "/vips/us1", b'{"a":1}')[2] == {"body": '{"a":1}'}
    assert dispatch(ROUTES, "POST", "/vips/eu1/backends/10.1.0.2/drain", b"")[2] == \
        {"drained": "10.1.0.2", "of": "eu1"}


def test_a_parameter_never_spans_a_slash():
    status, _, payload = dispatch(ROUTES, "GET", "/vips/us1/extra", b"")
    assert status == 404 and "/vips/us1/extra" in payload["error"]


def test_wrong_method_is_405_with_what_is_allowed():
    status, headers, payload = dispatch(ROUTES, "DELETE", "/vips/us1", b"")
    assert status == 405
    assert headers == {"Allow": "GET, PUT"}
    assert "GET, PUT" in payload["error"]


def test_app_errors_are_400_and_bugs_are_500_without_details():
    assert dispatch(ROUTES, "GET", "/bad", b"", bad_request=(Bad,)) == \
        (400, {}, {"error": "no such VIP 'x'"})
    assert dispatch(ROUTES, "GET", "/teapot", b"")[:2] == (418, {})
    status, _, payload = dispatch(ROUTES, "GET", "/boom", b"")
    assert status == 500
    assert payload == {"error": "internal error: KeyError"}   # no 'secret detail'
