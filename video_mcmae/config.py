"""Run configuration: YAML files merged over their `_base_`, command-line overrides, typed validation.

A run is described by one YAML file. `_base_: other.yaml` (a path relative to the file, or a
list of them) is merged underneath it, recursively. `--opt a.b=value` overrides come last; the
value is parsed as YAML (`--opt optim.betas=[0.9,0.95]`). The result is checked against the
dataclasses below: unknown keys, wrong types and impossible values are rejected with one message
naming the key, before any work starts.

Renamed keys (`RENAMED`) keep working under their old names, with one deprecation line per name
and process. A config recorded by an earlier run (in a checkpoint or an export) is read with
`recorded_config` / `recorded_model_config`, which also move what it set through `model.kwargs`
into the fields of the same name (older runs did; `build_model` now refuses it).
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple

import yaml

from video_mcmae.data.readers import DEFAULT_BACKEND
from video_mcmae.errors import ConfigError
from video_mcmae.paths import write_atomic
from video_mcmae.presets import is_pretraining_preset

logger = logging.getLogger(__name__)

BASE_KEY = "_base_"
# section -> {old key: new key}. One idea, one name: `visible_only` is the visible-only forward of
# models/visible.py, `dwconv_backend` the models' argument of the same name.
RENAMED = {"model": {"sparse": "visible_only", "use_kernel": "dwconv_backend"}}
_deprecations_logged: set = set()
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class ModelConfig:
    name: str = "videoconvmae_base_patch16"  # preset registered with timm
    num_frames: int = 16  # frames per clip fed to the model
    img_size: int = 224  # square input side; divisible by 16
    tubelet_size: int = 2  # temporal stride of the cube embedding
    num_classes: int = 400  # classifier outputs (ignored by pretraining presets)
    mask_ratio: float = 0.9  # fraction of stage-3 tokens hidden in pretraining
    mask_type: Literal["tube", "random"] = "tube"
    decoder_mask_ratio: float = 0.0  # share of the masked cubes the decoder drops in training (0 = none)
    decoder_mask_type: Literal["running_cell", "random"] = "running_cell"  # how they are drawn
    norm_pix_loss: bool = True  # per-cube, per-channel normalised targets
    drop_path_rate: float = 0.0
    drop_rate: float = 0.0  # dropout before the classifier head
    visible_only: bool = True  # pretraining: the conv stages run at the visible positions only (models/visible.py)
    dwconv_backend: Literal["auto", "triton", "torch"] = "auto"  # depthwise-conv backend (models/dwconv.py)
    compile: bool = False  # wrap the model in torch.compile
    grad_checkpointing: bool = False  # activation checkpointing of transformer blocks
    kwargs: Dict[str, Any] = field(default_factory=dict)  # extra keyword args for the preset


@dataclass
class DataConfig:
    dataset: Literal["k400", "ssv2", "image"] = "k400"  # decides sampling and the flip rule
    data_root: str = ""  # joined to relative paths in the lists
    train_list: str = ""
    val_list: str = ""
    test_list: str = ""
    class_names: str = ""  # optional file, one class name per line
    sampling_rate: int = 4  # frame stride of dense (K400) sampling
    short_side_size: int = 224  # resize target before val/test crops
    reader: Literal["decord", "pyav"] = DEFAULT_BACKEND
    num_workers: int = 8
    pin_memory: bool = True
    num_sample: int = 1  # repeated augmentation: clips drawn from one decode
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    max_bad_fraction: float = 0.05  # stop training when more of the list is unreadable
    test_num_temporal_views: Optional[int] = None  # default: 5 for k400, 2 for ssv2
    test_num_spatial_crops: int = 3


@dataclass
class AugConfig:
    rand_augment: str = "rand-m7-n4-mstd0.5-inc1"  # timm RandAugment spec; "" disables
    train_interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    crop_ratio: List[float] = field(default_factory=lambda: [0.75, 4.0 / 3.0])
    pretrain_scales: List[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])
    reprob: float = 0.25  # random erasing probability
    remode: Literal["pixel", "rand", "const"] = "pixel"
    recount: int = 1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: Literal["batch", "pair", "elem"] = "batch"
    smoothing: float = 0.1


@dataclass
class OptimConfig:
    batch_size: int = 32  # micro-batch per rank (clips; repeated samples multiply it)
    accum_steps: int = 1  # gradient accumulation steps
    epochs: int = 800
    warmup_epochs: float = 40
    base_lr: float = 1.5e-4  # lr = base_lr x effective global batch / 256
    lr: Optional[float] = None  # absolute lr; overrides base_lr when set
    min_lr: float = 1e-5  # base value, scaled like the lr
    warmup_lr: float = 0.0
    weight_decay: float = 0.05
    weight_decay_end: Optional[float] = None  # cosine wd schedule end; None = constant
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    clip_grad: Optional[float] = None
    layer_decay: float = 1.0  # layer-wise lr decay; 1.0 disables
    steps_per_epoch: Optional[int] = None  # cap optimizer steps per epoch (x accum_steps iterations; demos, smoke tests)


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 0  # 0, 1 or 2
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    initial_scale_power: int = 16  # fp16 dynamic loss scaling: initial scale 2**power
    loss_scale_window: int = 1000
    config: str = ""  # optional user DeepSpeed json; checked against this run config


@dataclass
class RunConfig:
    output_dir: str = "output"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 20  # iterations between console lines
    save_every: int = 20  # epochs between checkpoints (the last epoch is always saved)
    eval_every: int = 5  # epochs between validations (finetuning)
    keep_checkpoints: int = 2  # epoch checkpoints kept besides best/last; 0 keeps all
    accept_train_list_change: bool = False  # resume although the train list's sample count changed since the checkpoint
    deterministic: bool = False  # CUDA: deterministic algorithms and cuDNN (the CPU kernels repeat without it; docs/training.md)
    tensorboard: bool = True


@dataclass
class TestConfig:
    average: Literal["softmax", "logits"] = "softmax"  # how views are merged per video
    batch_size: int = 8
    topk: List[int] = field(default_factory=lambda: [1, 5])
    output_dir: str = ""  # multi-view report and per-rank shards; "" = <run.output_dir>/test


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    run: RunConfig = field(default_factory=RunConfig)
    test: TestConfig = field(default_factory=TestConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def num_temporal_views(self) -> int:
        if self.data.test_num_temporal_views is not None:
            return self.data.test_num_temporal_views
        return 2 if self.data.dataset == "ssv2" else 5


# ---------------------------------------------------------------------------------------------
# Loading and merging


class _StrictLoader(yaml.SafeLoader):
    """`yaml.safe_load`, except that a key given twice in one mapping (at any depth) is an error:
    PyYAML keeps the last silently, so a second `run:` section would replace the whole first one."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` overrides by design
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in lines:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} is given twice (lines {lines[key]} and {line}); keep one of them",
                            key_node.start_mark)
                    lines[key] = line
                except TypeError:  # an unhashable key: the base class reports it
                    continue
        return super().construct_mapping(node, deep)


