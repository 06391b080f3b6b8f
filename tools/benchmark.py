"""Speed and memory of full training steps and of the depthwise-conv kernel.

Training step (forward + backward + AdamW step on a random clip already on the device): clips/s,
ms/step and peak memory, one row per combination of the listed modes.

    python tools/benchmark.py train --model videoconvmae_base_patch16 --batch 32 --precision bf16 \
        --mask-ratio 0.9 --visible-only on off --dwconv-backend triton torch --compile off on --json pretrain.json
    python tools/benchmark.py train --model videoconvvit_base_patch16 --batch 32 --precision bf16

Decoder masking (VideoMAE V2's dual masking): the pretraining step of one preset without and with
a decoder mask, the two models timed in turn for `--rounds` rounds of `--steps` steps (medians over
rounds, so a slower stretch of a shared machine hits both), and the ratio of their step times:

    python tools/benchmark.py decoder-mask --model videoconvmae_base_patch16 --batch 32 --precision bf16 \
        --mask-ratio 0.9 --visible-only on --dwconv-backend triton --decoder-mask-ratio 0.5 --json decoder_mask.json

Loader feeding the pretraining step (does the loader keep up?): the pretraining DataLoader over a
video list (the run's dataset, uint8 clips from `--workers` processes, pinned on a GPU) alone, the
step alone on one cached loader batch (copied and normalised on the device every step), and both
together, each as delivered clips/s (wall clock, after `--warmup` batches):

    python tools/benchmark.py loader --model videoconvmae_base_patch16 --list k400/train.csv \
        --data-root k400 --workers 16 --batch 32 --num-sample 2 --precision bf16 --mask-ratio 0.9 \
        --visible-only on --dwconv-backend triton --json loader.json

Depthwise conv alone (fwd and fwd+bwd ms, achieved GB/s against a measured device-to-device
copy; output error against an fp32 torch reference): dense through the kernel, through torch
(channels-last, what the models would otherwise run) and conv3d/conv2d on a channels-first tensor
(cuDNN on a GPU), and visible-only through the kernel and the torch reference.

    python tools/benchmark.py dwconv --shape 32 256 8 56 56 --kernel-size 3 5 5 --precision bf16 \
        --visible 0.1 --json dwconv.json

Peak memory is the CUDA allocator's peak on a GPU and the process's peak RSS on the CPU.
GB/s counts the minimum traffic: the forward reads x and writes y; the backward reads dy and x and
writes dx (index maps and weights are not counted).
"""
import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F

import timm

