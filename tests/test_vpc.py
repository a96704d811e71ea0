"""VpcConfig: the operator's subnets and security groups (--vpc-file), checked and answered as Lambda does, and
the egress rules a function in a VPC gets (kindling/network/vpc.py, docs/vpc.md)."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kindling.network.vpc import VpcFileError, Vpcs
from tests.adversarial import Bystander
from tests.conftest import HELLO, ROLE, Server, free_port, make_zip, unique
from tests.recorded import assert_like, error_of, recorded

VPC_FILE = """
[vpcs.vpc-0a1]
cidr = "10.0.0.0/16"
[vpcs.vpc-0b2]
cidr = "172.16.0.0/16"

[subnets.subnet-0a1]
vpc = "vpc-0a1"
cidr = "10.0.1.0/24"
routes = ["198.18.0.0/15"]
[subnets.subnet-0a2]
vpc = "vpc-0a1"
cidr = "10.0.2.0/24"
routes = ["198.18.0.0/15"]
[subnets.subnet-0b1]
vpc = "vpc-0b2"
cidr = "172.16.1.0/24"

[security_groups.sg-0a1]
vpc = "vpc-0a1"
egress = [{cidr = "198.18.0.0/15", protocol = "tcp", from_port = 5432}]
[security_groups.sg-0a2]
vpc = "vpc-0a1"
egress = [{cidr = "0.0.0.0/0", protocol = "-1"}]
[security_groups.sg-0b1]
vpc = "vpc-0b2"
"""
A = {"SubnetIds": ["subnet-0a1"], "SecurityGroupIds": ["sg-0a1"]}
A_OUT = {**A, "VpcId": "vpc-0a1", "Ipv6AllowedForDualStack": False}
CLEARED = {"SubnetIds": [], "SecurityGroupIds": [], "VpcId": "", "Ipv6AllowedForDualStack": False}
VPC_TEST = "test_vpc_config"


@pytest.fixture(scope="module")
def vpc_server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="kindling-vpc-") as tmp:
        path = Path(tmp) / "vpc.toml"
        path.write_text(VPC_FILE)
        srv = Server(Path(tmp) / "data", vpc_file=str(path)).start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def lam(vpc_server: Server):  # noqa: ANN201 - a botocore client
    return vpc_server.client()


@pytest.fixture
def create(lam):  # noqa: ANN001, ANN201
    made: list[str] = []

    def create(**kwargs: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"FunctionName": unique("vpc"), "Runtime": "python3.12", "Role": ROLE,
                                "Handler": "app.handler", "Code": {"ZipFile": make_zip({"app.py": HELLO})}}
        args.update(kwargs)
        made.append(args["FunctionName"])
        return lam.create_function(**args)  # type: ignore[no-any-return]

    yield create
    for name in made:
        try:
            lam.delete_function(FunctionName=name)
        except ClientError:
            pass


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    r = exc.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


# -- answered as AWS answers ------------------------------------------------------------------------------
def test_vpc_config_lifecycle_matches_aws(lam, create):
    # Given the recorded test's function: Environment, 256 MB, 5 s, in one subnet and security group
    name = unique("vpc")
    kwargs = dict(FunctionName=name, Handler="handler.handler", MemorySize=256, Timeout=5,
                  Environment={"Variables": {}}, Code={"ZipFile": make_zip({"handler.py": HELLO})})
    # When it is created, read, moved to another subnet and group, and taken out of its VPC with empty lists
    made = create(**kwargs, VpcConfig=A)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    got = lam.get_function(FunctionName=name)
    updated = lam.update_function_configuration(
        FunctionName=name, VpcConfig={"SubnetIds": ["subnet-0a2"], "SecurityGroupIds": ["sg-0a2"]})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    got_updated = lam.get_function(FunctionName=name)
    cleared = lam.update_function_configuration(FunctionName=name, VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
    got_cleared = lam.get_function(FunctionName=name)
    # Then every answer has AWS's shape, VpcConfig included
    assert_like(made, recorded("lambda_api", VPC_TEST, "create_response")["CreateFunctionResponse"])
    assert_like(got, recorded("lambda_api", VPC_TEST, "get_function_response"))
    assert_like(updated, recorded("lambda_api", VPC_TEST, "update_vpcconfig_update_response"))
    assert_like(got_updated, recorded("lambda_api", VPC_TEST, "update_vpcconfig_get_function_response"))
    assert_like(cleared, recorded("lambda_api", VPC_TEST, "delete_vpcconfig_update_response"))
    assert_like(got_cleared, recorded("lambda_api", VPC_TEST, "delete_vpcconfig_get_function_response"))
    # and the values are the ones asked for
    assert made["VpcConfig"] == A_OUT
    assert got_updated["Configuration"]["VpcConfig"] == {"SubnetIds": ["subnet-0a2"], "SecurityGroupIds": ["sg-0a2"],
                                                         "VpcId": "vpc-0a1", "Ipv6AllowedForDualStack": False}
    assert got_cleared["Configuration"]["VpcConfig"] == CLEARED


def test_functions_without_vpc_config_show_none(lam, create):
    out = create()
    assert "VpcConfig" not in out
    assert "VpcConfig" not in lam.get_function_configuration(FunctionName=out["FunctionName"])
    # an update that does not name VpcConfig leaves it as it is
    vpc = create(VpcConfig=A)
    lam.update_function_configuration(FunctionName=vpc["FunctionName"], Description="still in the VPC")
    assert lam.get_function_configuration(FunctionName=vpc["FunctionName"])["VpcConfig"] == A_OUT


def test_versions_and_lists_carry_it(lam, create):
    # Given a VPC function with a published version
    name = create(VpcConfig={**A, "Ipv6AllowedForDualStack": True})["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)
    # When $LATEST leaves the VPC
    lam.update_function_configuration(FunctionName=name, VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
    # Then the version keeps the configuration it was published with; $LATEST shows it cleared
    with_v6 = {**A_OUT, "Ipv6AllowedForDualStack": True}
    assert v1["VpcConfig"] == with_v6
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["VpcConfig"] == with_v6
    listed = {v["Version"]: v["VpcConfig"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]}
    assert listed == {"$LATEST": CLEARED, "1": with_v6}
    every = [f for f in lam.list_functions(FunctionVersion="ALL")["Functions"] if f["FunctionName"] == name]
    assert {f["Version"]: f["VpcConfig"] for f in every} == listed
    latest = [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == name]
    assert [f["VpcConfig"] for f in latest] == [CLEARED]


def test_a_vpc_function_runs(lam, create):
    name = create(VpcConfig={"SubnetIds": ["subnet-0a1", "subnet-0a2"], "SecurityGroupIds": ["sg-0a1", "sg-0a2"]})[
        "FunctionName"]
    out = lam.invoke(FunctionName=name, Payload=b'{"name": "vpc"}')
    assert out["StatusCode"] == 200 and "FunctionError" not in out
    assert json.loads(out["Payload"].read()) == {"hello": "vpc"}


# -- refused as AWS refuses ---------------------------------------------------------------------------------
def _expected(test: str, key: str, **ids: str) -> tuple[str, str, int]:
    rec = recorded("lambda_api", test, key)
    message = rec["Error"]["Message"]
    for placeholder, value in ids.items():
        message = message.replace(f"<{placeholder}>", value)
    return rec["Error"]["Code"], message, rec["ResponseMetadata"]["HTTPStatusCode"]


def test_unknown_and_malformed_ids_answer_as_aws(lam, create):
    cases = [
        ({"SubnetIds": ["subnet-0ff"], "SecurityGroupIds": ["sg-0a1"]},
         _expected("test_invalid_vpc_config_subnet", "create-response-non-existent-subnet-id",
                   subnet_id_1="subnet-0ff")),
        ({"SubnetIds": ["subnet-0a1"], "SecurityGroupIds": ["sg-0ff"]},
         _expected("test_invalid_vpc_config_security_group", "create-response-non-existent-security-group",
                   security_group_id_1="sg-0ff")),
        ({"SubnetIds": ["Subnet-X"]},
         _expected("test_invalid_vpc_config_subnet", "create-response-invalid-format-subnet-id",
                   subnet_id_2="Subnet-X")),
        ({"SecurityGroupIds": ["sg_x"]},
         _expected("test_invalid_vpc_config_security_group", "create-response-invalid-format-security-group",
                   security_group_id_2="sg_x")),
    ]
    for vpc_config, expected in cases:
        with pytest.raises(ClientError) as exc:
            create(VpcConfig=vpc_config)
        assert _error(exc) == expected, vpc_config
    # the full error body too
    with pytest.raises(ClientError) as exc:
        create(VpcConfig={"SubnetIds": ["subnet-0ff"], "SecurityGroupIds": ["sg-0a1"]})
    assert_like(error_of(exc.value), recorded("lambda_api", "test_invalid_vpc_config_subnet",
                                              "create-response-non-existent-subnet-id"))


@pytest.mark.parametrize("vpc_config, message", [
    ({"SubnetIds": ["subnet-0a1"]}, "SubnetIds and SecurityIds must coexist or be both empty list."),
    ({"SecurityGroupIds": ["sg-0a1"], "SubnetIds": []}, "SubnetIds and SecurityIds must coexist or be both empty "
                                                        "list."),
    ({"SubnetIds": ["subnet-0a1", "subnet-0b1"], "SecurityGroupIds": ["sg-0a1"]},
     "Subnets are required to be in the same VPC."),
    ({"SubnetIds": ["subnet-0a1"], "SecurityGroupIds": ["sg-0a1", "sg-0b1"]},
     "Security Groups are required to be in the same VPC."),
    ({"SubnetIds": ["subnet-0b1"], "SecurityGroupIds": ["sg-0a1"]},
     "Security Groups are required to be in the same VPC."),
])
def test_inconsistent_vpc_configs_are_refused(create, vpc_config, message):
    with pytest.raises(ClientError) as exc:
        create(VpcConfig=vpc_config)
    assert _error(exc) == ("InvalidParameterValueException", message, 400)


def test_a_refused_update_changes_nothing(vpc_server, lam, create):
    name = create(VpcConfig=A)["FunctionName"]
    before = lam.get_function_configuration(FunctionName=name)
    raw = vpc_server.client(parameter_validation=False)
    for bad in ({"SubnetIds": ["subnet-0ff"], "SecurityGroupIds": ["sg-0a1"]}, {"SubnetIds": ["subnet-0a1"]},
                {"SubnetIds": ["subnet-0b1"], "SecurityGroupIds": ["sg-0b1"], "Ipv6AllowedForDualStack": "yes"}):
        with pytest.raises(ClientError):
            raw.update_function_configuration(FunctionName=name, VpcConfig=bad)
    after = lam.get_function_configuration(FunctionName=name)
    assert after["VpcConfig"] == A_OUT and after["RevisionId"] == before["RevisionId"]


# -- hostile input ----------------------------------------------------------------------------------------
def test_oversized_malformed_and_duplicated_vpc_configs(vpc_server, create):
    raw = vpc_server.client(parameter_validation=False)  # the server's own checks answer, not botocore's
    many_subnets = [f"subnet-{i:x}" for i in range(17)]
    cases: list[tuple[Any, str, str]] = [
        ({"SubnetIds": many_subnets, "SecurityGroupIds": ["sg-0a1"]}, "ValidationException",
         f"1 validation error detected: Value '[{', '.join(many_subnets)}]' at 'vpcConfig.subnetIds' failed to "
         "satisfy constraint: Member must have length less than or equal to 16"),
        ({"SubnetIds": ["subnet-0a1"], "SecurityGroupIds": [f"sg-{i}" for i in range(6)]}, "ValidationException",
         "1 validation error detected: Value '[sg-0, sg-1, sg-2, sg-3, sg-4, sg-5]' at 'vpcConfig.securityGroupIds' "
         "failed to satisfy constraint: Member must have length less than or equal to 5"),
        ({"SubnetIds": ["subnet-" + "a" * 1018], "SecurityGroupIds": ["sg-0a1"]}, "ValidationException",
         "Member must have length less than or equal to 1024"),
        ({"SubnetIds": ["subnet-" + "a" * 1_000_000], "SecurityGroupIds": ["sg-0a1"]}, "ValidationException",
         "Member must have length less than or equal to 1024"),
        ({"SubnetIds": ["subnet-"], "SecurityGroupIds": ["sg-"]}, "InvalidParameterValueException",
         "The subnet ID 'subnet-' does not exist"),
    ]
    for vpc_config, code, message in cases:
        with pytest.raises(ClientError) as exc:
            raw.create_function(FunctionName=unique("vpc"), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": HELLO})}, VpcConfig=vpc_config)
        got_code, got_message, status = _error(exc)
        assert (got_code, status) == (code, 400) and message in got_message, (str(vpc_config)[:100], got_message[:300])
    # JSON no SDK would send: wrong types, nulls (sent as they are, signed)
    wire: list[tuple[Any, str, str]] = [
        ({"SubnetIds": "subnet-0a1", "SecurityGroupIds": ["sg-0a1"]}, "SerializationException", ""),
        ({"SubnetIds": [7], "SecurityGroupIds": ["sg-0a1"]}, "SerializationException", ""),
        ({"SubnetIds": [["subnet-0a1"]], "SecurityGroupIds": ["sg-0a1"]}, "SerializationException", ""),
        ({"SubnetIds": {"subnet-0a1": 1}, "SecurityGroupIds": ["sg-0a1"]}, "SerializationException", ""),
        ({"SubnetIds": ["subnet-0a1"], "SecurityGroupIds": ["sg-0a1"], "Ipv6AllowedForDualStack": "true"},
         "SerializationException", ""),
        ("subnet-0a1", "SerializationException", ""),
        ([A], "SerializationException", ""),
        ({"SubnetIds": [None], "SecurityGroupIds": ["sg-0a1"]}, "InvalidParameterValueException",
         "The subnet ID 'null' does not exist"),
        ({"SubnetIds": ["subnet-0a1"], "SecurityGroupIds": [None, "sg-0a1"]}, "InvalidParameterValueException",
         "The security group 'null' does not exist"),
    ]
    for vpc_config, code, message in wire:
        status, got_code, got_message = _create_raw(vpc_server, vpc_config)
        assert (got_code, status) == (code, 400) and message in got_message, (str(vpc_config)[:100], got_message[:300])
    # Repeated ids count once
    out = create(VpcConfig={"SubnetIds": ["subnet-0a1", "subnet-0a2", "subnet-0a1"],
                            "SecurityGroupIds": ["sg-0a1", "sg-0a1"]})
    assert out["VpcConfig"]["SubnetIds"] == ["subnet-0a1", "subnet-0a2"]
    assert out["VpcConfig"]["SecurityGroupIds"] == ["sg-0a1"]


def _create_raw(server: Server, vpc_config: Any) -> tuple[int, str, str]:
    body = {"FunctionName": unique("vpc"), "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
            "Code": {"ZipFile": base64.b64encode(make_zip({"app.py": HELLO})).decode()}, "VpcConfig": vpc_config}
    req = server.signed_request("POST", "/2015-03-31/functions", json.dumps(body).encode(),
                                {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, "", ""
    except urllib.error.HTTPError as e:
        answer = json.loads(e.read() or b"{}")
        return e.code, e.headers.get("X-Amzn-ErrorType", "").split(":")[0], answer.get("message") or \
            answer.get("Message", "")


def test_concurrent_bad_vpc_configs_cost_only_their_senders(vpc_server):
    # Given a bystander function answering on the same server
    bystander = Bystander(vpc_server)
    raw = vpc_server.client(parameter_validation=False, max_pool_connections=16)
    code = make_zip({"app.py": HELLO})
    big = {"SubnetIds": ["subnet-" + "z" * 1017] * 16, "SecurityGroupIds": ["sg-" + "Z" * 1021] * 5}

    def attack(i: int) -> str:
        config = big if i % 2 else {"SubnetIds": [f"subnet-{i}x"] * 16, "SecurityGroupIds": ["sg-0a1"] * 5}
        try:
            raw.create_function(FunctionName=unique("hostile"), Runtime="python3.12", Role=ROLE,
                                Handler="app.handler", Code={"ZipFile": code}, VpcConfig=config)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "created"

    try:
        # When 64 oversized or unknown VpcConfigs arrive 16 at a time (bounded: a few seconds)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(attack, range(64)))
        # Then each is refused with its own error, and the bystander keeps its latency
        assert set(codes) == {"InvalidParameterValueException"}, set(codes)
        assert time.monotonic() - start < 30
        bystander.check()
    finally:
        bystander.delete()


# -- the operator's file ----------------------------------------------------------------------------------
BAD_FILES = {
    "bad cidr": ('[vpcs.vpc-1]\ncidr = "10.0.0.300/16"\n', "vpc-1.cidr: '10.0.0.300/16' is not a CIDR"),
    "host bits": ('[vpcs.vpc-1]\ncidr = "10.0.0.1/16"\n', "vpc-1.cidr: '10.0.0.1/16' is not a CIDR"),
    "port out of range": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[security_groups.sg-1]\nvpc = "vpc-1"\n'
                          'egress = [{cidr = "10.0.0.0/8", protocol = "tcp", from_port = 70000}]\n',
                          "sg-1.egress[0]: from_port and to_port must be ports, 0 to 65535"),
    "ports reversed": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[security_groups.sg-1]\nvpc = "vpc-1"\n'
                       'egress = [{cidr = "10.0.0.0/8", protocol = "udp", from_port = 90, to_port = 80}]\n',
                       "sg-1.egress[0]: from_port 90 is above to_port 80"),
    "unknown protocol": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[security_groups.sg-1]\nvpc = "vpc-1"\n'
                         'egress = [{cidr = "10.0.0.0/8", protocol = "sctp", from_port = 1}]\n',
                         "sg-1.egress[0].protocol: 'sctp' is not one of tcp, udp, icmp, -1 (all)"),
    "ports on all traffic": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[security_groups.sg-1]\nvpc = "vpc-1"\n'
                             'egress = [{cidr = "10.0.0.0/8", protocol = "-1", from_port = 1}]\n',
                             "sg-1.egress[0]: protocol -1 takes no ports"),
    "unknown key": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\nipv6 = true\n', "vpc-1: unknown key 'ipv6'"),
    "bad id": ('[subnets.net-1]\nvpc = "vpc-1"\ncidr = "10.0.0.0/24"\n', "subnets: 'net-1' is not a subnet id"),
    "unknown vpc": ('[subnets.subnet-1]\nvpc = "vpc-9"\ncidr = "10.0.0.0/24"\n',
                    "subnet-1.vpc: 'vpc-9' is not a VPC of the file"),
    "subnet outside its vpc": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[subnets.subnet-1]\nvpc = "vpc-1"\n'
                               'cidr = "10.1.0.0/24"\n', "subnet-1.cidr: 10.1.0.0/24 is not inside vpc-1's range"),
    "too many rules": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[security_groups.sg-1]\nvpc = "vpc-1"\negress = ['
                       + ", ".join(['{cidr = "10.0.0.0/8", protocol = "icmp"}'] * 61) + "]\n",
                       "sg-1.egress: more than 60 entries"),
    "routes not a list": ('[vpcs.vpc-1]\ncidr = "10.0.0.0/16"\n[subnets.subnet-1]\nvpc = "vpc-1"\n'
                          'cidr = "10.0.0.0/24"\nroutes = "0.0.0.0/0"\n', "subnet-1.routes: expected a list"),
    "not toml": ("[vpcs\n", "not valid TOML"),
    "huge": ("# " + "x" * (1 << 20) + "\n", "larger than 1048576 bytes"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_malformed_files_are_refused_with_where_and_why(tmp_path, kind):
    text, message = BAD_FILES[kind]
    path = tmp_path / "vpc.toml"
    path.write_text(text)
    with pytest.raises(VpcFileError) as exc:
        Vpcs.load(str(path))
    assert str(exc.value).startswith(f"VPC file {path}: ") and message in str(exc.value), str(exc.value)[:300]


@pytest.mark.parametrize("data", [
    [], {"vpcs": []}, {"vpcs": {"vpc-1": "10.0.0.0/16"}}, {"vpcs": {"vpc-1": {"cidr": 10}}},
    {"vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}}, "subnets": {"subnet-1": {"vpc": ["vpc-1"], "cidr": "10.0.0.0/24"}}},
    {"vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}}, "security_groups": {"sg-1": {"vpc": "vpc-1", "egress": [
        {"cidr": "10.0.0.0/8", "protocol": {"tcp": 1}, "from_port": 1}]}}},
    {"vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}}, "security_groups": {"sg-1": {"vpc": "vpc-1", "egress": [
        {"cidr": "10.0.0.0/8", "protocol": "tcp", "from_port": 80.0}]}}},
    {"vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}}, "security_groups": {"sg-1": {"vpc": "vpc-1", "egress": [
        {"cidr": "10.0.0.0/8", "protocol": "tcp", "from_port": True}]}}},
    {"vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}}, "security_groups": {"sg-1": {"vpc": "vpc-1", "egress": ["x"]}}},
    {"vpcs": {"vpc-" + "1" * 65: {"cidr": "10.0.0.0/16"}}},
])
def test_json_of_the_wrong_shape_is_refused(tmp_path, data):
    path = tmp_path / "vpc.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VpcFileError):
        Vpcs.load(str(path))


def test_a_malformed_file_stops_the_server_at_start(tmp_path):
    # Given a file with an unknown protocol, and one that is missing
    bad = tmp_path / "vpc.json"
    bad.write_text(json.dumps({"vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}}, "security_groups": {
        "sg-1": {"vpc": "vpc-1", "egress": [{"cidr": "10.0.0.0/8", "protocol": "gre"}]}}}))
    for path, message in ((bad, "sg-1.egress[0].protocol: 'gre' is not one of tcp, udp, icmp, -1 (all)"),
                          (tmp_path / "missing.toml", "cannot be read: No such file or directory")):
        # When the server starts with it, Then it exits at once, saying where and why
        proc = subprocess.run([sys.executable, "-m", "kindling.cli.main", "serve", "--port", str(free_port()),
                               "--data-dir", str(tmp_path / "data"), "--vpc-file", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert f"Error: VPC file {path}: {message}" in proc.stderr, proc.stderr[-2000:]


def test_a_removed_subnet_fails_closed(tmp_path):
    # Given a VPC function, and a server restarted after the operator removed its subnet from the file
    path = tmp_path / "vpc.toml"
    path.write_text(VPC_FILE)
    srv = Server(tmp_path / "data", vpc_file=str(path)).start()
    try:
        lam = srv.client()
        name = unique("vpc")
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": HELLO})}, VpcConfig=A)
        srv.stop()
        path.write_text(VPC_FILE.replace("[subnets.subnet-0a1]", "[subnets.subnet-0a9]"))
        srv.start()
        # When it is invoked, Then it does not run (never with rules other than its own): Lambda's 502 for it
        with pytest.raises(ClientError) as exc:
            lam.invoke(FunctionName=name, Payload=b"{}")
        code, _, status = _error(exc)
        assert (code, status) == ("InvalidSubnetIDException", 502)
        # and its configuration still reads as it was
        assert lam.get_function_configuration(FunctionName=name)["VpcConfig"] == A_OUT
    finally:
        srv.stop()


# -- the rules a VPC function gets ------------------------------------------------------------------------
EGRESS_FILE = {
    "vpcs": {"vpc-1": {"cidr": "10.0.0.0/16"}},
    "subnets": {
        "subnet-public": {"vpc": "vpc-1", "cidr": "10.0.1.0/24", "routes": ["0.0.0.0/0", "::/0"]},
        "subnet-lab": {"vpc": "vpc-1", "cidr": "10.0.2.0/24", "routes": ["198.18.0.0/15"]},
        "subnet-local": {"vpc": "vpc-1", "cidr": "10.0.3.0/24"},
    },
    "security_groups": {
        "sg-web": {"vpc": "vpc-1", "egress": [{"cidr": "0.0.0.0/0", "protocol": "tcp", "from_port": 443},
                                              {"cidr": "::/0", "protocol": "tcp", "from_port": 443}]},
        "sg-db": {"vpc": "vpc-1", "egress": [{"cidr": "198.18.5.0/24", "protocol": "tcp", "from_port": 5432,
                                              "to_port": 5433},
                                             {"cidr": "10.0.0.0/8", "protocol": "udp", "from_port": 53}]},
        "sg-all": {"vpc": "vpc-1", "egress": [{"cidr": "0.0.0.0/0", "protocol": "all"}]},
        "sg-none": {"vpc": "vpc-1"},
    },
}


def _egress(subnets: list[str], groups: list[str], ipv6: bool = False) -> list[dict[str, Any]] | None:
    vpcs = Vpcs.parse(EGRESS_FILE)
    return vpcs.egress(vpcs.vpc_config({"SubnetIds": subnets, "SecurityGroupIds": groups,
                                        "Ipv6AllowedForDualStack": ipv6}))


def _rule(cidr: str, protocol: str, ports: tuple[int, int] = (-1, -1)) -> dict[str, Any]:
    return {"cidr": cidr, "protocol": protocol, "from_port": ports[0], "to_port": ports[1]}


def test_egress_is_the_groups_rules_within_the_subnets_routes():
    vpcs = Vpcs.parse(EGRESS_FILE)
    # no VPC: the server's default policy
    assert vpcs.egress(None) is None and vpcs.egress(vpcs.vpc_config({})) is None
    # a subnet routing to the internet: the group's rules as written (IPv6 only when dual-stack is allowed)
    assert _egress(["subnet-public"], ["sg-web"]) == [_rule("0.0.0.0/0", "tcp", (443, 443))]
    assert _egress(["subnet-public"], ["sg-web"], ipv6=True) == [_rule("0.0.0.0/0", "tcp", (443, 443)),
                                                                 _rule("::/0", "tcp", (443, 443))]
    # a subnet routing to its VPC and a lab range: the internet rule shrinks to them, as on Lambda without NAT
    assert _egress(["subnet-lab"], ["sg-web", "sg-db"]) == [
        _rule("10.0.0.0/16", "tcp", (443, 443)), _rule("10.0.0.0/16", "udp", (53, 53)),
        _rule("198.18.0.0/15", "tcp", (443, 443)), _rule("198.18.5.0/24", "tcp", (5432, 5433))]
    # several subnets: only what every one of them routes to (the rules do not depend on where it lands)
    assert _egress(["subnet-public", "subnet-local"], ["sg-all"]) == [_rule("10.0.0.0/16", "-1")]
    # a group with no rules: nothing but Kindling's own API
    assert _egress(["subnet-public"], ["sg-none"]) == []


def test_the_file_may_be_json_or_toml(tmp_path):
    (tmp_path / "vpc.json").write_text(json.dumps(EGRESS_FILE))
    (tmp_path / "vpc.toml").write_text(VPC_FILE)
    assert set(Vpcs.load(str(tmp_path / "vpc.json")).groups) == set(EGRESS_FILE["security_groups"])
    assert set(Vpcs.load(str(tmp_path / "vpc.toml")).subnets) == {"subnet-0a1", "subnet-0a2", "subnet-0b1"}
    assert Vpcs.load("").subnets == {}


def test_the_documented_example_is_a_valid_file(tmp_path):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "vpc.md").read_text()
    (tmp_path / "vpc.toml").write_text(doc.split("```toml\n", 1)[1].split("```", 1)[0])
    vpcs = Vpcs.load(str(tmp_path / "vpc.toml"))
    config = vpcs.vpc_config({"SubnetIds": ["subnet-0a1b2c3d"], "SecurityGroupIds": ["sg-0a1b2c3d"]})
    assert config["VpcId"] == "vpc-0a1b2c3d"
    assert {(r["cidr"], r["protocol"]) for r in vpcs.egress(config) or []} == {
        ("10.0.0.0/16", "-1"), ("10.0.0.0/16", "icmp"), ("10.0.0.0/16", "udp"), ("198.18.0.0/15", "-1"),
        ("198.18.5.0/24", "tcp")}


# -- enforced (needs the network plane: veth, bridge and nftables per environment) ---------------------------
LAB = "198.18.77"  # the test's own namespace: host end .1, lab end .2 (a /30 of the benchmarking range)
PROBE = """import socket
def handler(event, context):
    out = {}
    for port in event["ports"]:
        try:
            with socket.create_connection((event["host"], port), timeout=1) as s:
                out[str(port)] = s.recv(2).decode()
        except OSError as e:
            out[str(port)] = type(e).__name__
    return out
