"""The training steps on uint8 batches (normalised, erased and mixed on the device) give the losses
the float batches the workers used to deliver gave."""
import numpy as np
import pytest
import timm
import torch
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from video_mcmae.data.device import ClipErasing, StepSeeds, normalize_batch
from video_mcmae.data.transforms import VideoMixup
from video_mcmae.engine.finetune import evaluate, finetune_step
from video_mcmae.engine.pretrain import pretrain_step

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Engine:
    """What the steps use of a DeepSpeed engine: the module, its device and precision."""

    def __init__(self, module: nn.Module):
        self.module, self.device = module, torch.device("cpu")

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def bfloat16_enabled(self):
        return False

    def fp16_enabled(self):
        return False

    def eval(self):
        self.module.eval()


def clips(b=4):
    return torch.randint(0, 256, (b, 3, 4, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(b))


def test_pretrain_step_on_uint8_equals_the_float_batch():
    torch.manual_seed(0)
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, data_mean=MEAN, data_std=STD)
    engine, step, x = Engine(model), pretrain_step(MEAN, STD), clips()
    loss, metrics = step(engine, x, torch.Generator().manual_seed(1))
    loss_f, metrics_f = step(engine, normalize_batch(x, MEAN, STD), torch.Generator().manual_seed(1))
    assert loss.item() == pytest.approx(loss_f.item(), abs=1e-6)
    assert metrics == pytest.approx(metrics_f, abs=1e-6)
    other, _ = step(engine, x, torch.Generator().manual_seed(2))  # another mask: the generator is used
    assert other.item() != pytest.approx(loss.item(), abs=1e-6)


def finetune_loss(engine, step, batch, seed):
    np.random.seed(seed)  # mixup draws from the global generators, which the loop seeds every epoch
    torch.manual_seed(seed)
    return step(engine, batch, torch.Generator().manual_seed(seed)).item()


def test_finetune_step_on_uint8_equals_the_float_batch_with_erasing_and_mixup():
    torch.manual_seed(0)
    model = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=3)
    engine, x, y = Engine(model), clips(), torch.tensor([0, 1, 2, 1])
    mixup = VideoMixup(num_classes=3, label_smoothing=0.1)
    erasing = ClipErasing(1.0, mode="pixel")
    step = finetune_step(mixup, SoftTargetCrossEntropy(), MEAN, STD, erasing)
    loss = finetune_loss(engine, step, (x, y), 3)
    # the float batch, erased as the step erases it (the same seed from the same generator)
    plain = finetune_step(mixup, SoftTargetCrossEntropy(), MEAN, STD)
    seed = StepSeeds()(torch.Generator().manual_seed(3))
    erased = erasing(normalize_batch(x, MEAN, STD), seed)
    assert loss == pytest.approx(finetune_loss(engine, plain, (erased, y), 3), abs=1e-6)
    assert loss != pytest.approx(finetune_loss(engine, plain, (normalize_batch(x, MEAN, STD), y), 3), abs=1e-6)
    assert loss != pytest.approx(finetune_loss(engine, step, (x, y), 3), abs=1e-6)  # the next step erases anew
    again = finetune_step(mixup, SoftTargetCrossEntropy(), MEAN, STD, erasing)  # a rerun (or resumed run)
    assert loss == pytest.approx(finetune_loss(engine, again, (x, y), 3), abs=1e-6)

    no_aug = finetune_step(None, nn.CrossEntropyLoss(), MEAN, STD)
    assert finetune_loss(engine, no_aug, (x, y), 0) == pytest.approx(
        finetune_loss(engine, no_aug, (normalize_batch(x, MEAN, STD), y), 0), abs=1e-6)


def test_evaluate_normalises_uint8_batches():
    torch.manual_seed(0)
    model = timm.create_model("videoconvvit_tiny_patch16", num_frames=4, img_size=32, num_classes=3)
    x, y = clips(), torch.tensor([0, 1, 2, 1])
    got = evaluate(Engine(model), [(x, y)], [1], 3, MEAN, STD)
    expected = evaluate(Engine(model), [(normalize_batch(x, MEAN, STD), y)], [1], 3, MEAN, STD)
    assert got == pytest.approx(expected, abs=1e-6)
    with torch.no_grad():
        logits = model(normalize_batch(x, MEAN, STD))
    assert got["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), abs=1e-5)


@pytest.mark.parametrize("decoder_mask_ratio", [0.0, 0.5])
def test_pretrain_step_draws_the_models_masks_and_scores_the_baselines_on_the_same_cubes(decoder_mask_ratio):
    torch.manual_seed(0)
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, data_mean=MEAN, data_std=STD,
                              decoder_mask_ratio=decoder_mask_ratio)
    engine, step, x = Engine(model), pretrain_step(MEAN, STD), normalize_batch(clips(), MEAN, STD)
    loss, metrics = step(engine, x, torch.Generator().manual_seed(1))
    # the model's own draws from the same generator: the encoder mask, then the decoder mask
    assert torch.equal(loss, model(x, generator=torch.Generator().manual_seed(1))[0])
    g = torch.Generator().manual_seed(1)
    mask = model.draw_mask(x, g)
    decoder_mask = model.draw_decoder_mask(mask, g)
    assert (decoder_mask is None) == (decoder_mask_ratio == 0)
    baselines = model.trivial_baselines(x, mask, decoder_mask)
    assert metrics == {**baselines, "loss_vs_best_baseline": loss.item() / min(baselines.values())}
    zero = model.forward_loss(x, torch.zeros(*mask.shape, model.patch_dim), mask, decoder_mask)
    assert metrics["baseline_zero"] == pytest.approx(zero.item(), rel=1e-6)
