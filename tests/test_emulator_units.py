"""
The emulator's pure parts: fault selection, microversion parsing, route
matching, configuration, regions, clouds.yaml, the state file's layout.
"""

import json
import random

import pytest
import yaml

from blockmover.emulator import microversion
from blockmover.emulator.config import ConfigError, EmulatorConfig
from blockmover.emulator.errors import ApiError
from blockmover.emulator.faults import FaultError, Faults
from blockmover.emulator.main import clouds_yaml, main
from blockmover.emulator.routing import Router
from blockmover.emulator.store import Store

KEYS = ["GET /v3/{project}/volumes/detail", "GET /v3/abc/volumes/detail"]


def test_counted_error_fault_is_used_up():
    faults = Faults({"errors": [{"match": "GET /v3/*", "status": 500,
                                 "count": 2}]})
    assert [faults.error(KEYS) for _ in range(3)] == [500, 500, None]


def test_fraction_fault_fires_about_that_often():
    faults = Faults({"errors": [{"match": "*", "fraction": 0.3}]},
                    rng=random.Random(7))
    fired = sum(faults.error(KEYS) is not None for _ in range(2000))
    assert 450 < fired < 750


def test_fault_pattern_must_match():
    faults = Faults({"over_limit": [{"match": "POST *", "retry_after": 2}]})
    assert faults.over_limit(KEYS) is None
    assert faults.over_limit(["POST /v3/volumes"]) == 2


def test_stuck_fault_by_operation_and_volume():
    faults = Faults({"stuck": [{"operation": "detach", "seconds": 5,
                                "volume": "v1"}]})
    assert faults.stuck("attach", {"id": "v1"}, "s1") == 0.0
    assert faults.stuck("detach", {"id": "v2"}, "s1") == 0.0
    assert faults.stuck("detach", {"id": "v1"}, "s1") == 5.0


def test_stuck_fault_by_name_and_server():
    faults = Faults({"stuck": [{"operation": "attach", "seconds": 5,
                                "name": "demo-db*", "server": "node2",
                                "count": 1}]}, servers={"s2": "node2"})
    db = {"id": "v1", "name": "demo-db-volume"}
    web = {"id": "v2", "name": "demo-web-volume"}
    assert faults.stuck("attach", web, "s2") == 0.0
    assert faults.stuck("attach", db, "s1") == 0.0
    # Named by the server's name or its id; the count is used up once.
    assert faults.stuck("attach", db, "s2") == 5.0
    assert faults.stuck("attach", db, "s2") == 0.0
    faults.replace({"attach_errors": [{"server": "s2"}]})
    assert faults.attach_fails(web, "s2")
    assert not faults.attach_fails(web, "s1")


def test_fault_narrowing_must_be_text():
    with pytest.raises(FaultError):
        Faults({"stuck": [{"operation": "attach", "name": 3}]})


def test_bad_fault_data_is_refused_and_keeps_the_old():
    faults = Faults({"latency": [{"seconds": 1}]})
    with pytest.raises(FaultError):
        faults.replace({"stuck": [{"operation": "explode"}]})
    assert faults.latency(KEYS) == 1.0


def test_microversion_parsing():
    assert microversion.requested({}, "volume") == (3, 0)
    assert microversion.requested(
        {"openstack-api-version": "volume 3.42"}, "volume") == (3, 42)
    assert microversion.requested(
        {"openstack-api-version": "volume latest"}, "volume") == (3, 71)
    assert microversion.requested(
        {"x-openstack-nova-api-version": "2.89"}, "compute") == (2, 89)
    with pytest.raises(ApiError) as error:
        microversion.requested({"openstack-api-version": "volume 4.0"},
                               "volume")
    assert error.value.code == 406
    with pytest.raises(ApiError) as error:
        microversion.requested({"openstack-api-version": "volume x"},
                               "volume")
    assert error.value.code == 400


def test_router_prefers_earlier_literal_routes():
    router = Router()
    router.add("GET", "/v3/volumes/detail", "detail", "volume")
    router.add("GET", "/v3/{project}/volumes", "list", "volume")
    route, params = router.find("GET", "/v3/volumes/detail")
    assert route.handler == "detail" and params == {}
    route, params = router.find("GET", "/v3/p1/volumes")
    assert route.handler == "list" and params == {"project": "p1"}
    with pytest.raises(ApiError) as error:
        router.find("DELETE", "/v3/p1/volumes")
    assert error.value.code == 405
    with pytest.raises(ApiError) as error:
        router.find("GET", "/elsewhere")
    assert error.value.code == 404


def test_config_ids_are_stable_and_passwords_hidden():
    one = EmulatorConfig({"servers": ["a", "b"]})
    two = EmulatorConfig({"servers": {"a": {}, "b": {}}})
    assert one.servers == two.servers
    assert "demo-password" not in repr(one)


def test_config_refuses_a_user_without_password():
    with pytest.raises(ConfigError) as error:
        EmulatorConfig({"users": {"x": {"project": "demo"}}}, "e.yml")
    assert "e.yml" in str(error.value) and "password" in str(error.value)


def test_clouds_yaml_points_at_keystone():
    config = EmulatorConfig({})
    data = yaml.safe_load(clouds_yaml(config, "http://127.0.0.1:9/", "c"))
    auth = data["clouds"]["c"]["auth"]
    assert auth["auth_url"] == "http://127.0.0.1:9/identity"
    assert (auth["username"], auth["project_name"]) == ("demo", "demo")


