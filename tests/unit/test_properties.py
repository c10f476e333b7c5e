"""Bad input, tried systematically (Hypothesis, pinned in requirements.txt): mutated
scenario files, control-channel requests of the DNS authority, VIP REST bodies and
`--set` values. Each must give what a user can act on: a result, or one line naming
what is wrong (ScenarioError, HTTP 400/404/405, BadRequest, InputError), never another
exception, and a refused request changes nothing. A fixed budget of examples per target,
derandomized: the same examples every run, so a failure is reproducible and never flaky.
"""
from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import vipconfig, viprest
from experiments import registry
from gslb.authority import Authority
from gslb.config import ServiceInfo, example_config
from gslb.control import BadRequest as ControlError
from gslb.control import dispatch, state
from gslb.globalview import GlobalView
from gslb.server import GslbServer
from lab import vip_config
from topologies import scenario
from topologies.fields import ScenarioError
from topologies.plan import build_plan
from topologies.system import InputError

BUDGET = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# JSON-like values, including the awkward ones: huge and negative numbers, NaN, empties
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["", "10.1.0.0/24", "10.101.0.100", "10.101.0.11",
                                     "10.101.0.12", "lbb-us11", "us1", "na", "-1",
                                     "1e309", "0", "geo", "spare", "shed"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def _one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "Traceback" not in text


def _paths(data, prefix=()):
    """Every (path, value) in nested dicts and lists."""
    yield prefix, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, prefix + (i,))


SCENARIOS = {name: yaml.safe_load(scenario.resolve_path(name).read_text())
             for name in scenario.builtin_names()}


@st.composite
def mutated_scenario(draw):
    name = draw(st.sampled_from(sorted(SCENARIOS)))
    data = copy.deepcopy(SCENARIOS[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "unknown key", "duplicate"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "unknown key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))   # overlapping subnets, names
    return data


@BUDGET
@given(mutated_scenario())
def test_a_mutated_scenario_file_parses_or_gets_one_line_naming_the_file(data):
    try:
        scen = scenario.parse(data, "mutated.yaml")
    except ScenarioError as exc:
        assert _one_line(str(exc)) and str(exc).startswith("mutated.yaml"), str(exc)
        return
    try:
        build_plan(scen)         # what parsed must also be a network lblab can build
    except InputError as exc:
        assert _one_line(str(exc)), str(exc)


@BUDGET
@given(st.one_of(st.none(), values, st.text(max_size=40)))
def test_any_yaml_document_gets_a_scenario_or_one_line(data):
    try:
        scenario.parse(data, "any.yaml")
    except ScenarioError as exc:
        assert _one_line(str(exc)), str(exc)


def _authority_server() -> GslbServer:
    cfg = example_config(policy="geo", services=(
        ServiceInfo("search", "capacity", 10), ServiceInfo("upload", "spare", 60,
                                                           max_distance_ms=60)))
    view = GlobalView(d.name for d in cfg.dcs)
    return GslbServer(cfg, view, Authority(cfg, view, seed=1))


PATHS = ["/state", "/policy", "/ttl", "/dc/dc-east", "/dc/dc-west", "/dc/nowhere", "/dc/",
         "/", "/policy/x", "/dc/dc-east/x"]
FIELDS = ["policy", "overload", "service", "load_key", "ttl_s", "healthy", "load",
          "load_by_service", "wan"]
bodies = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda d: json.dumps(d, allow_nan=True).encode(),
              st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)),
    st.builds(lambda v: json.dumps(v, allow_nan=True).encode(), values))


def _comparable(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "version"}


@BUDGET
@given(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), st.sampled_from(PATHS), bodies)
def test_a_control_request_is_answered_or_refused_in_one_line_changing_nothing(
        method, path, body):
    server = _authority_server()
    before = _comparable(state(server))
    try:
        dispatch(server, method, path, body)
    except ControlError as exc:
        assert exc.status in (400, 404, 405) and _one_line(str(exc)), str(exc)
        assert _comparable(state(server)) == before, (method, path, body)
        return
    # accepted: the authority still answers from its (possibly changed) config
    server.authority.handle(b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                            b"\x03www\x05lblab\x04test\x00\x00\x01\x00\x01", "10.1.0.1")
    json.dumps(state(server))                 # and its state still serialises


