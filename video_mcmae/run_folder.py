"""The run folder: what a run's output dir (`run.output_dir`) holds, and every rule about its names.

    config.yaml            the config that started the run; a resume writes config.resume-1.yaml,
                           config.resume-2.yaml, ...; an evaluation eval_config.yaml, eval_config-1.yaml, ...
    log.jsonl, tensorboard/  the logs (`engine/logging.py`)
    epoch-0005/            a DeepSpeed checkpoint (tag = completed epochs)
    best/                  finetuning: the best validation accuracy so far
    latest                 the tag of the newest *complete* checkpoint
    epoch-0006.partial/    a save in progress, or one that was killed / ran out of disk space
    test/                  the multi-view report (the default `test.output_dir`)

A save is atomic at the folder level (`engine/checkpoint.save_checkpoint`): every rank writes into
`<tag>.partial/`, and only when all of them are done is the folder renamed to `<tag>`; `latest` is
replaced after that (tmp file + rename). A killed save therefore leaves a `.partial` folder and
the previous checkpoints as they were: the resume lookup ignores partial folders (and takes the
newest `epoch-NNNN` folder even when the kill came before `latest` was updated), they never count
as epoch checkpoints, and the next save of the same tag removes the leftover.

Writing checkpoints is `engine/checkpoint.py`; reading weights from them is `weights.py`.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from video_mcmae.errors import CheckpointError
from video_mcmae.paths import write_atomic

LATEST = "latest"
PARTIAL = ".partial"  # suffix of a tag folder whose save has not finished
BEST = "best"
TEST_DIR = "test"
# DeepSpeed's model-states file: a tag folder holding it is a complete checkpoint.
MODEL_STATES = "mp_rank_00_model_states.pt"
CONFIG_FILE = "config.yaml"
EVAL_CONFIG_FILE = "eval_config.yaml"
_EPOCH_TAG = re.compile(r"^epoch-(\d+)$")


# ---------------------------------------------------------------------------------------------
# Tags


def epoch_tag(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def epoch_of(tag: str) -> Optional[int]:
    """The epoch an `epoch-NNNN` tag names; None for other tags (`best`)."""
    match = _EPOCH_TAG.match(tag)
    return int(match.group(1)) if match else None


def epoch_tags(out_dir: str) -> List[str]:
    """Epoch checkpoint tags in `out_dir`, oldest first (`.partial` folders are not checkpoints)."""
    if not os.path.isdir(out_dir):
        return []
    tags = [t for t in os.listdir(out_dir) if _EPOCH_TAG.match(t) and os.path.isdir(os.path.join(out_dir, t))]
    return sorted(tags, key=epoch_of)


def partial_checkpoints(out_dir: str) -> List[str]:
    """Folders of saves that have not finished (`<tag>.partial`): killed, or out of disk space."""
    if not os.path.isdir(out_dir):
        return []
    return sorted(os.path.join(out_dir, t) for t in os.listdir(out_dir)
                  if t.endswith(PARTIAL) and os.path.isdir(os.path.join(out_dir, t)))


def is_complete(ckpt_dir: str) -> bool:
    return not ckpt_dir.endswith(PARTIAL) and os.path.isfile(os.path.join(ckpt_dir, MODEL_STATES))


# ---------------------------------------------------------------------------------------------
# `latest`


def read_latest(out_dir: str) -> Optional[str]:
    """The tag `latest` names, if it points at a complete checkpoint.

    The tag must name a folder of this run folder: a path (`../other_run/epoch-0001`, an
    absolute path) or a link leading out of it is refused, so that a resume never continues
    another run. A `latest` that is not a file (a FIFO) is not opened.
    """
    path = os.path.join(out_dir, LATEST)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        raw = f.read(4096)
    try:
        tag = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not a UTF-8 tag name (it should hold e.g. 'epoch-0005'); write the "
                              "tag of a checkpoint folder into it, or delete it (--auto_resume then takes the "
                              "newest epoch folder)") from None
    if not tag:
        return None
    inside = os.path.realpath(os.path.join(out_dir, tag))
    if (os.path.basename(tag) != tag or tag in (".", "..")
            or os.path.dirname(inside) != os.path.realpath(out_dir)):
        raise CheckpointError(f"{path} names {tag!r}, which is not a folder of this run folder (a path or a "
                              "link leading out of it); write the tag of one of its checkpoint folders into it "
                              "(e.g. epoch-0005), or delete it")
    return tag if is_complete(os.path.join(out_dir, tag)) else None


def write_latest(out_dir: str, tag: str) -> None:
    write_atomic(os.path.join(out_dir, LATEST), lambda f: f.write(tag.encode()))


# ---------------------------------------------------------------------------------------------
# Resume lookup and the rules that protect earlier checkpoints


def resolve_checkpoint(path: str) -> Tuple[str, str]:
    """(load_dir, tag) for a tag folder (`out/epoch-0005`) or a run's output dir (uses `latest`)."""
    path = os.path.abspath(path)
    if path.endswith(PARTIAL):
        raise CheckpointError(
            f"{path!r} is a checkpoint save that did not finish (the run was killed or ran out of disk "
            f"space while saving); resume a complete checkpoint (--auto_resume picks the newest) and "
            f"delete this folder"
        )
    if is_complete(path):
        return os.path.dirname(path), os.path.basename(path)
    if os.path.isdir(path):
        tag = read_latest(path)
        if tag is not None:
            return path, tag
    raise CheckpointError(
        f"{path!r} is not a complete DeepSpeed checkpoint: give a tag folder holding {MODEL_STATES} "
        f"(e.g. output/epoch-0005) or a run's output dir with a '{LATEST}' file"
    )