"""
LISTENER = """import socket, sys, threading
from pyroute2 import netns
netns.setns(sys.argv[1])
def serve(port):
    with socket.create_server(("0.0.0.0", port)) as s:
        while True:
            c, _ = s.accept()
            c.sendall(b"ok")
            c.close()
for port in (5432, 5433):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lab_namespace() -> Iterator[str]:
    """A network namespace of the test's own at LAB.2, reached from the host over a veth (LAB.1), with TCP
    services on 5432 and 5433 answering "ok". Removed (links, namespace, listener) even when the test fails."""
    from pyroute2 import IPRoute, NetNS, netns

    tag = uuid.uuid4().hex[:6]
    name, host_end, lab_end = f"kvpc-{tag}", f"kv{tag}h", f"kv{tag}n"
    listener: subprocess.Popen[str] | None = None
    netns.create(name)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=host_end, kind="veth", peer=lab_end)
            host = ipr.link_lookup(ifname=host_end)[0]
            ipr.addr("add", index=host, address=f"{LAB}.1", prefixlen=30)
            ipr.link("set", index=host, state="up")
            ipr.link("set", index=ipr.link_lookup(ifname=lab_end)[0], net_ns_fd=name)
        with NetNS(name) as ns:
            lab = ns.link_lookup(ifname=lab_end)[0]
            ns.addr("add", index=lab, address=f"{LAB}.2", prefixlen=30)
            ns.link("set", index=lab, state="up")
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=f"{LAB}.1")
        listener = subprocess.Popen([sys.executable, "-c", LISTENER, name], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield name
    finally:
        if listener is not None:
            listener.kill()
            listener.communicate()  # waits, and closes its pipes
        with IPRoute() as ipr:
            for link in ipr.link_lookup(ifname=host_end):
                ipr.link("del", index=link)
        netns.remove(name)


def test_a_vpc_function_reaches_only_what_its_rule_allows(tmp_path):
    # Given a security group allowing tcp/5432 to the test's namespace only, in a subnet that routes there
    vpc_file = tmp_path / "vpc.toml"
    vpc_file.write_text(f"""
[vpcs.vpc-1]
cidr = "10.99.0.0/16"
[subnets.subnet-1]
vpc = "vpc-1"
cidr = "10.99.1.0/24"
routes = ["{LAB}.0/30"]
[security_groups.sg-1]
vpc = "vpc-1"
egress = [{{cidr = "{LAB}.2/32", protocol = "tcp", from_port = 5432}}]
""")
    with lab_namespace():
        srv = Server(tmp_path / "data", vpc_file=str(vpc_file)).start()
        try:
            lam = srv.client()
            code = {"ZipFile": make_zip({"app.py": PROBE})}
            names = {kind: unique(kind) for kind in ("vpc", "open")}
            lam.create_function(FunctionName=names["vpc"], Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code=code, Timeout=10, VpcConfig={"SubnetIds": ["subnet-1"],
                                                                  "SecurityGroupIds": ["sg-1"]})
            lam.create_function(FunctionName=names["open"], Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code=code, Timeout=10)
            event = json.dumps({"host": f"{LAB}.2", "ports": [5432, 5433]}).encode()

            def probe(kind: str) -> dict[str, str]:
                return json.loads(lam.invoke(FunctionName=names[kind], Payload=event)["Payload"].read())

            # When each tries both ports, Then the VPC function reaches only the one its rule allows
            vpc, open_ = probe("vpc"), probe("open")
            assert vpc["5432"] == "ok" and vpc["5433"] != "ok", vpc
            # while a function without VpcConfig, under the server's default policy (internet), reaches both
            assert open_ == {"5432": "ok", "5433": "ok"}, open_
            # and taken out of its VPC, the same function reaches both too (its environments are recycled)
            lam.update_function_configuration(FunctionName=names["vpc"],
                                              VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
            lam.get_waiter("function_updated_v2").wait(FunctionName=names["vpc"])
            assert probe("vpc") == {"5432": "ok", "5433": "ok"}
        finally:
            srv.stop()