def test_unreadable_config_is_a_clear_error(tmp_path, capsys):
    assert main(["clouds-yaml", "--config", str(tmp_path / "missing.yml"),
                 "--url", "http://x:1"]) == 2
    assert "cannot read emulator config" in capsys.readouterr().err


def test_servers_have_their_own_compute_host_unless_told():
    config = EmulatorConfig({"servers": {"a": {}, "b": {"host": "rack1"},
                                         "c": {"host": "rack1"}}})
    hosts = {config.servers[sid]: host for sid, host in config.hosts.items()}
    assert hosts == {"a": "compute-a", "b": "rack1", "c": "rack1"}
    assert config.find_server("a") == config.server_id("a")
    assert config.find_server(config.server_id("b")) == config.server_id("b")
    assert config.find_server("nobody") is None


def test_power_command_and_rpc_timeout():
    config = EmulatorConfig({"power_command": ["/bin/power", "--x"],
                             "rpc_timeout": 2})
    assert (config.power_command, config.rpc_timeout) == (
        ["/bin/power", "--x"], 2)
    assert EmulatorConfig({}).power_command is None
    assert EmulatorConfig({}).latency["stop"] > 0
    with pytest.raises(ConfigError) as error:
        EmulatorConfig({"power_command": [1, 2]}, "e.yml")
    assert "power_command" in str(error.value)
    with pytest.raises(ConfigError):
        EmulatorConfig({"rpc_timeout": "soon"})
    with pytest.raises(ConfigError):
        EmulatorConfig({"latency": {"stop": -1}})


def test_power_errors_and_stuck_stops_by_server():
    faults = Faults({"power_errors": [{"operation": "stop",
                                       "server": "node2", "count": 1}],
                     "stuck": [{"operation": "start", "seconds": 3}]},
                    servers={"s2": "node2"})
    assert not faults.power_fails("start", "s2")
    assert not faults.power_fails("stop", "s1")
    assert faults.power_fails("stop", "s2")
    assert not faults.power_fails("stop", "s2")
    assert faults.stuck("start", {}, "s1") == 3.0
    assert faults.stuck("stop", {}, "s1") == 0.0
    with pytest.raises(FaultError):
        faults.replace({"power_errors": [{"operation": "attach"}]})
    with pytest.raises(FaultError):
        faults.replace({"stuck": [{"operation": "stop", "name": "db*"}]})


def test_regions_and_the_servers_in_each():
    config = EmulatorConfig({"regions": ["RegionOne", "RegionTwo"],
                             "servers": {"a": {}, "b": {"region":
                                                        "RegionTwo"}}})
    assert (config.regions, config.region) == (["RegionOne", "RegionTwo"],
                                               "RegionOne")
    two = config.in_region("RegionTwo")
    assert (two.region, list(two.servers.values())) == ("RegionTwo", ["b"])
    assert list(two.hosts) == list(two.servers)
    assert list(config.in_region("RegionOne").servers.values()) == ["a"]
    # The whole config is untouched by a region's view.
    assert sorted(config.servers.values()) == ["a", "b"]
    assert EmulatorConfig({"region": "Mars"}).regions == ["Mars"]
    for bad in ({"regions": ["R1", "R1"]}, {"regions": [1]},
                {"servers": {"a": {"region": "Elsewhere"}}}):
        with pytest.raises(ConfigError):
            EmulatorConfig(bad)
    with pytest.raises(ConfigError):
        config.in_region("RegionNine")


def test_clouds_yaml_names_a_region():
    config = EmulatorConfig({"regions": ["RegionOne", "RegionTwo"]})
    for region, wanted in ((None, "RegionOne"), ("RegionTwo", "RegionTwo")):
        data = yaml.safe_load(clouds_yaml(config, "http://h:9", "c", region))
        assert data["clouds"]["c"]["region_name"] == wanted
    with pytest.raises(ConfigError):
        clouds_yaml(config, "http://h:9", "c", "RegionNine")


def test_clouds_yaml_command_takes_a_region(tmp_path, capsys):
    path = tmp_path / "emulator.yml"
    path.write_text("regions: [RegionOne, RegionTwo]\n")
    assert main(["clouds-yaml", "--config", str(path), "--url", "http://h:9",
                 "--region", "RegionTwo"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["clouds"]["blockmover-cloud"]["region_name"] == "RegionTwo"


def test_state_from_before_regions_is_the_first_regions(tmp_path):
    old = {"volumes": {"v1": {"id": "v1"}}, "quotas": {"p": {"volumes": 3}},
           "tokens": {"h": {"user": "u"}}, "servers": {}, "services": {}}
    (tmp_path / "state.json").write_text(json.dumps(old))
    store = Store(None, str(tmp_path), ["RegionOne", "RegionTwo"])
    one, two = store.region("RegionOne"), store.region("RegionTwo")
    assert list(one.volumes) == ["v1"]
    assert one.quotas == {"p": {"volumes": 3}}
    assert (two.volumes, two.quotas) == ({}, {})
    assert store.state["tokens"] == {"h": {"user": "u"}}
    assert sorted(store.state) == ["regions", "tokens"]
