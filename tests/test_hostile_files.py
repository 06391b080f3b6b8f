"""Hostile or damaged files met while reading weights: a zip member declaring an absurd size is
refused before anything is inflated, a FIFO (or a folder, a socket) in a checkpoint folder is
refused by name before anything opens it, a ZeRO folder lacking a rank's optimizer file is
refused naming the rank, and an edited export `.json` is one `CheckpointError`."""
import json
import os
import signal
import struct
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from video_mcmae import api, weights
from video_mcmae.engine.checkpoint import check_checkpoint
from video_mcmae.engine.multiview.shards import load_shards
from video_mcmae.errors import CheckpointError, MultiViewError
from video_mcmae.models import from_weights
from video_mcmae.weights import EXPORT_FORMAT, MAX_INFLATION, MODEL_STATES, read_weights

STATE = {"blocks.0.weight": torch.arange(6.0).view(2, 3), "head.bias": torch.ones(2)}
MODEL = {"name": "videoconvvit_tiny_patch16", "num_classes": 2}
GIB = 1 << 30


def _declare(path, suffix, size):
    """Patch the uncompressed size that the zip headers of `path` declare for the member ending in
    `suffix` (central directory and local header), as a hostile archive would."""
    data = bytearray(path.read_bytes())
    name = next(n for n in zipfile.ZipFile(path).namelist() if n.endswith(suffix)).encode()
    for signature, name_at, size_at in ((b"PK\x01\x02", 46, 24), (b"PK\x03\x04", 30, 22)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at:at + name_at + len(name)] == name:
                struct.pack_into("<I", data, at + size_at, size)
            at = data.find(signature, at + 1)
    path.write_bytes(bytes(data))
    return path


