"""tools/export_weights.py: user errors give one line and exit 2, nothing is overwritten.
(Exports of real ZeRO-0/1/2 checkpoints: tests/engine/test_checkpoint.py, test_run_pretrain.py.)"""


def test_missing_checkpoint_and_existing_output(tmp_path, capsys, load_tool):
    tool = load_tool("export_weights")
    assert tool.main([str(tmp_path / "nope"), str(tmp_path / "w")]) == 2
    assert "not a complete DeepSpeed checkpoint" in capsys.readouterr().err
    ckpt = tmp_path / "run" / "epoch-0001"
    ckpt.mkdir(parents=True)
    (ckpt / "mp_rank_00_model_states.pt").write_bytes(b"")
    (tmp_path / "w.json").write_text("{}")
    assert tool.main([str(ckpt), str(tmp_path / "w")]) == 2
    assert "w.json' exists; choose another output name or pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "w.json").read_text() == "{}"
    assert tool.main([str(ckpt), str(tmp_path / "w"), "--overwrite"]) == 2  # an empty (truncated) file
    assert "cannot read" in capsys.readouterr().err