def _yaml_problem(e: yaml.YAMLError) -> Tuple[Optional[int], str]:
    """(line, what) of a YAML error, on one line."""
    mark = getattr(e, "problem_mark", None)
    what = " ".join(str(part) for part in (getattr(e, "context", None), getattr(e, "problem", None)) if part)
    return (mark.line + 1 if mark is not None else None), " ".join((what or str(e)).split())


def parse_yaml(text: Any) -> Any:
    """YAML text (or an open file) parsed like `yaml.safe_load`, refusing keys given twice."""
    return yaml.load(text, Loader=_StrictLoader)


def _read_yaml(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path!r}; give a path to an existing YAML file")
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = parse_yaml(f)
        except yaml.constructor.ConstructorError as e:
            line, what = _yaml_problem(e)
            if "given twice" in what:
                raise ConfigError(f"{path}:{line}: {what}") from None
            raise ConfigError(f"{path}:{line}: not valid YAML ({what}); fix the file there") from None
        except yaml.YAMLError as e:
            line, what = _yaml_problem(e)
            raise ConfigError(f"{path}:{line}: not valid YAML ({what}); fix the file there") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} "
                              f"at offset {e.start}); save it as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive dict merge; values in `override` win, nested mappings merge."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml_with_bases(path: str, _seen: Optional[List[str]] = None) -> Dict[str, Any]:
    path = os.path.abspath(path)
    seen = list(_seen or [])
    if path in seen:
        chain = " -> ".join(seen + [path])
        raise ConfigError(f"config `_base_` chain loops: {chain}")
    data = rename_deprecated(_read_yaml(path), path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `_base_` must be a path or a list of paths")
    merged: Dict[str, Any] = {}
    for b in bases:
        bpath = b if os.path.isabs(b) else os.path.join(os.path.dirname(path), b)
        merged = merge(merged, load_yaml_with_bases(bpath, seen + [path]))
    return merge(merged, data)


def rename_deprecated(data: Dict[str, Any], source: str, log: bool = True) -> Dict[str, Any]:
    """`data` (one file's or override's mapping of sections) with `RENAMED` keys under their new
    names; the first use of each old name in the process is logged (unless `log` is off)."""
    out = dict(data)
    for section, names in RENAMED.items():
        values = out.get(section)
        if not isinstance(values, dict) or not set(names) & set(values):
            continue
        values = dict(values)
        for old, new in names.items():
            if old not in values:
                continue
            if new in values:
                raise ConfigError(f"{source}: {section}.{old} is the old name of {section}.{new}; give only "
                                  f"{section}.{new}")
            values[new] = values.pop(old)
            if log and (section, old) not in _deprecations_logged:
                _deprecations_logged.add((section, old))
                logger.warning("config key %s.%s (%s) is deprecated: it is now %s.%s", section, old, source,
                               section, new)
        out[section] = values
    return out


def parse_override(opt: str) -> Dict[str, Any]:
    """`a.b=value` -> {'a': {'b': value}} with the value parsed as YAML."""
    if "=" not in opt:
        raise ConfigError(f"override {opt!r} must look like section.key=value (e.g. optim.epochs=10)")
    key, raw = opt.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {opt!r} has an empty key; write section.key=value")
    out: Dict[str, Any] = _parse_value(raw, f"override {opt!r}")
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _parse_value(raw: str, where: str) -> Any:
    try:
        return parse_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: value is not valid YAML ({_yaml_problem(e)[1]})") from None


def parse_typed(raw: str, tp: Any, where: str) -> Any:
    """One value given as text (a command-line flag's) read as YAML, like `--opt`'s, and checked
    against the declared type `tp` of the field it sets (`null` clears an Optional one)."""
    return _coerce(_parse_value(raw, where), tp, where)


# ---------------------------------------------------------------------------------------------
# Typed construction


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin in (list, List):
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner)}"
    if origin in (dict, Dict):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}{hint}")
        return value
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML reads exponent notation without a dot (1e-3) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} at {where}")