def _deflated(src, dst):
    """`src` (a torch file) re-zipped with every member deflated, as another zip tool would."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as b:
        for info in a.infolist():
            b.writestr(info.filename, a.read(info))
    return dst


def _checkpoint(run_dir, tag="epoch-0001", **states):
    os.makedirs(run_dir / tag)
    torch.save({"module": STATE, "config": {"model": MODEL}, "epoch": 1, **states}, run_dir / tag / MODEL_STATES)
    (run_dir / "latest").write_text(tag)
    return run_dir / tag


@pytest.fixture
def never_inflated(monkeypatch):
    """arm(path): from then on, fail the test if any reader goes past the zip directory of `path`."""
    def arm(path):
        def guard(original, file_of):
            def read(*args, **kwargs):
                if os.fspath(file_of(*args)) == os.fspath(path):
                    raise AssertionError(f"{path} was read past its zip directory")
                return original(*args, **kwargs)
            return read
        monkeypatch.setattr(weights.torch, "load", guard(torch.load, lambda f, *a: f))
        monkeypatch.setattr(weights, "get_unsafe_globals_in_checkpoint",
                            guard(weights.get_unsafe_globals_in_checkpoint, lambda f, *a: f))
        monkeypatch.setattr(zipfile.ZipFile, "open", guard(zipfile.ZipFile.open, lambda z, *a: z.filename))
    return arm


@pytest.fixture
def no_hang():
    """Fail (instead of blocking for ever) if something opens a FIFO."""
    def hung(*args):
        raise AssertionError("blocked: something opened a FIFO")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# Zip members declaring absurd sizes


def test_a_real_deflate_bomb_is_refused_before_inflating(tmp_path, never_inflated):
    # 64 MiB of zeros deflate to ~65 KB (1000:1): what a hostile `.pth` looks like
    torch.save({"w": torch.zeros(1 << 24)}, tmp_path / "big.pth")
    bomb = _deflated(tmp_path / "big.pth", tmp_path / "bomb.pth")
    os.remove(tmp_path / "big.pth")
    assert os.path.getsize(bomb) < 100_000
    never_inflated(bomb)
    with pytest.raises(CheckpointError) as err:
        read_weights(str(bomb))
    assert str(err.value).startswith(f"{bomb}: zip member 'big/data/0' declares 67108864 bytes uncompressed in a ")
    assert f"more than {MAX_INFLATION}x the file" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("member", [MODEL_STATES, "zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_a_few_kb_declaring_gigabytes_in_a_checkpoint_folder(tmp_path, member, never_inflated):
    tag = _checkpoint(tmp_path / "run")
    if member != MODEL_STATES:
        torch.save({"optimizer_state_dict": {"step": torch.tensor(1.0)}}, tag / member)
    _declare(tag / member, "data.pkl", 3 * GIB)
    assert os.path.getsize(tag / member) < 10_000
    never_inflated(tag / member)
    for read in (lambda: read_weights(str(tmp_path / "run")), lambda: check_checkpoint(str(tag)),
                 lambda: api.load(str(tag))):
        with pytest.raises(CheckpointError, match=f"^{tag / member}: zip member '.*data.pkl' declares 3221225472 bytes"):
            read()


def test_a_shard_declaring_gigabytes_is_refused_by_the_merge(tmp_path, never_inflated):
    torch.save({"format": "x"}, tmp_path / "shard-00000-of-00001.pt")
    _declare(tmp_path / "shard-00000-of-00001.pt", "data.pkl", 2 * GIB)
    never_inflated(tmp_path / "shard-00000-of-00001.pt")
    with pytest.raises(MultiViewError, match="cannot read shard .*shard-00000-of-00001.pt.*declares 2147483648 bytes"):
        load_shards(str(tmp_path))


def test_a_checkpoint_zipped_again_by_another_tool_still_reads(tmp_path):
    torch.save({"model": {"w": torch.randn(4096), "b": torch.ones(8)}}, tmp_path / "w.pth")
    again = _deflated(tmp_path / "w.pth", tmp_path / "again.pth")
    assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in zipfile.ZipFile(again).infolist())
    assert torch.equal(read_weights(str(again)).state_dict["w"], read_weights(str(tmp_path / "w.pth")).state_dict["w"])


def test_safetensors_headers_declaring_more_than_the_file_are_refused(tmp_path):
    # safetensors checks the header's offsets against the file (and maps the data): no amplification
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 28], "data_offsets": [0, 1 << 30]}}).encode()
    (tmp_path / "w.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(CheckpointError, match="cannot read .*w.safetensors as a safetensors file"):
        read_weights(str(tmp_path / "w.safetensors"))


# ---------------------------------------------------------------------------------------------
# Entries that are not files


@pytest.mark.parametrize("kind", ["fifo", "folder", "dangling link"])
def test_entries_that_are_not_files_are_refused_by_name_without_opening(tmp_path, kind, no_hang):
    tag = _checkpoint(tmp_path / "run")
    odd = tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    {"fifo": os.mkfifo, "folder": os.mkdir, "dangling link": lambda p: os.symlink(tmp_path / "gone", p)}[kind](odd)
    expected = f"^{odd} is a {'FIFO' if kind == 'fifo' else kind}, not a file; .*remove it"
    for read in (lambda: read_weights(str(tag)), lambda: check_checkpoint(str(tmp_path / "run")),
                 lambda: api.load(str(tag))):
        with pytest.raises(CheckpointError, match=expected):
            read()


# ---------------------------------------------------------------------------------------------
# ZeRO folders lacking a rank's optimizer file


def test_a_zero_folder_lacking_a_ranks_optimizer_file_is_refused(tmp_path):
    tag = _checkpoint(tmp_path / "run", dp_world_size=3)
    for rank in (0, 2):
        torch.save({"optimizer_state_dict": {}}, tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    message = f"^checkpoint folder {tag} lacks the ZeRO optimizer file of rank\\(s\\) 1 of the 3 that saved it"
    for read in (lambda: read_weights(str(tag)), lambda: check_checkpoint(str(tag))):
        with pytest.raises(CheckpointError, match=message):
            read()


# ---------------------------------------------------------------------------------------------
# Edited exports


@pytest.mark.parametrize("edit, expected", [
    (lambda info: info.pop("model"), "has no 'model' mapping"),
    (lambda info: info.update(model=[1, 2]), "has no 'model' mapping"),
    (lambda info: info.update(data="ssv2"), "has a 'data' entry that is not a mapping"),
    (lambda info: info.update(preset="videoconvvit_huge"), "names preset 'videoconvvit_huge', which is not a model preset"),
    (lambda info: info.update(preset="videoconvvit_small_patch16"), "names preset 'videoconvvit_small_patch16' but its model is"),
])
def test_an_edited_export_json_is_one_checkpoint_error(tmp_path, edit, expected):
    save_file(STATE, str(tmp_path / "w.safetensors"))
    info = {"format": EXPORT_FORMAT, "preset": MODEL["name"], "model": dict(MODEL), "data": None}
    edit(info)
    (tmp_path / "w.json").write_text(json.dumps(info))
    for load in (api.load, from_weights, read_weights):
        with pytest.raises(CheckpointError, match=f"^{tmp_path / 'w.json'} {expected}.*export the weights again"):
            load(str(tmp_path / "w.safetensors"))
