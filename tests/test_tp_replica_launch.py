"""The launch command of each tensor-parallel replica (what serve(tensor_parallel=N, replica_num=M) runs),
checked against MII's rules worked out by hand: ports torch_dist_port + 100·i, devices from device_map or
the hostfile's slots in order, DeepSpeed's hostfile format."""
from __future__ import annotations

import os

import pytest

from mii_core.distributed.replica_launch import read_hostfile, replica_launch_commands

SERVER = ["python", "-m", "server", "--deployment", "d"]
DS_FLAGS = ["--no_ssh_check", "--no_local_rank", "--no_python"]


def test_auto_on_this_machine_fills_devices_in_order():
    launches = replica_launch_commands(2, 2, 29500, "auto", SERVER, hostfile="/no/such/hostfile", local_devices=4)
    assert [(l.host, l.devices, l.master_port) for l in launches] == [("localhost", [0, 1], 29500),
                                                                      ("localhost", [2, 3], 29600)]
    assert launches[1].command == ["deepspeed", "-H", os.devnull, "-i", "localhost:2,3", "--master_port", "29600",
                                   "--master_addr", "localhost", *DS_FLAGS, *SERVER]


def test_multi_node_hostfile_places_replicas_per_host(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# two nodes\nworker-1 slots=2\n\nworker-2 slots=4  # bigger\n")
    assert read_hostfile(hostfile) == {"worker-1": 2, "worker-2": 4}
    launches = replica_launch_commands(2, 3, 29500, "auto", SERVER, hostfile=hostfile)
    assert [(l.host, l.devices, l.master_port) for l in launches] == [
        ("worker-1", [0, 1], 29500), ("worker-2", [0, 1], 29600), ("worker-2", [2, 3], 29700)]
    assert launches[2].command[:10] == ["deepspeed", "-H", str(hostfile), "-i", "worker-2:2,3", "--master_port",
                                        "29700", "--master_addr", "worker-2", "--no_ssh_check"]


@pytest.mark.parametrize("device_map, expected", [
    ([[1, 3], [0, 2]], [("localhost", [1, 3]), ("localhost", [0, 2])]),
    ({"worker-2": [[2, 3]], "worker-1": [[0, 1]]}, [("worker-2", [2, 3]), ("worker-1", [0, 1])]),
])
def test_device_map_chooses_each_replicas_devices(tmp_path, device_map, expected):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=4\nworker-1 slots=4\nworker-2 slots=4\n")
    launches = replica_launch_commands(2, 2, 30000, device_map, SERVER, hostfile=hostfile)
    assert [(l.host, l.devices) for l in launches] == expected
    assert [l.master_port for l in launches] == [30000, 30100]


def test_single_replica_device_map_int_list():
    launch, = replica_launch_commands(2, 1, 29500, [2, 3], SERVER, hostfile="/no/such/hostfile", local_devices=4)
    assert launch.command[3:5] == ["-i", "localhost:2,3"]


def test_each_replica_may_run_its_own_server_arguments():
    launches = replica_launch_commands(1, 2, 29500, "auto", lambda i: ["serve", f"--port={50051 + i}"],
                                       hostfile="/no/such/hostfile", local_devices=2)
    assert [l.command[-2:] for l in launches] == [["serve", "--port=50051"], ["serve", "--port=50052"]]
    assert [l.command[4] for l in launches] == ["localhost:0", "localhost:1"]


def test_torchrun_launcher_pins_devices_through_the_environment():
    launches = replica_launch_commands(2, 2, 29500, "auto", SERVER, hostfile="/no/such/hostfile", local_devices=4,
                                       launcher="torchrun")
    assert launches[1].command == ["torchrun", "--nproc_per_node", "2", "--master_port", "29600", "--no-python",
                                   *SERVER]
    assert launches[1].env == {"CUDA_VISIBLE_DEVICES": "2,3"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(tensor_parallel=2, replica_num=3, device_map="auto"), r"replica_num=3 replicas .* need 6 devices"),
    (dict(tensor_parallel=2, replica_num=1, device_map=[[0, 1, 2]]), r"tensor_parallel=2 needs 2 devices"),
    (dict(tensor_parallel=2, replica_num=2, device_map=[[0, 1]]), r"names 1 replica\(s\) but replica_num=2"),
    (dict(tensor_parallel=2, replica_num=1, device_map=[[3, 4]]), r"localhost has 4 device\(s\)"),
])
def test_impossible_placements_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        replica_launch_commands(torch_dist_port=29500, server_command=SERVER, hostfile="/no/such/hostfile",
                                local_devices=4, **kwargs)


def test_bad_hostfile_line_names_file_and_line(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("worker-1 slots=2\nworker-2 gpus=2\n")
    with pytest.raises(ValueError, match=r"line 2: 'worker-2 gpus=2' is not 'hostname slots=N'"):
        read_hostfile(hostfile)


def test_cpu_ranks_are_launched_by_count():
    """No devices (CPU ranks, gloo): deepspeed takes --num_gpus N (its -i needs device slots), torchrun
    pins nothing."""
    from mii_core.distributed.replica_launch import launch_command

    command, env = launch_command("deepspeed", "localhost", (), 2, 29600, ["python", "-m", "x"],
                                  executable=["/venv/bin/deepspeed"])
    assert command == ["/venv/bin/deepspeed", "-H", os.devnull, "--num_gpus", "2", "--master_port", "29600",
                       "--master_addr", "localhost", "--no_ssh_check", "--no_local_rank", "--no_python",
                       "python", "-m", "x"] and env == {}
    command, env = launch_command("torchrun", "localhost", (), 2, 29600, ["python"])
    assert command == ["torchrun", "--nproc_per_node", "2", "--master_port", "29600", "--no-python", "python"]
    assert env == {}
