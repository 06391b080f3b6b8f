"""A pretraining run killed with SIGKILL mid-epoch and restarted with --auto_resume ends with the
same global step, lr and weights as an uninterrupted run (plain `python`, one CPU process each;
the reference and the victim run side by side); with decoder masking too, whose masks the resumed
run must draw again exactly."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_PRETRAIN = os.path.join(REPO, "tools", "run_pretrain.py")
STEPS, EPOCHS = 5, 2


@pytest.mark.slow
@pytest.mark.parametrize("model_opts", [[], ["--opt", "model.decoder_mask_ratio=0.5"]], ids=["plain", "decoder_mask"])
def test_sigkill_mid_epoch_then_auto_resume_matches_uninterrupted(tmp_path, synthetic_root, child_env, resume_run_args,
                                                                  log_records, final_state, model_opts):
    ref_out, out = tmp_path / "reference", tmp_path / "victim"

    def args(out, *extra):
        return [sys.executable, RUN_PRETRAIN, *resume_run_args(out, synthetic_root, STEPS, EPOCHS, *model_opts, *extra)]

    reference = subprocess.Popen(args(ref_out), env=child_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(args(out), env=child_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if any(r["type"] == "iter" and r["epoch"] == 2 and r["iter"] >= 2 for r in log_records(out)):
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert victim.wait(timeout=60) == -signal.SIGKILL, "the victim finished before it could be killed"
    assert (out / "latest").read_text() == "epoch-0001" and not (out / "epoch-0002").exists()

    log, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, log[-3000:]
    resumed = subprocess.run(args(out, "--auto_resume"), env=child_env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout and "epoch 1, global step 5" in resumed.stdout

    ref_w, ref_meta, ref_last = final_state(ref_out)
    w, meta, last = final_state(out)
    assert meta["global_step"] == ref_meta["global_step"] == EPOCHS * STEPS
    assert last["step"] == ref_last["step"] and last["lr"] == ref_last["lr"]
    assert last["loss"] == pytest.approx(ref_last["loss"], rel=1e-6)
    for name, ref in ref_w.items():
        torch.testing.assert_close(w[name], ref, rtol=1e-6, atol=1e-7, msg=name)

    # a new (not resumed) run into the same folder refuses instead of overwriting
    again = subprocess.run(args(out), env=child_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr
