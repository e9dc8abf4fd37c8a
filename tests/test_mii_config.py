"""MII's config object: ``mii_core.config.MIIConfig`` with MII's ``deployment_type`` and
``generate_replica_configs``. The placement cases are those of DeepSpeed-MII's tests/test_config.py (same
hostfiles, device maps, replica_num=2, tensor_parallel=2); the expected replica configs are worked out
by hand from MII's rules: groups filled from the hostfile's slots in order, replica i's ports the
``tensor_parallel`` after ``port_number + i * tensor_parallel``, its ranks meeting on
``torch_dist_port + 100·i``."""
from __future__ import annotations

import pytest

import mii_core
from mii_core.config import DeploymentType, MIIConfig, ModelConfig, ReplicaConfig, placement
from mii_core.serving import metadata

MODEL = "facebook/opt-125m"  # MII's test model; only its name is used here


@pytest.fixture
def hostfile(tmp_path):
    def write(*lines: str) -> str:
        path = tmp_path / "hostfile"
        path.write_text("".join(line + "\n" for line in lines))
        return str(path)
    return write


def mii_config(hostfile_path: str, device_map="auto", replica_num: int = 2, tensor_parallel: int = 2,
               **options) -> MIIConfig:
    """What MII's conftest builds for test_config.py (port_number 50050, torch_dist_port 29500)."""
    model = {"model_name_or_path": MODEL, "tensor_parallel": tensor_parallel, "replica_num": replica_num,
             "device_map": device_map}
    return MIIConfig(model_config=model, hostfile=hostfile_path, port_number=50050, **options)


def replica(host: str, gpus: list[int], index: int) -> ReplicaConfig:
    """Replica ``index`` of a tensor_parallel=2 deployment on port 50050, worked out by hand."""
    first_port = {0: 50051, 1: 50053}[index]
    return ReplicaConfig(hostname=host, gpu_indices=gpus, tensor_parallel_ports=[first_port, first_port + 1],
                         torch_dist_port={0: 29500, 1: 29600}[index])


@pytest.mark.parametrize("device_map", [
    {"host_0": [[0, 1, 2, 3]]},               # one group for two replicas, of four GPUs for tensor_parallel=2
    {"host_0": [[0, 1]], "host_1": [[0]]},    # a group of one GPU
    {"host_0": [[0, 1], [2, 3], [4, 5]]},     # three groups for two replicas
    {"host_0": [[0, 1]]},                     # one group for two replicas
])
def test_device_maps_mii_refuses_are_refused(hostfile, device_map):
    config = mii_config(hostfile("host_0 slots=8", "host_1 slots=8"), device_map)
    with pytest.raises(ValueError, match="device_map"):
        config.generate_replica_configs()


@pytest.mark.parametrize("device_map, expected", [
    ({"host_0": [[0, 1], [2, 3]]}, [replica("host_0", [0, 1], 0), replica("host_0", [2, 3], 1)]),
    ({"host_0": [[0, 1]], "host_1": [[0, 1]]}, [replica("host_0", [0, 1], 0), replica("host_1", [0, 1], 1)]),
])
def test_device_map_places_each_replica(hostfile, device_map, expected):
    config = mii_config(hostfile("host_0 slots=4", "host_1 slots=4"), device_map)
    assert config.generate_replica_configs() == expected
    assert config.model_conf.replica_configs == expected  # MII keeps them in model_config


@pytest.mark.parametrize("hostfile_lines, expected", [
    (["host_0 slots=4"], [replica("host_0", [0, 1], 0), replica("host_0", [2, 3], 1)]),
    (["host_0 slots=2", "host_1 slots=2"], [replica("host_0", [0, 1], 0), replica("host_1", [0, 1], 1)]),
    (["host_0 slots=8"], [replica("host_0", [0, 1], 0), replica("host_0", [2, 3], 1)]),
])
def test_auto_device_map_fills_the_hostfile_in_order(hostfile, hostfile_lines, expected):
    assert mii_config(hostfile(*hostfile_lines)).generate_replica_configs() == expected


def test_auto_device_map_refuses_more_replicas_than_fit(hostfile):
    with pytest.raises(ValueError, match="only 1 replica"):
        mii_config(hostfile("host_0 slots=3")).generate_replica_configs()


@pytest.mark.parametrize("device_map", [{"host_0": [[0, 1]]}, [[0, 1]], [0, 1], 1])
def test_every_device_map_form_mii_takes_is_accepted(device_map):
    config = MIIConfig(model_config={"model_name_or_path": MODEL, "device_map": device_map})
    assert config.model_conf.device_map == device_map


@pytest.mark.parametrize("device_map, gpus", [(1, [1]), ([2, 3], [2, 3]), ([[0, 1]], [0, 1])])
def test_short_device_map_forms_mean_this_machine(hostfile, device_map, gpus):
    config = mii_config(hostfile("localhost slots=4"), device_map, replica_num=1, tensor_parallel=len(gpus))
    first = 50051
    assert config.generate_replica_configs() == [
        ReplicaConfig(hostname="localhost", gpu_indices=gpus, torch_dist_port=29500,
                      tensor_parallel_ports=list(range(first, first + len(gpus))))]


def test_without_hostfile_or_gpu_replicas_run_on_this_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(placement, "local_gpu_count", lambda: 0)
    config = mii_config(str(tmp_path / "no-hostfile"), replica_num=2, tensor_parallel=1)
    assert config.generate_replica_configs() == [
        ReplicaConfig(hostname="localhost", gpu_indices=[], tensor_parallel_ports=[50051], torch_dist_port=29500),
        ReplicaConfig(hostname="localhost", gpu_indices=[], tensor_parallel_ports=[50052], torch_dist_port=29600)]


def test_given_replica_configs_are_kept_when_they_match_and_refused_otherwise(hostfile):
    path = hostfile("host_0 slots=4")
    matching = [replica("host_0", [0, 1], 0), replica("host_0", [2, 3], 1)]
    config = MIIConfig(model_config={"model_name_or_path": MODEL, "tensor_parallel": 2, "replica_num": 2,
                                     "replica_configs": [r.model_dump() for r in matching]}, hostfile=path)
    assert config.generate_replica_configs() == matching
    swapped = [replica("host_0", [2, 3], 0), replica("host_0", [0, 1], 1)]
    config = MIIConfig(model_config={"model_name_or_path": MODEL, "tensor_parallel": 2, "replica_num": 2,
                                     "replica_configs": swapped}, hostfile=path)
    with pytest.raises(ValueError, match="leave replica_configs out"):
        config.generate_replica_configs()


def test_replica_configs_must_be_one_per_replica():
    with pytest.raises(ValueError, match="replica_num=2"):
        ModelConfig(model_name_or_path=MODEL, replica_num=2, replica_configs=[ReplicaConfig(hostname="a")])


@pytest.mark.parametrize("given, expected", [
    (None, DeploymentType.LOCAL), ("local", DeploymentType.LOCAL), ("non-persistent", DeploymentType.NON_PERSISTENT),
    (DeploymentType.NON_PERSISTENT, DeploymentType.NON_PERSISTENT),
])
def test_mii_deployment_types_are_accepted(given, expected):
    options = {} if given is None else {"deployment_type": given}
    config = MIIConfig(model_config={"model_name_or_path": MODEL}, **options)
    assert config.deployment_type is expected
    assert config.model_dump(mode="json", by_alias=True)["deployment_type"] == expected.value
    assert mii_core.DeploymentType is DeploymentType


@pytest.mark.parametrize("given, says", [("aml", "'aml'.*not supported.*use 'local'"),
                                         (DeploymentType.AML, "'aml'.*not supported"),
                                         ("persistent", "'persistent'.*use 'local' or 'non-persistent'")])
def test_other_deployment_types_are_refused_saying_what_to_use(given, says):
    with pytest.raises(ValueError, match=says):
        MIIConfig(model_config={"model_name_or_path": MODEL}, deployment_type=given)


@pytest.mark.parametrize("given, says", [("non-persistent", "mii_core.pipeline.*mii_core.legacy.deploy"),
                                         ("aml", "'aml'.*not supported")])
def test_serve_takes_only_a_local_deployment(tmp_path, given, says):
    with pytest.raises(ValueError, match=says):
        mii_core.serve(str(tmp_path), deployment_name="mii-config-type", deployment_type=given)
    assert metadata.read_record("mii-config-type") is None  # refused before anything started
