"""serve()'s checks, all made before anything is spawned: MII's config forms, device_map rules, ports,
transports; deployment metadata on disk; client() lookups."""

import json
import os
import socket
import stat

import pytest

import mii_core
from mii_core.config.deployment import MIIConfig
from mii_core.serving import metadata
from mii_core.serving.deploy import build_config
from mii_core.config.placement import place_replicas
from support.serving import free_port_block


def no_deployment_started(name):
    return metadata.read_record(name) is None


def test_options_go_to_the_model_first_then_to_the_deployment(tmp_path):
    config = build_config(str(tmp_path), None, None, {"max_length": 64, "deployment_name": "d", "port_number": 40000,
                                                      "replica_num": 2, "enable_restful_api": True})
    assert (config.model_conf.max_length, config.model_conf.replica_num) == (64, 2)
    assert (config.deployment_name, config.port_number, config.enable_restful_api) == ("d", 40000, True)


def test_mii_config_dict_and_keyword_forms_agree(tmp_path):
    by_keywords = build_config(str(tmp_path), None, None, {"deployment_name": "d", "restful_api_port": 28080,
                                                           "tensor_parallel": 1})
    by_mii_config = build_config(None, None, {"deployment_name": "d", "restful_api_port": 28080,
                                              "model_config": {"model_name_or_path": str(tmp_path),
                                                               "tensor_parallel": 1}}, {})
    from_object = build_config(None, None, MIIConfig(**by_mii_config.model_dump(by_alias=True)), {})
    file = tmp_path / "mii.json"
    file.write_text(json.dumps(by_mii_config.model_dump(mode="json", by_alias=True)))
    from_file = build_config(None, None, str(file), {})
    assert by_keywords == by_mii_config == from_object == from_file


def test_default_deployment_name_is_miis(tmp_path):
    config = build_config(str(tmp_path / "Mistral-7B-v0.1"), None, None, {})
    assert config.deployment_name == "Mistral-7B-v0.1-mii-deployment"


