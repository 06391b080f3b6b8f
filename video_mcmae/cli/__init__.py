"""The command-line layer: what the tools in tools/ share, and the only part of the package that
parses arguments, writes the process environment or turns errors into exit statuses.

- `boundary.run_cli`: the one exception boundary of every tool (user errors -> one `error:` line,
  exit status 2; a non-finite loss -> 3).
- `args`: `--config` / `--opt`, and a training run's `--resume` / `--auto_resume` / `--output_dir`.
- `environment`: the variables a run needs (DeepSpeed's accelerator, a one-rank rendezvous,
  cuBLAS's workspace for `run.deterministic`), set for the duration of a command.
- `pretrain`, `finetune`, `multiview`: the `main(argv)` of tools/run_pretrain.py,
  tools/run_finetune.py, tools/test_multiview.py and tools/merge_multiview.py.

The engine and everything below it never import this package.
"""
from .boundary import run_cli

__all__ = ["run_cli"]
