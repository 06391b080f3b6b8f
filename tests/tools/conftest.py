import json
import os

import pytest

from video_mcmae.engine.distributed import free_port as _free_port
from video_mcmae.weights import consolidated_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def child_env():
    """Environment for launching the tools as CPU subprocesses (one thread per rank, gloo)."""
    # A rendezvous left in this process's environment (in-process engine tests) must not leak.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
                DS_ACCELERATOR="cpu")


@pytest.fixture
def free_port():
    """A function returning a free local TCP port (as a string) for a launcher's rendezvous."""
    return lambda: str(_free_port())


def _resume_run_args(out, root, steps, epochs, *extra):
    d = root / "ssv2"
    opts = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", "data.num_workers=0",
            "deepspeed.zero_stage=1", "deepspeed.precision=fp32", "optim.batch_size=2",
            f"optim.epochs={epochs}", f"optim.steps_per_epoch={steps}", "optim.warmup_epochs=1",
            "run.save_every=1", "run.log_every=1", "run.keep_checkpoints=0", "run.tensorboard=false"]
    return ["--config", os.path.join(REPO, "configs", "demo", "pretrain.yaml"), "--output_dir", str(out),
            *[a for o in opts for a in ("--opt", o)], *extra]


@pytest.fixture
def resume_run_args():
    """A function (out, synthetic root, steps per epoch, epochs, *extra) -> the arguments of a
    run_pretrain.py run that is killed and resumed: the demo pretraining on the procedural ssv2
    list, ZeRO-1 fp32, a checkpoint every epoch (all kept), a log line every step."""
    return _resume_run_args


def _log_records(out):
    path = out / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.fixture
def log_records():
    """A function: a run's output dir -> the complete records of its log.jsonl ([] before it exists)."""
    return _log_records


@pytest.fixture
def final_state():
    """A function: a finished run's output dir -> (consolidated fp32 weights, checkpoint meta,
    the last `iter` record of log.jsonl)."""
    def final(out):
        weights, meta = consolidated_state_dict(str(out))
        return weights, meta, [r for r in _log_records(out) if r["type"] == "iter"][-1]
    return final