def _vip_switch():
    plan = build_plan(scenario.load("two-dc"))
    sw = vipconfig.load(vip_config.from_plan(plan))[plan.switch("us1").dpid]
    return sw, sw.vips["us1"]


SW, VIP = _vip_switch()
VIP_FIELDS = ["mode", "algorithm", "conntrack", "conntrack_impl", "hash_impl", "reactive",
              "table_size", "ip", "weight"]


def test_a_backend_weight_must_be_finite():
    # found by the property below once a backend's own address was among its examples
    without = viprest.remove_backend(VIP, "10.101.0.12")
    for weight in (float("inf"), float("nan"), 0, -1):
        with pytest.raises(viprest.BadRequest, match="finite positive number"):
            viprest.add_backend(SW, without, {"ip": "10.101.0.12", "weight": weight})


@BUDGET
@given(st.sampled_from([VIP, viprest.remove_backend(VIP, "10.101.0.12")]),
       st.one_of(st.binary(max_size=40), st.builds(
    lambda d: json.dumps(d, allow_nan=True).encode(),
    st.dictionaries(st.sampled_from(VIP_FIELDS), values, max_size=3))),
    st.sampled_from(["change", "add", "remove", "drain"]))
def test_a_vip_rest_body_changes_the_vip_validly_or_is_a_bad_request(vip, body, action):
    try:
        data = viprest.parse_body(body)
        if action == "change":
            new = viprest.change_vip(SW, vip, data)
        elif action == "add":
            new = viprest.add_backend(SW, vip, data)
        else:
            key = str(data.get("ip", ""))
            new = viprest.remove_backend(vip, key) if action == "remove" else \
                viprest.set_admin(vip, key, "drain")
        viprest.checked(SW, {vip.name: new})
    except viprest.BadRequest as exc:
        assert _one_line(str(exc)), str(exc)


PARAMS = [(exp.name, param) for exp in registry.experiments().values()
          for param in exp.params]


@BUDGET
@given(st.sampled_from(PARAMS), st.text(max_size=30))
def test_a_set_value_is_converted_or_gets_one_line(named, text):
    name, param = named
    try:
        param.convert(text)
    except InputError as exc:
        assert _one_line(str(exc)) and param.name in str(exc), (name, str(exc))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_shipped_scenario_is_valid(name):
    build_plan(scenario.parse(copy.deepcopy(SCENARIOS[name]), f"{name}.yaml"))


# The CLI: subcommands that need no network (`run`, `topo up`, `dns serve` and `bench`
# would start one: their inputs are covered above, by scenario files and --set values)
words = st.one_of(st.sampled_from(["--set", "--json", "--check", "-h", "us1", "mode=dsr",
                                   "10.101.0.100", "--", "=", "x=1", "weight=-1"]),
                  st.text(max_size=12))
argvs = st.one_of(
    st.tuples(st.just("list"), st.lists(words, max_size=2)),
    st.tuples(st.just("report"), st.lists(st.builds(lambda t: f"/nonexistent-lblab/{t}",
                                                    st.text(max_size=10)), max_size=2)),
    st.tuples(st.just("compare"), st.lists(st.builds(lambda t: f"/nonexistent-lblab/{t}",
                                                     st.text(max_size=10)), max_size=3)),
    st.tuples(st.just("vip"), st.lists(st.one_of(st.sampled_from(
        ["list", "show", "set", "add", "remove", "drain", "undrain"]), words), max_size=4)),
).map(lambda t: [t[0], *t[1]])


@BUDGET
@given(argvs)
def test_cli_arguments_get_a_result_or_a_short_error_never_a_traceback(argv):
    import contextlib
    import io

    from experiments import cli
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:       # argparse: usage and one error line, exit 2
            code = exc.code
    text = err.getvalue()
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    assert code in (0, 1, 2, None), (argv, code, text)
    if code == 1:
        assert len(text.strip().splitlines()) == 1, (argv, text)