def _unknown_key(where: str, key: str, valid: List[str]) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"unknown config key {where + key!r}{hint}")


def _build(cls, data: Dict[str, Any], prefix: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(prefix, str(key), names)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}")
    return cls(**kwargs)


def _float_values(obj, prefix: str = ""):
    """(key, value) of every float field of the config's sections (list items included, nulls
    left out); `model.kwargs` is the preset's business."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            yield from _float_values(value, key + ".")
        elif isinstance(value, float):
            yield key, value
        elif isinstance(value, list):
            yield from ((f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, float))


def validate(cfg: Config) -> Config:
    """Reject impossible values before any work starts."""
    m, d, o, a = cfg.model, cfg.data, cfg.optim, cfg.aug

    def bad(key: str, msg: str):
        raise ConfigError(f"{key}: {msg}")

    # NaN passes every `x < 0` test below, and no option means anything at infinity.
    for key, value in _float_values(cfg):
        if not math.isfinite(value):
            bad(key, f"must be a finite number, got {value}")
    if not 0.0 < m.mask_ratio < 1.0:
        bad("model.mask_ratio", f"must be in (0, 1), got {m.mask_ratio}")
    if not 0.0 <= m.decoder_mask_ratio < 1.0:
        bad("model.decoder_mask_ratio", f"must be in [0, 1) (0 = the decoder reconstructs every masked cube; "
                                        f"VideoMAE V2 drops 0.5), got {m.decoder_mask_ratio}")
    if m.img_size <= 0 or m.img_size % 16:
        bad("model.img_size", f"must be a positive multiple of 16, got {m.img_size}")
    if m.tubelet_size <= 0:
        bad("model.tubelet_size", f"must be positive, got {m.tubelet_size}")
    if d.dataset != "image" and (m.num_frames <= 0 or m.num_frames % m.tubelet_size):
        bad("model.num_frames", f"must be a positive multiple of model.tubelet_size={m.tubelet_size}, got {m.num_frames}")
    if m.num_classes <= 0:
        bad("model.num_classes", f"must be positive, got {m.num_classes}")
    if not 0.0 <= m.drop_path_rate < 1.0:
        bad("model.drop_path_rate", f"must be in [0, 1), got {m.drop_path_rate}")
    if not 0.0 <= m.drop_rate < 1.0:
        bad("model.drop_rate", f"must be in [0, 1), got {m.drop_rate}")
    if d.sampling_rate <= 0:
        bad("data.sampling_rate", f"must be positive, got {d.sampling_rate}")
    if d.short_side_size < m.img_size:
        bad("data.short_side_size", f"must be >= model.img_size={m.img_size}, got {d.short_side_size}")
    if d.num_workers < 0:
        bad("data.num_workers", f"must be >= 0, got {d.num_workers}")
    if d.num_sample <= 0:
        bad("data.num_sample", f"must be >= 1, got {d.num_sample}")
    if len(d.mean) != 3 or len(d.std) != 3:
        bad("data.mean/data.std", "need 3 values each (RGB)")
    if any(s <= 0 for s in d.std):
        bad("data.std", f"must be positive, got {d.std}")
    if not 0.0 <= d.max_bad_fraction <= 1.0:
        bad("data.max_bad_fraction", f"must be in [0, 1], got {d.max_bad_fraction}")
    if d.test_num_temporal_views is not None and d.test_num_temporal_views <= 0:
        bad("data.test_num_temporal_views", f"must be >= 1, got {d.test_num_temporal_views}")
    if d.test_num_spatial_crops <= 0:
        bad("data.test_num_spatial_crops", f"must be >= 1, got {d.test_num_spatial_crops}")
    if len(a.crop_scale) != 2 or not 0 < a.crop_scale[0] <= a.crop_scale[1] <= 1:
        bad("aug.crop_scale", f"must be [min, max] with 0 < min <= max <= 1, got {a.crop_scale}")
    if len(a.crop_ratio) != 2 or not 0 < a.crop_ratio[0] <= a.crop_ratio[1]:
        bad("aug.crop_ratio", f"must be [min, max] with 0 < min <= max, got {a.crop_ratio}")
    if not a.pretrain_scales or any(not 0 < s <= 1 for s in a.pretrain_scales):
        bad("aug.pretrain_scales", f"must be a non-empty list of values in (0, 1], got {a.pretrain_scales}")
    for key in ("reprob", "mixup_prob", "mixup_switch_prob"):
        if not 0.0 <= getattr(a, key) <= 1.0:
            bad(f"aug.{key}", f"must be in [0, 1], got {getattr(a, key)}")
    if not 0.0 <= a.smoothing < 1.0:
        bad("aug.smoothing", f"must be in [0, 1), got {a.smoothing}")
    for key in ("mixup", "cutmix"):
        if getattr(a, key) < 0:
            bad(f"aug.{key}", f"alpha must be >= 0, got {getattr(a, key)}")
    if o.batch_size <= 0:
        bad("optim.batch_size", f"must be >= 1, got {o.batch_size}")
    if o.accum_steps <= 0:
        bad("optim.accum_steps", f"must be >= 1, got {o.accum_steps}")
    if o.epochs <= 0:
        bad("optim.epochs", f"must be >= 1, got {o.epochs}")
    if not 0 <= o.warmup_epochs <= o.epochs:
        bad("optim.warmup_epochs", f"must be in [0, optim.epochs={o.epochs}], got {o.warmup_epochs}")
    for key in ("base_lr", "lr"):
        value = getattr(o, key)
        if value is not None and value <= 0:
            bad(f"optim.{key}", f"learning rates must be positive, got {value}")
    for key in ("min_lr", "warmup_lr", "weight_decay", "weight_decay_end"):
        value = getattr(o, key)
        if value is not None and value < 0:
            bad(f"optim.{key}", f"must be >= 0, got {value}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        bad("optim.betas", f"must be two values in [0, 1), got {o.betas}")
    if o.eps <= 0:
        bad("optim.eps", f"must be positive, got {o.eps}")
    if o.clip_grad is not None and o.clip_grad <= 0:
        bad("optim.clip_grad", f"must be positive or null, got {o.clip_grad}")
    if not 0 < o.layer_decay <= 1:
        bad("optim.layer_decay", f"must be in (0, 1], got {o.layer_decay}")
    if o.steps_per_epoch is not None and o.steps_per_epoch <= 0:
        bad("optim.steps_per_epoch", f"must be >= 1 or null, got {o.steps_per_epoch}")
    if cfg.deepspeed.zero_stage not in (0, 1, 2):
        bad("deepspeed.zero_stage", f"must be 0, 1 or 2, got {cfg.deepspeed.zero_stage}")
    if cfg.run.log_every <= 0 or cfg.run.save_every <= 0 or cfg.run.eval_every <= 0:
        bad("run.log_every/save_every/eval_every", "must be >= 1")
    if cfg.test.batch_size <= 0:
        bad("test.batch_size", f"must be >= 1, got {cfg.test.batch_size}")
    if not cfg.test.topk or any(k <= 0 for k in cfg.test.topk):
        bad("test.topk", f"must be a non-empty list of positive ints, got {cfg.test.topk}")
    _validate_across_sections(cfg)
    return cfg


def _validate_across_sections(cfg: Config) -> None:
    """Rules that tie the model preset to other sections."""
    m = cfg.model
    try:
        pretraining = is_pretraining_preset(m.name)
    except ValueError as e:  # an unknown preset: the message lists the valid ones
        raise ConfigError(f"model.name: {e}") from None
    if pretraining:
        if m.drop_path_rate or m.drop_rate:
            raise ConfigError("model.drop_path_rate/model.drop_rate apply to classifiers; set them to 0 for pretraining")
    elif (cfg.aug.mixup > 0 or cfg.aug.cutmix > 0) and (cfg.optim.batch_size * cfg.data.num_sample) % 2:
        # timm's Mixup pairs each clip with the batch flipped: it needs an even batch
        raise ConfigError("aug.mixup/cutmix need an even batch: make optim.batch_size x data.num_sample even")


def recorded_config(data: Dict[str, Any]) -> Dict[str, Any]:
    """A config mapping as an earlier run recorded it (`Config.to_dict()` in a checkpoint, an
    export's sections) in today's names: renamed keys under their new names (not logged: nobody
    wrote them now), and `model.kwargs` entries that name a `ModelConfig` field moved into that
    field (the run's kwargs won over the field; `build_model` now refuses such kwargs)."""
    out = rename_deprecated(data, "a recorded config", log=False)
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("kwargs"), dict):
        fields = {f.name for f in dataclasses.fields(ModelConfig)} - {"kwargs"}
        kwargs = dict(model["kwargs"])
        moved = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        if moved:
            out["model"] = {**model, **moved, "kwargs": kwargs}
    return out


def recorded_model_config(model: Dict[str, Any]) -> ModelConfig:
    """The `ModelConfig` of a model section an earlier run recorded (see `recorded_config`)."""
    return _build(ModelConfig, recorded_config({"model": model})["model"], "model.")


def from_dict(data: Dict[str, Any]) -> Config:
    return validate(_build(Config, data, ""))


def load_config(path: Optional[str] = None, opts: Optional[List[str]] = None) -> Config:
    """Load `path` (with its `_base_` chain), apply `opts` overrides, validate."""
    data = load_yaml_with_bases(path) if path else {}
    for opt in opts or []:
        data = merge(data, rename_deprecated(parse_override(opt), f"--opt {opt}"))
    return from_dict(data)


def save_config(cfg: Config, out_dir: str, name: str = "config.yaml") -> str:
    """Write the resolved config next to a run's outputs; returns the file path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    write_atomic(path, lambda f: f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode()))
    return path


def config_diff(old: Dict[str, Any], new: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """`section.key` -> (old value, new value) for every field that differs between two configs in
    `Config.to_dict()` form. Fields missing on either side (a config of another version) are not
    compared; dict-valued fields (`model.kwargs`) compare whole."""
    changed = {}
    for section, fields in new.items():
        before = old.get(section)
        if not isinstance(fields, dict) or not isinstance(before, dict):
            continue
        for key, value in fields.items():
            if key in before and before[key] != value:
                changed[f"{section}.{key}"] = (before[key], value)
    return changed