from video_mcmae.cli import run_cli
from video_mcmae.config import Config, ConfigError
from video_mcmae.data.factory import build_loader
from video_mcmae.data.loader import set_epoch
from video_mcmae.data.device import to_model_input
from video_mcmae.data.readers import BACKENDS, DEFAULT_BACKEND
from video_mcmae.models import PRESETS, dwconv, is_pretraining
from video_mcmae.models.masking import DECODER_MASK_TYPES

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    """Mean wall time of `fn` in ms over `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3 / max(steps, 1)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- training step --------------------------------------------------------------------------------
def _build_model(args, visible_only: bool, backend: str, device: torch.device, **pretrain_overrides):
    overrides = {"dwconv_backend": backend}
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.img_size is not None:
        overrides["img_size"] = args.img_size
    pretrain = is_pretraining(args.model)
    if pretrain:
        overrides.update(visible_only=visible_only, **pretrain_overrides)
        if args.mask_ratio is not None:
            overrides["mask_ratio"] = args.mask_ratio
    elif args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    return timm.create_model(args.model, **overrides).to(device).train(), pretrain


def _train_step(model, pretrain: bool, compiled: bool, precision: str, device: torch.device,
                batch: int) -> Callable[[torch.Tensor], None]:
    """step(clip): forward + backward + AdamW step (autocast in `precision`; random labels)."""
    labels = torch.randint(0, max(getattr(model, "num_classes", 1), 1), (batch,), device=device)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    dtype = DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step(clip: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = forward(clip)
            loss = out[0] if pretrain else F.cross_entropy(out.float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_train(args, visible_only: bool, backend: str, compiled: bool, device: torch.device) -> dict:
    torch.manual_seed(0)
    model, pretrain = _build_model(args, visible_only, backend, device)
    clip = torch.randn(args.batch, model.in_chans, *model.input_size, device=device)
    step = _train_step(model, pretrain, compiled, args.precision, device, args.batch)
    _reset_peak(device)
    ms = time_ms(lambda: step(clip), device, args.steps, args.warmup)
    return dict(bench="train", model=args.model, task="pretrain" if pretrain else "finetune",
                batch=args.batch, input=list(model.input_size), precision=args.precision,
                visible_only=visible_only if pretrain else None, dwconv_backend=backend, compile=compiled,
                ms_per_step=ms, clips_per_s=args.batch * 1e3 / ms, peak_mem_mib=_peak_mib(device))


# -- decoder masking ------------------------------------------------------------------------------
def bench_decoder_mask(args, device: torch.device) -> List[dict]:
    """The pretraining step without and with a decoder mask (the first --visible-only/--dwconv-backend/--compile),
    interleaved; one row per model with the median ms per step and its ratio to the unmasked one."""
    if not is_pretraining(args.model):
        raise ConfigError(f"--model {args.model}: decoder masking needs a pretraining preset (*convmae*)")
    visible_only, backend, compiled = args.visible_only[0] == "on", args.dwconv_backend[0], args.compile[0] == "on"
    steps, peaks = {}, {}
    for ratio in (0.0, args.decoder_mask_ratio):
        torch.manual_seed(0)
        model, _ = _build_model(args, visible_only, backend, device, decoder_mask_ratio=ratio,
                                decoder_mask_type=args.decoder_mask_type)
        steps[ratio] = _train_step(model, True, compiled, args.precision, device, args.batch)
        peaks[ratio] = 0.0
    clip = torch.randn(args.batch, model.in_chans, *model.input_size, device=device)
    times = {ratio: [] for ratio in steps}
    for ratio, step in steps.items():
        time_ms(lambda: step(clip), device, 0, args.warmup)
    for _ in range(args.rounds):
        for ratio, step in steps.items():
            _reset_peak(device)
            times[ratio].append(time_ms(lambda: step(clip), device, args.steps, 0))
            peaks[ratio] = max(peaks[ratio], _peak_mib(device))
    off = statistics.median(times[0.0])
    rows = []
    for ratio, ms_rounds in times.items():
        ms = statistics.median(ms_rounds)
        rows.append(dict(bench="decoder-mask", model=args.model, batch=args.batch, input=list(model.input_size),
                         precision=args.precision, visible_only=visible_only, dwconv_backend=backend, compile=compiled,
                         decoder_mask_ratio=ratio, decoder_mask_type=args.decoder_mask_type if ratio else None,
                         rounds=args.rounds, ms_per_step=ms, ms_rounds=ms_rounds, clips_per_s=args.batch * 1e3 / ms,
                         step_time_vs_unmasked=ms / off, peak_mem_mib=peaks[ratio]))
    return rows


# -- loader feeding the pretraining step ------------------------------------------------------------
def _loader_config(args, model) -> Config:
    """The pretraining data config of a run with these settings (the defaults of `Config` elsewhere)."""
    if args.batch % args.num_sample:
        raise ConfigError(f"--batch {args.batch} clips must be a multiple of --num-sample {args.num_sample} "
                          "(each video gives num_sample clips)")
    cfg = Config()
    d = cfg.data
    d.dataset, d.train_list, d.data_root, d.reader = args.dataset, args.list, args.data_root, args.reader
    d.num_workers, d.num_sample, d.sampling_rate, d.pin_memory = args.workers, args.num_sample, args.rate, True
    cfg.model.num_frames, cfg.model.img_size = model.input_size[0], model.input_size[-1]
    cfg.optim.batch_size = args.batch // args.num_sample
    return cfg


def _batches(loader):
    """The loader's batches over epochs, without end."""
    epoch = 0
    while True:
        set_epoch(loader, epoch)
        yield from loader
        epoch += 1


