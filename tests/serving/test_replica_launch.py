"""Where each replica of serve(tensor_parallel=N, replica_num=M) runs and the command that starts it,
checked against MII's rules worked out by hand: devices from device_map or the hostfile's slots in order,
DeepSpeed's hostfile format, replica i's ranks on torch_dist_port + 100·i, the launcher's line."""
from __future__ import annotations

import os
import sys

import pytest

from mii_core.config import placement
from mii_core.config.placement import is_this_machine, place_replicas, read_hostfile
from mii_core.distributed.replica_launch import launch_command
from mii_core.serving.launch import replica_command
from mii_core.serving.remote_launch import forwarded_environment, remote_launch_command, write_env_file

NO_HOSTFILE = "/no/such/hostfile"
DS_FLAGS = ["--no_ssh_check", "--no_local_rank", "--no_python"]


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(placement, "local_gpu_count", lambda: 4)


def hosts_and_devices(placements):
    return [(p.host, p.devices) for p in placements]


def program(folder, index):
    return [sys.executable, "-m", "mii_core.replica_main", str(folder), str(index)]


def test_auto_on_this_machine_fills_devices_in_order(four_gpus, monkeypatch, tmp_path):
    assert hosts_and_devices(place_replicas("auto", 2, 2, NO_HOSTFILE)) == [("localhost", (0, 1)),
                                                                          ("localhost", (2, 3))]
    monkeypatch.setenv("MII_CORE_TP_LAUNCHER", "deepspeed")
    command, env = replica_command(tmp_path, 1, tensor_parallel=2, torch_dist_port=29500, devices=(2, 3))
    assert command[1:] == ["-H", os.devnull, "-i", "localhost:2,3", "--master_port", "29600",
                           "--master_addr", "localhost", *DS_FLAGS, *program(tmp_path, 1)]
    assert os.path.basename(command[0]) == "deepspeed" and env == {}


def test_multi_node_hostfile_places_replicas_per_host(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nworker-1 slots=2\n\nworker-2 slots=4  # bigger\n")
    assert read_hostfile(str(hostfile)) == {"worker-1": 2, "worker-2": 4}
    assert hosts_and_devices(place_replicas("auto", 3, 2, str(hostfile))) == [
        ("worker-1", (0, 1)), ("worker-2", (0, 1)), ("worker-2", (2, 3))]


def test_a_replica_on_another_host_without_pdsh_is_refused_before_spawning(tmp_path, monkeypatch):
    """Replicas on other hosts start through DeepSpeed's pdsh runner: without pdsh, a clear error and nothing
    spawned."""
    import shutil

    import mii_core
    from mii_core.serving import metadata, remote_launch

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\nworker-1 slots=2\n")
    which = shutil.which
    monkeypatch.setattr(remote_launch.shutil, "which", lambda name, path=None: None if name == "pdsh" else
                        which(name, path=path))
    with pytest.raises(ValueError, match=r"replicas on other hosts \(worker-1\) are started through DeepSpeed's "
                                         r"pdsh runner, but pdsh is not installed here: apt-get install pdsh"):
        mii_core.serve(str(tmp_path), deployment_name="remote", hostfile=str(hostfile),
                       device_map={"worker-1": [[1]]}, transports=[])
    assert metadata.read_record("remote") is None


def test_a_replica_on_another_host_is_started_by_deepspeeds_pdsh_runner(tmp_path):
    """MII's multi-node launch: the hostfile, the host's devices, pdsh, the host as master address."""
    command = remote_launch_command("worker-1", (2, 3), 29600, program(tmp_path, 1), "/job/hostfile", "deepspeed")
    assert command == ["deepspeed", "-H", "/job/hostfile", "-i", "worker-1:2,3", "--force_multi", "--launcher",
                       "pdsh", "--master_addr", "worker-1", "--master_port", "29600", *DS_FLAGS, *program(tmp_path, 1)]


def test_a_remote_replica_gets_the_variables_it_reads_but_nothing_secret(tmp_path):
    env = {"MII_CORE_PLUGINS": "mii-plugin-llama", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "PATH": "/bin",
           "HF_TOKEN": "hf_x", "MII_CORE_API_KEY": "k", "MII_CORE_ROUTER_PID": "41", "TRITON_INTERPRET": "1"}
    expected = {"MII_CORE_PLUGINS": "mii-plugin-llama", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2",
                "TRITON_INTERPRET": "1"}
    assert forwarded_environment(env) == expected
    path = write_env_file(tmp_path, 1, env)
    assert path.read_text() == "".join(f"{k}={v}\n" for k, v in sorted(expected.items()))
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_hostfile_names_of_this_machine_are_local():
    import socket

    assert [is_this_machine(h) for h in ("localhost", "127.0.0.3", socket.gethostname())] == [True] * 3
    assert not is_this_machine("worker-1")  # unknown here
    assert not is_this_machine("192.0.2.7")  # TEST-NET-1: never an address of this machine


def test_a_remote_replicas_link_is_on_its_host_and_its_port_not_checked_here(tmp_path):
    from mii_core.config.deployment import MIIConfig
    from mii_core.serving.metadata import DeploymentRecord
    from mii_core.serving.ports import plan_ports

    config = MIIConfig(model_config={"model_name_or_path": str(tmp_path), "replica_num": 2}, port_number=30000)
    plan = plan_ports(config, [], [None, "worker-1"])
    assert plan.replica_addresses() == [("127.0.0.1", 30001), ("worker-1", 30002)]
    assert ("replica 1's link", "worker-1", 30002) in plan.roles()
    assert [role[1] for role in plan.local_roles()] == ["127.0.0.1", "127.0.0.1"]
    record = DeploymentRecord("d", {"replica_link_host": "0.0.0.0"}, "00", ("127.0.0.1", 30003),
                              plan.replica_addresses(), [], replica_hosts=["", "worker-1"])
    assert [record.link_bind(0), record.link_bind(1)] == [("127.0.0.1", 30001), ("0.0.0.0", 30002)]
    assert [record.remote_host(0), record.remote_host(1)] == [None, "worker-1"]


@pytest.mark.parametrize("device_map, expected", [
    ([[1, 3], [0, 2]], [("localhost", (1, 3)), ("localhost", (0, 2))]),
    ({"worker-2": [[2, 3]], "worker-1": [[0, 1]]}, [("worker-2", (2, 3)), ("worker-1", (0, 1))]),
])
def test_device_map_chooses_each_replicas_devices(tmp_path, device_map, expected):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=4\nworker-1 slots=4\nworker-2 slots=4\n")
    assert hosts_and_devices(place_replicas(device_map, 2, 2, str(hostfile))) == expected


def test_single_replica_device_map_int_list(four_gpus):
    assert hosts_and_devices(place_replicas([2, 3], 1, 2, NO_HOSTFILE)) == [("localhost", (2, 3))]


def test_each_replica_runs_its_own_index_and_rendezvous_port(tmp_path, monkeypatch):
    assert replica_command(tmp_path, 0) == (program(tmp_path, 0), {})  # one rank: no launcher
    assert replica_command(tmp_path, 1) == (program(tmp_path, 1), {})
    monkeypatch.setenv("MII_CORE_TP_LAUNCHER", "deepspeed")
    ports = [replica_command(tmp_path, i, 2, 30000, (2 * i, 2 * i + 1))[0] for i in range(2)]
    assert [c[c.index("--master_port") + 1] for c in ports] == ["30000", "30100"]


def test_torchrun_launcher_pins_devices_through_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MII_CORE_TP_LAUNCHER", "torchrun")
    command, env = replica_command(tmp_path, 1, tensor_parallel=2, torch_dist_port=29500, devices=(2, 3))
    assert command == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                       "29600", "--no-python", *program(tmp_path, 1)]
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"}


