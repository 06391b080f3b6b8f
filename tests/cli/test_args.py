"""The tools' shared arguments (video_mcmae.cli.args): the config and its overrides, a run's start."""
import argparse

from video_mcmae.cli.args import add_config_args, add_run_args, config_from_args


def test_cli_args():
    parser = add_config_args(argparse.ArgumentParser())
    args = parser.parse_args(["--config", "x.yaml", "--opt", "a.b=1", "--opt", "c.d=2"])
    assert args.opt == ["a.b=1", "c.d=2"]


def test_a_tool_s_shorthands_come_after_opt_and_output_dir_last(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {name: videoconvvit_tiny_patch16}\ndata: {dataset: k400}\nrun: {output_dir: a}\n")
    parser = add_run_args(argparse.ArgumentParser())
    args = parser.parse_args(["--config", str(config), "--opt", "data.dataset=image", "--opt", "run.output_dir=b",
                              "--output_dir", "c", "--local_rank", "1"])
    cfg = config_from_args(args, ["data.dataset=ssv2"])
    assert (cfg.data.dataset, cfg.run.output_dir) == ("ssv2", "c")
    assert (args.resume, args.auto_resume, args.local_rank) == ("", False, 1)