def bench_loader(args, device: torch.device) -> dict:
    if not (is_pretraining(args.model) and args.model.startswith("video")):
        raise ConfigError(f"--model {args.model}: the loader benchmark feeds a video pretraining preset "
                          "(videoconvmae_*)")
    torch.manual_seed(0)
    model, pretrain = _build_model(args, args.visible_only[0] == "on", args.dwconv_backend[0], device)
    cfg = _loader_config(args, model)
    batches = _batches(build_loader(cfg, "pretrain"))
    step = _train_step(model, pretrain, args.compile[0] == "on", args.precision, device, args.batch)
    mean, std = cfg.data.mean, cfg.data.std
    cached = next(batches)  # the workers' start-up and first decodes are not throughput
    loader_ms = time_ms(lambda: next(batches), torch.device("cpu"), args.steps, args.warmup)
    _reset_peak(device)
    model_ms = time_ms(lambda: step(to_model_input(cached, device, mean, std)), device, args.steps, args.warmup)
    both_ms = time_ms(lambda: step(to_model_input(next(batches), device, mean, std)), device, args.steps, args.warmup)
    rate = {name: args.batch * 1e3 / ms for name, ms in (("loader", loader_ms), ("model", model_ms), ("both", both_ms))}
    return dict(bench="loader", model=args.model, batch=args.batch, num_sample=args.num_sample, workers=args.workers,
                input=list(model.input_size), precision=args.precision, visible_only=args.visible_only[0] == "on",
                dwconv_backend=args.dwconv_backend[0], compile=args.compile[0] == "on",
                batch_dtype=str(cached.dtype).replace("torch.", ""),
                batch_mib=cached.nbytes / 2**20, loader_clips_per_s=rate["loader"], model_clips_per_s=rate["model"],
                both_clips_per_s=rate["both"], loader_keeps_up=rate["both"] >= 0.95 * rate["model"],
                peak_mem_mib=_peak_mib(device))