def find_auto_resume(out_dir: str) -> Optional[str]:
    """The newest complete checkpoint of a run, or None for a new run.

    That is the newest `epoch-NNNN` folder (a folder gets that name only once every rank has
    saved into it): what `latest` names, unless the run was killed between the rename and the
    update of `latest`. A `latest` naming another kind of tag is followed as it is.
    """
    latest = read_latest(out_dir)
    complete = [t for t in epoch_tags(out_dir) if is_complete(os.path.join(out_dir, t))]
    latest_epoch = None if latest is None else epoch_of(latest)
    if complete and (latest is None or (latest_epoch is not None and epoch_of(complete[-1]) > latest_epoch)):
        latest = complete[-1]
    return os.path.join(out_dir, latest) if latest else None


def ensure_fresh_output(out_dir: str) -> None:
    """A new (not resumed) run must not write over an earlier run's checkpoints."""
    found = [t for t in epoch_tags(out_dir) + [BEST] if os.path.isdir(os.path.join(out_dir, t))]
    if found or os.path.exists(os.path.join(out_dir, LATEST)):
        how = ("continue that run with --auto_resume" if read_latest(out_dir)
               else f"continue that run with --resume {os.path.join(out_dir, found[-1])}" if found
               else "remove its stale 'latest' file")
        raise CheckpointError(
            f"run.output_dir {out_dir!r} already holds checkpoints ({', '.join(found) or LATEST}); "
            f"{how}, or pick another --opt run.output_dir=..."
        )


def ensure_no_newer_checkpoints(out_dir: str, resumed_epoch: int) -> None:
    """Resuming an older checkpoint into a dir with newer epoch checkpoints would overwrite them."""
    newer = [t for t in epoch_tags(out_dir) if epoch_of(t) > resumed_epoch]
    if newer:
        raise CheckpointError(
            f"run.output_dir {out_dir!r} holds checkpoints newer than the resumed one (epoch {resumed_epoch}): "
            f"{', '.join(newer)}; they would be overwritten. Resume into another --output_dir, or resume "
            f"the newest with --auto_resume"
        )


# ---------------------------------------------------------------------------------------------
# Saved configs and the test report


def config_file(out_dir: str, resuming: bool, eval_only: bool) -> str:
    """The name the run's config is saved under. config.yaml records the run that made the output
    dir; a resume never replaces it and writes config.resume-N.yaml (N = 1, 2, ...) instead.
    Likewise eval_config.yaml records the first evaluation into the dir, and later ones write
    eval_config-N.yaml."""
    if eval_only:
        first, numbered = EVAL_CONFIG_FILE, "eval_config-{}.yaml"
    elif resuming:
        first, numbered = CONFIG_FILE, "config.resume-{}.yaml"
    else:
        return CONFIG_FILE
    if not os.path.exists(os.path.join(out_dir, first)):
        return first
    n = 1
    while os.path.exists(os.path.join(out_dir, numbered.format(n))):
        n += 1
    return numbered.format(n)


def report_dir(output_dir: str) -> str:
    """Where the multi-view report goes when `test.output_dir` is not set."""
    return os.path.join(output_dir, TEST_DIR)
