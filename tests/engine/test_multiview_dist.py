"""A real gather over gloo: two processes, uneven shards (sampler padding), merged result equal to
one process. World sizes 1/2/3 on simulated shards are in test_multiview.py."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from video_mcmae.engine.distributed import free_port
from video_mcmae.engine.multiview import ViewCollector, ViewManifest, gather_shards, make_shard, merge_views

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T, S, C = 1, 3, 4
LABELS = [0, 1, 2, 3, 1]  # 15 views: world size 2 pads 1


def manifest():
    return ViewManifest(paths=[f"v{i}.mp4" for i in range(len(LABELS))], labels=LABELS,
                        num_temporal_views=T, num_spatial_views=S, num_classes=C)


def collect(rank, world):
    items = [(v, t, s) for v in range(len(LABELS)) for t in range(T) for s in range(S)]
    col = ViewCollector()
    for i in DistributedSampler(items, num_replicas=world, rank=rank, shuffle=False):
        v, t, s = items[i]
        g = torch.Generator().manual_seed(100 * v + 10 * t + s)
        col.add(torch.randn(1, C, generator=g), [LABELS[v]], [v], [t], [s])
    unreadable = {4: "truncated file"} if rank == world - 1 else {}
    return make_shard(col, manifest(), rank=rank, world_size=world, run_id="r", unreadable=unreadable)


def worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shards = gather_shards(collect(rank, world))
        merged = merge_views(shards)
        torch.save({"scores": merged.scores, "videos": merged.video_index, "dups": merged.duplicates_removed,
                    "ranks": [s["rank"] for s in shards]}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gloo_gather_matches_single_process(tmp_path):
    world = 2
    # Separate interpreters running this file: forking a process whose OpenMP pool is already
    # up can deadlock in the child, and spawn cannot pickle functions of a test module.
    port, env = free_port(), dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(world), str(port), str(tmp_path)], env=env)
             for r in range(world)]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [0] * world
    ref = merge_views([collect(0, 1)])
    for rank in range(world):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert got["ranks"] == list(range(world))
        assert torch.equal(got["scores"], ref.scores)
        assert got["videos"].tolist() == [0, 1, 2, 3]  # video 4 reported unreadable by the last rank
        assert got["dups"] == 1


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