# -- depthwise conv -------------------------------------------------------------------------------
def copy_bandwidth_gbs(device: torch.device, nbytes: int, steps: int, warmup: int) -> float:
    """Device-to-device copy bandwidth (read + write) in GB/s."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, steps, warmup)
    return 2 * nbytes / ms / 1e6


def bench_dwconv(args, device: torch.device) -> List[dict]:
    dtype = DTYPES[args.precision]
    batch, channels, *grid = args.shape
    kernel = tuple(args.kernel_size)
    if len(kernel) != len(grid):
        raise SystemExit(f"--kernel-size {kernel} needs {len(grid)} entries for the grid {tuple(grid)}")
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, *grid, channels, generator=gen).to(device, dtype)
    weight = torch.randn(channels, 1, *kernel, generator=gen).div_(len(kernel) ** 0.5).to(device)
    bias = torch.zeros(channels, device=device)
    elem = x.element_size()
    copy_gbs = copy_bandwidth_gbs(device, x.numel() * elem, args.steps, args.warmup)

    masked = torch.rand(batch, *grid, generator=gen) >= args.visible
    index_map = torch.full((batch, *grid), -1, dtype=torch.int32)
    index_map[~masked] = torch.arange(int((~masked).sum()), dtype=torch.int32)
    index_map = index_map.to(device)
    positions = dwconv.visible_positions(index_map)
    rows = x.reshape(-1, channels)[positions.long()]
    conv = F.conv3d if len(grid) == 3 else F.conv2d
    x_cf = x.movedim(-1, 1).contiguous()

    cases = {  # name: (input, fn(input) -> output, rows counted)
        "dense/conv-channels-first": (x_cf, lambda t: conv(t, weight, bias, padding=[k // 2 for k in kernel],
                                                            groups=channels).movedim(1, -1), x.numel() // channels),
        "dense/torch": (x, lambda t: dwconv.depthwise_conv(t, weight, bias, backend="torch"), x.numel() // channels),
        "visible/torch": (rows, lambda t: dwconv.depthwise_conv_visible(t, index_map, weight, bias, positions,
                                                                         backend="torch"), rows.shape[0]),
    }
    use_triton = args.triton == "on" or (args.triton == "auto" and device.type == "cuda" and dwconv.triton_available())
    if use_triton:
        cases["dense/triton"] = (x, lambda t: dwconv.depthwise_conv(t, weight, bias, backend="triton"),
                                 x.numel() // channels)
        cases["visible/triton"] = (rows, lambda t: dwconv.depthwise_conv_visible(
            t, index_map, weight, bias, positions, backend="triton"), rows.shape[0])

    # fp32 references: every case's output is checked against its torch counterpart
    dense_ref = dwconv.depthwise_conv(x.float(), weight, bias, backend="torch")
    visible_ref = dwconv.depthwise_conv_visible(rows.float(), index_map, weight, bias, positions, backend="torch")
    results = []
    for name, (inp, raw_fn, n_rows) in cases.items():
        def fn(t, raw_fn=raw_fn):  # as in the models: half-precision activations, fp32 weights, autocast
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return raw_fn(t)

        inp = inp.detach().requires_grad_(True)
        w = weight.requires_grad_(True)
        with torch.no_grad():
            out = fn(inp)
        ref = visible_ref if name.startswith("visible") else dense_ref
        err = ((out.float() - ref).abs().max() / ref.abs().max()).item()
        grad = torch.randn_like(out)

        def fwd_bwd():
            torch.autograd.grad(fn(inp), (inp, w), grad)

        with torch.no_grad():
            fwd_ms = time_ms(lambda: fn(inp), device, args.steps, args.warmup)
        _reset_peak(device)
        total_ms = time_ms(fwd_bwd, device, args.steps, args.warmup)
        traffic = n_rows * channels * elem
        gbs = 5 * traffic / total_ms / 1e6
        results.append(dict(bench="dwconv", case=name, shape=list(args.shape), kernel=list(kernel),
                            precision=args.precision, visible=args.visible if name.startswith("visible") else 1.0,
                            fwd_ms=fwd_ms, fwd_bwd_ms=total_ms, fwd_gbs=2 * traffic / fwd_ms / 1e6,
                            fwd_bwd_gbs=gbs, copy_gbs=copy_gbs, fraction_of_copy=gbs / copy_gbs,
                            max_rel_err=err, peak_mem_mib=_peak_mib(device)))
    return results


# -- output ---------------------------------------------------------------------------------------
def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        if isinstance(value, list):
            return "x".join(map(str, value))
        return "-" if value is None else str(value)

    table = [list(columns)] + [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


TRAIN_COLUMNS = ("model", "task", "batch", "input", "precision", "visible_only", "dwconv_backend", "compile",
                 "ms_per_step", "clips_per_s", "peak_mem_mib")
DECODER_MASK_COLUMNS = ("model", "batch", "input", "precision", "visible_only", "dwconv_backend", "decoder_mask_ratio", "rounds",
                        "ms_per_step", "clips_per_s", "step_time_vs_unmasked", "peak_mem_mib")
LOADER_COLUMNS = ("model", "batch", "num_sample", "workers", "input", "precision", "batch_dtype", "batch_mib",
                  "loader_clips_per_s", "model_clips_per_s", "both_clips_per_s", "loader_keeps_up", "peak_mem_mib")
DWCONV_COLUMNS = ("case", "shape", "kernel", "precision", "visible", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_gbs",
                  "copy_gbs", "fraction_of_copy", "max_rel_err", "peak_mem_mib")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    common.add_argument("--precision", choices=DTYPES, default="bf16", help="autocast dtype (fp32 = no autocast)")
    common.add_argument("--steps", type=int, default=10, help="timed iterations")
    common.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    common.add_argument("--json", type=Path, help="also write the results here")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", required=True, choices=PRESETS, metavar="PRESET", help="preset name")
    model.add_argument("--batch", type=int, default=32, help="clips per step")
    model.add_argument("--frames", type=int, help="num_frames override (video presets)")
    model.add_argument("--img-size", type=int, help="img_size override")
    model.add_argument("--mask-ratio", type=float, help="pretraining mask ratio override")
    model.add_argument("--visible-only", nargs="+", choices=("on", "off"), default=["on"],
                       help="model.visible_only: the conv stages at the visible positions only (pretraining); "
                            "several values give several rows")
    model.add_argument("--dwconv-backend", nargs="+", choices=dwconv.BACKENDS, default=["auto"],
                       help="model.dwconv_backend (auto defers to $VIDEO_MCMAE_DWCONV when set)")
    model.add_argument("--compile", nargs="+", choices=("off", "on"), default=["off"], help="torch.compile")

    train = sub.add_parser("train", parents=[common, model], help="full training step of a preset")
    train.add_argument("--num-classes", type=int, help="classifier classes override")

    decoder = sub.add_parser("decoder-mask", parents=[common, model],
                             help="pretraining step without and with decoder masking, interleaved (the first "
                                  "--visible-only/--dwconv-backend/--compile)")
    decoder.add_argument("--decoder-mask-ratio", type=float, default=0.5, help="the masked model's decoder mask ratio")
    decoder.add_argument("--decoder-mask-type", choices=DECODER_MASK_TYPES, default="running_cell")
    decoder.add_argument("--rounds", type=int, default=5, help="rounds of --steps steps per model, in turn")

    loader = sub.add_parser("loader", parents=[common, model],
                            help="pretraining loader alone, step alone, both (the first --visible-only/--dwconv-backend/--compile)")
    loader.add_argument("--list", required=True, help="training list (tools/make_synthetic_dataset.py writes one)")
    loader.add_argument("--data-root", default="")
    loader.add_argument("--dataset", choices=("k400", "ssv2"), default="k400")
    loader.add_argument("--reader", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="data.reader (decord falls back to PyAV for a file it cannot read)")
    loader.add_argument("--workers", type=int, default=16, help="DataLoader worker processes")
    loader.add_argument("--num-sample", type=int, default=2, help="clips per decoded video (the recipe's 2)")
    loader.add_argument("--rate", type=int, default=4, help="data.sampling_rate")

    dw = sub.add_parser("dwconv", parents=[common], help="depthwise-conv micro-benchmark")
    dw.add_argument("--shape", type=int, nargs="+", default=[32, 256, 8, 56, 56], help="B C T H W or B C H W")
    dw.add_argument("--kernel-size", type=int, nargs="+", default=[3, 5, 5])
    dw.add_argument("--visible", type=float, default=0.1, help="visible fraction for the visible-only cases")
    dw.add_argument("--triton", choices=("auto", "on", "off"), default="auto",
                    help="include the Triton cases (auto: on CUDA when triton imports)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.bench == "train":
        combos = itertools.product(args.visible_only, args.dwconv_backend, args.compile)
        results = [bench_train(args, s == "on", k, c == "on", device) for s, k, c in combos]
        columns = TRAIN_COLUMNS
    elif args.bench == "decoder-mask":
        if not 0 < args.decoder_mask_ratio < 1 or args.rounds < 1:
            raise ConfigError(f"--decoder-mask-ratio must be in (0, 1) and --rounds >= 1; got "
                              f"{args.decoder_mask_ratio} and {args.rounds}")
        results = bench_decoder_mask(args, device)
        columns = DECODER_MASK_COLUMNS
    elif args.bench == "loader":
        results = [bench_loader(args, device)]
        columns = LOADER_COLUMNS
    else:
        results = bench_dwconv(args, device)
        columns = DWCONV_COLUMNS
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {args.bench} on {name}, torch {torch.__version__}")
    print(format_table(results, columns))
    if args.bench == "decoder-mask":
        off, on = results
        print(f"decoder mask {on['decoder_mask_ratio']:g} ({on['decoder_mask_type']}): step time x"
              f"{on['step_time_vs_unmasked']:.3f} of the unmasked step (medians of {args.rounds} interleaved rounds)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(device=name, torch=torch.__version__, results=results), indent=1))
    return results


if __name__ == "__main__":
    sys.exit(run_cli(main))
