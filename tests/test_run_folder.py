"""The run folder's layout (video_mcmae.run_folder): epoch tags, `latest`, unfinished `.partial`
saves, the resume lookup, the rules that protect earlier checkpoints, the saved configs' names."""
import os

import pytest

from video_mcmae import run_folder
from video_mcmae.errors import CheckpointError
from video_mcmae.run_folder import MODEL_STATES


def _fake_ckpt(out, tag):
    os.makedirs(out / tag, exist_ok=True)
    (out / tag / MODEL_STATES).write_bytes(b"x")


def test_latest_points_only_at_complete_checkpoints(tmp_path):
    assert run_folder.read_latest(str(tmp_path)) is None and run_folder.find_auto_resume(str(tmp_path)) is None
    for e in (2, 10, 1):
        _fake_ckpt(tmp_path, run_folder.epoch_tag(e))
    os.makedirs(tmp_path / "epoch-0011")  # a save that never finished
    assert run_folder.epoch_tags(str(tmp_path)) == ["epoch-0001", "epoch-0002", "epoch-0010", "epoch-0011"]
    run_folder.write_latest(str(tmp_path), "epoch-0010")
    assert run_folder.find_auto_resume(str(tmp_path)) == str(tmp_path / "epoch-0010")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # written by rename
    run_folder.write_latest(str(tmp_path), "epoch-0011")
    assert run_folder.read_latest(str(tmp_path)) is None  # incomplete target is not trusted
    assert run_folder.resolve_checkpoint(str(tmp_path / "epoch-0002")) == (str(tmp_path), "epoch-0002")


def test_user_errors_name_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="not a complete DeepSpeed checkpoint.*epoch-0005"):
        run_folder.resolve_checkpoint(str(tmp_path / "nope"))
    run_folder.ensure_fresh_output(str(tmp_path))  # empty: fine
    _fake_ckpt(tmp_path, "epoch-0003")
    with pytest.raises(CheckpointError, match="already holds checkpoints \\(epoch-0003\\); continue that run with --resume .*epoch-0003"):
        run_folder.ensure_fresh_output(str(tmp_path))
    run_folder.write_latest(str(tmp_path), "epoch-0003")
    with pytest.raises(CheckpointError, match="continue that run with --auto_resume"):
        run_folder.ensure_fresh_output(str(tmp_path))
    _fake_ckpt(tmp_path, "epoch-0001")
    with pytest.raises(CheckpointError, match="newer than the resumed one \\(epoch 1\\): epoch-0003"):
        run_folder.ensure_no_newer_checkpoints(str(tmp_path), 1)
    run_folder.ensure_no_newer_checkpoints(str(tmp_path), 3)


def test_auto_resume_ignores_partial_saves_and_a_latest_left_behind(tmp_path):
    for e in (1, 2):
        _fake_ckpt(tmp_path, run_folder.epoch_tag(e))
    run_folder.write_latest(str(tmp_path), "epoch-0001")  # killed after epoch-0002 got its name
    _fake_ckpt(tmp_path, "epoch-0003.partial")  # killed while saving epoch 3
    assert run_folder.epoch_tags(str(tmp_path)) == ["epoch-0001", "epoch-0002"]
    assert run_folder.partial_checkpoints(str(tmp_path)) == [str(tmp_path / "epoch-0003.partial")]
    assert run_folder.find_auto_resume(str(tmp_path)) == str(tmp_path / "epoch-0002")
    run_folder.ensure_no_newer_checkpoints(str(tmp_path), 2)  # the partial is not newer
    run_folder.write_latest(str(tmp_path), "best")  # a `latest` naming another kind of tag is followed
    _fake_ckpt(tmp_path, "best")
    assert run_folder.find_auto_resume(str(tmp_path)) == str(tmp_path / "best")


def test_saved_configs_never_replace_an_earlier_one(tmp_path):
    out = str(tmp_path)
    assert run_folder.config_file(out, resuming=False, eval_only=False) == "config.yaml"
    assert run_folder.config_file(out, resuming=True, eval_only=False) == "config.yaml"  # nothing recorded yet
    (tmp_path / "config.yaml").write_text("")
    assert run_folder.config_file(out, resuming=True, eval_only=False) == "config.resume-1.yaml"
    (tmp_path / "config.resume-1.yaml").write_text("")
    assert run_folder.config_file(out, resuming=True, eval_only=False) == "config.resume-2.yaml"
    assert run_folder.config_file(out, resuming=False, eval_only=True) == "eval_config.yaml"
    (tmp_path / "eval_config.yaml").write_text("")
    assert run_folder.config_file(out, resuming=False, eval_only=True) == "eval_config-1.yaml"
    assert run_folder.report_dir(out) == str(tmp_path / "test")


@pytest.mark.parametrize("target", ["../other_run/epoch-0001", "{other}/epoch-0001", "sub/epoch-0001", "..",
                                    "link"])
def test_latest_may_only_name_a_folder_of_the_run(tmp_path, target):
    run, other = tmp_path / "run", tmp_path / "other_run"
    _fake_ckpt(other, "epoch-0001")
    _fake_ckpt(run, "epoch-0002")
    _fake_ckpt(run / "sub", "epoch-0001")
    os.symlink(other / "epoch-0001", run / "link")  # a link inside the run leading out of it
    (run / "latest").write_text(target.format(other=other))
    for look in (run_folder.read_latest, run_folder.find_auto_resume, run_folder.resolve_checkpoint):
        with pytest.raises(CheckpointError, match=f"^{run / 'latest'} names .*which is not a folder of this run folder"):
            look(str(run))


def test_a_link_inside_the_run_folder_is_followed(tmp_path):
    _fake_ckpt(tmp_path, "epoch-0002")
    os.symlink(tmp_path / "epoch-0002", tmp_path / "best")
    run_folder.write_latest(str(tmp_path), "best")
    assert run_folder.read_latest(str(tmp_path)) == "best"


def test_a_latest_that_is_not_utf8_is_named(tmp_path):
    _fake_ckpt(tmp_path, "epoch-0002")
    (tmp_path / "latest").write_bytes(b"epoch-\xff\xfe0002")
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'latest'} is not a UTF-8 tag name.*or delete it"):
        run_folder.find_auto_resume(str(tmp_path))


def test_a_latest_that_is_a_fifo_is_not_opened(tmp_path):
    _fake_ckpt(tmp_path, "epoch-0002")
    os.mkfifo(tmp_path / "latest")
    assert run_folder.find_auto_resume(str(tmp_path)) == str(tmp_path / "epoch-0002")