@pytest.mark.parametrize("options, message", [
    ({"bogus_option": 1}, "unknown option.*bogus_option.*model options are.*deployment options are"),
    ({"port_number": 0}, "port_number"),
    ({"deployment_name": "../escape"}, "deployment_name"),
    ({"max_queued_requests": 0}, "max_queued_requests"),
])
def test_bad_options_are_refused_by_name(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        mii_core.serve(str(tmp_path), **options)


@pytest.fixture
def hostfile(tmp_path):
    path = tmp_path / "hostfile"
    path.write_text("localhost slots=2\nworker-1 slots=4  # a second machine\n")
    return str(path)


@pytest.mark.parametrize("device_map, replicas, expected", [
    (1, 1, [("localhost", (1,))]),
    ([0], 1, [("localhost", (0,))]),
    ([[0], [1]], 2, [("localhost", (0,)), ("localhost", (1,))]),
    ({"localhost": [[1]], "worker-1": [[3]]}, 2, [("localhost", (1,)), ("worker-1", (3,))]),
    ("auto", 3, [("localhost", (0,)), ("localhost", (1,)), ("worker-1", (0,))]),
])
def test_device_map_forms_place_replicas_as_mii(hostfile, device_map, replicas, expected):
    placements = place_replicas(device_map, replicas, 1, hostfile)
    assert [(p.host, p.devices) for p in placements] == expected


@pytest.mark.parametrize("device_map, replicas, tp, message", [
    ([[0], [1]], 1, 1, "2 device group.*replica_num=1"),
    ([[0, 1]], 1, 1, "has 2 GPU.*tensor_parallel=1"),
    ({"worker-9": [[0]]}, 1, 1, "worker-9.*not in the hostfile"),
    ([5], 1, 1, "GPU 5 on localhost, which has 2 GPU"),
    ([[0], [0]], 2, 1, "GPU 0 on localhost to two replicas"),
    ("auto", 7, 1, "only 6 replica"),
])
def test_device_maps_mii_refuses_are_value_errors(hostfile, device_map, replicas, tp, message):
    with pytest.raises(ValueError, match=message):
        place_replicas(device_map, replicas, tp, hostfile)


def test_device_map_checks_run_before_anything_is_spawned(tmp_path, hostfile):
    with pytest.raises(ValueError, match="device group"):
        mii_core.serve(str(tmp_path), deployment_name="dm", hostfile=hostfile, device_map=[[0], [1]], transports=[])
    assert no_deployment_started("dm")


def test_a_busy_rank_rendezvous_port_is_refused_before_spawning(tmp_path):
    """Under tensor parallelism replica i's ranks meet on torch_dist_port + 100·i (MII's rule)."""
    base, dist_port = free_port_block(6), free_port_block(1)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", dist_port))
        holder.listen()
        with pytest.raises(ValueError, match=f"port {dist_port} on 127.0.0.1 \\(replica 0's rank rendezvous"):
            mii_core.serve(str(tmp_path), deployment_name="tp-busy", tensor_parallel=2, port_number=base,
                           torch_dist_port=dist_port, transports=[], hostfile=str(tmp_path / "none"))
    assert no_deployment_started("tp-busy")


def test_an_unknown_tensor_parallel_launcher_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MII_CORE_TP_LAUNCHER", "mpirun")
    with pytest.raises(ValueError, match="MII_CORE_TP_LAUNCHER='mpirun': choose 'deepspeed' or 'torchrun'"):
        mii_core.serve(str(tmp_path), deployment_name="tp-launcher", tensor_parallel=2, transports=[],
                       port_number=free_port_block(6), hostfile=str(tmp_path / "none"))
    assert no_deployment_started("tp-launcher")


def test_a_port_in_use_is_a_clear_error_before_spawning(tmp_path):
    base = free_port_block(4)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        with pytest.raises(ValueError, match=f"port {base + 1} on 127.0.0.1 \\(replica 0's link\\) is already in use"):
            mii_core.serve(str(tmp_path), deployment_name="busy", port_number=base, transports=[])
    assert no_deployment_started("busy")


def test_ports_that_collide_are_refused(tmp_path):
    with pytest.raises(ValueError, match="would both use port"):
        mii_core.serve(str(tmp_path), port_number=40000, restful_api_port=40001, enable_restful_api=True,
                       transports=[])


def test_a_transport_that_is_not_installed_names_the_installed_ones_and_the_pip_command(tmp_path):
    with pytest.raises(ValueError, match=r"carrier-pigeon not installed \(installed: .*\); "
                                         r"`pip install mii-server-carrier-pigeon`"):
        mii_core.serve(str(tmp_path), transports=["carrier-pigeon"])


def test_transports_come_from_the_environment_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MII_CORE_TRANSPORTS", "carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon not installed"):
        mii_core.serve(str(tmp_path))


def test_client_of_an_unknown_deployment_names_the_known_ones():
    metadata.write_record(metadata.DeploymentRecord(
        name="known-one", config={}, authkey="00", router_link=("127.0.0.1", 1), replica_links=[], placements=[]))
    try:
        with pytest.raises(ValueError, match="no deployment named 'no-such-deployment'.*known deployments: .*known-one"):
            mii_core.client("no-such-deployment")
    finally:
        metadata.remove_record(metadata.read_record("known-one"))


def test_metadata_is_written_atomically_and_readable_by_its_owner_only(monkeypatch):
    record = metadata.DeploymentRecord(name="atomic", config={"a": 1}, authkey="ab" * 32,
                                       router_link=("127.0.0.1", 5), replica_links=[], placements=[])
    metadata.write_record(record)
    path = metadata.deployment_folder("atomic") / metadata.RECORD_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700

    def dump_then_fail(obj, out, **kwargs):
        out.write('{"half": ')
        raise OSError("disk full")

    monkeypatch.setattr(metadata.json, "dump", dump_then_fail)
    record.config = {"a": 2}
    with pytest.raises(OSError, match="disk full"):
        metadata.write_record(record)
    monkeypatch.undo()
    assert metadata.read_record("atomic").config == {"a": 1}  # the old record, whole
    assert [p.name for p in path.parent.iterdir()] == [metadata.RECORD_FILE]  # no temporary left behind
    metadata.remove_record(record)


@pytest.mark.parametrize("inherited, devices, expected", [
    (None, (1,), "1"),
    ("2,3", (1,), "3"),  # device_map counts the GPUs this process sees
    ("4,5,6,7", (0, 2), "4,6"),
])
def test_a_replica_sees_only_its_own_gpus(monkeypatch, inherited, devices, expected):
    from mii_core.serving.launch import replica_env

    if inherited is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", inherited)
    assert replica_env({"devices": devices}, 2)["CUDA_VISIBLE_DEVICES"] == expected


def test_cpu_replicas_share_the_cores(monkeypatch):
    from mii_core.serving.launch import replica_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert replica_env({"devices": ()}, 2)["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
