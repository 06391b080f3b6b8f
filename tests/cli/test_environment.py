"""The process environment of a command (video_mcmae.cli.environment): what a plain process gets,
what a launcher's variables keep, and that a command leaves the environment as it found it."""
import os

import pytest

from video_mcmae.cli import environment
from video_mcmae.config import RunConfig

RENDEZVOUS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def plain_process(monkeypatch):
    for key in RENDEZVOUS + ("DS_ACCELERATOR", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(key, raising=False)


def test_a_plain_cpu_process_gets_a_one_rank_rendezvous(plain_process):
    needed = environment.required_environment(RunConfig(device="cpu"))
    assert {k: needed[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "DS_ACCELERATOR")} == dict(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", DS_ACCELERATOR="cpu")
    assert 0 < int(needed["MASTER_PORT"]) < 65536
    assert "CUBLAS_WORKSPACE_CONFIG" not in needed
    assert environment.required_environment(RunConfig(device="cpu", deterministic=True))[
        "CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_variables_already_set_are_kept(plain_process, monkeypatch):
    launcher = dict(RANK="3", WORLD_SIZE="4", LOCAL_RANK="1", MASTER_ADDR="node1", MASTER_PORT="29500")
    for key, value in launcher.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    assert environment.required_environment(RunConfig(device="cpu", deterministic=True)) == {"DS_ACCELERATOR": "cpu"}
    monkeypatch.delenv("RANK")
    needed = environment.required_environment(RunConfig(device="cpu"))
    assert needed["RANK"] == "0" and "MASTER_PORT" not in needed  # the port already chosen stays


def test_a_command_leaves_the_environment_as_it_found_it(plain_process):
    before = dict(os.environ)
    with environment.run_environment(RunConfig(device="cpu", deterministic=True)) as added:
        assert all(os.environ[k] == v for k, v in added.items())
        assert set(RENDEZVOUS) | {"DS_ACCELERATOR", "CUBLAS_WORKSPACE_CONFIG"} == set(added)
    assert dict(os.environ) == before
    with pytest.raises(KeyError):
        with environment.run_environment(RunConfig(device="cpu")):
            raise KeyError("a failing command")
    assert dict(os.environ) == before


def test_the_engine_without_a_rendezvous_says_how_to_get_one(plain_process, monkeypatch):
    from video_mcmae.engine import distributed

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset"):
        distributed.init("cpu")