@pytest.mark.parametrize("device_map, replicas, tp, message", [
    ("auto", 3, 2, r"only 2 replica\(s\) of tensor_parallel=2 fit on the 4 GPU\(s\) available, but replica_num=3"),
    ([[0, 1, 2]], 1, 2, r"group \[0, 1, 2\] on localhost has 3 GPU\(s\) but tensor_parallel=2"),
    ([[0, 1]], 2, 2, r"1 device group\(s\) but replica_num=2"),
    ([[3, 4]], 1, 2, r"GPU 4 on localhost, which has 4 GPU\(s\) \(valid: 0..3\)"),
])
def test_impossible_placements_are_clear_errors(four_gpus, device_map, replicas, tp, message):
    with pytest.raises(ValueError, match=message):
        place_replicas(device_map, replicas, tp, NO_HOSTFILE)


@pytest.mark.parametrize("text, message", [
    ("worker-1 slots=2\nworker-2 gpus=2\n", r"line 2: expected 'hostname slots=N', got 'worker-2 gpus=2'"),
    ("worker-1 slots=2\nworker-1 slots=4\n", r"names host 'worker-1' twice"),
    ("# nothing\n", r"names no host"),
])
def test_bad_hostfile_is_an_error_naming_the_file(tmp_path, text, message):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(text)
    with pytest.raises(ValueError, match=f"hostfile {hostfile}.*{message}"):
        read_hostfile(str(hostfile))


def test_cpu_ranks_are_launched_by_count():
    """No devices (CPU ranks, gloo): deepspeed takes --num_gpus N (its -i needs device slots), torchrun
    pins nothing."""
    command, env = launch_command("deepspeed", "localhost", (), 2, 29600, ["python", "-m", "x"],
                                  executable=["/venv/bin/deepspeed"])
    assert command == ["/venv/bin/deepspeed", "-H", os.devnull, "--num_gpus", "2", "--master_port", "29600",
                       "--master_addr", "localhost", "--no_ssh_check", "--no_local_rank", "--no_python",
                       "python", "-m", "x"] and env == {}
    command, env = launch_command("torchrun", "localhost", (), 2, 29600, ["python"])
    assert command == ["torchrun", "--nproc_per_node", "2", "--master_port", "29600", "--no-python", "python"]
    assert env == {}
