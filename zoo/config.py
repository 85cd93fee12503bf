"""The settings of a fine-tune, stated once.

Each field of ``FinetuneConfig`` (and of ``Launch`` and ``Publish``, the settings of how a run is
started and published) carries a ``Setting``: its type, range or choices, help text, the default
in words where it is not a value, its command-line flag, and whether ``--resume`` may change it.
From that one statement come the options of ``zoo finetune`` (zoo.cli), the check of every value
from a flag, a ``--config`` file, a run's run_config.yaml or a Python keyword (``check``), and the
option table in docs/cli.md (``markdown_table``). The file format is here too (``load_file``,
``dump``).

No torch or numpy here: ``zoo finetune --help`` and every check run before either is imported.
Names that plugins register (heads, freeze policies, datasets, backbones) are checked later,
against the plugin registry, with "did you mean".
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo import yamlfile
from zoo.errors import UsageError, closest, shown

AUGMENTATIONS = ("none", "light", "default")
AMP_MODES = ("auto", "bf16", "off")
METRICS = ("top1", "loss")
HUB_STRATEGIES = ("end", "best")
BATCH_SIZE = 64  # without --batch-size, unless there are fewer training images (then one batch of all of them)
WITHOUT_RECIPE = {"freeze": "none", "lr": 0.05, "epochs": 5, "aug": "light", "freeze_bn": False}  # what zoo.recipe leaves when it does not apply
INT_MAX = 2**31 - 1  # counts reach torch and numpy as 32-bit integers: a larger one overflows there, not here
GROUPS = {"model": "Data, model and freezing", "optimization": "Optimization",
          "processes": "Several processes and machines (see [distributed.md](distributed.md))", "publish": "Publishing"}


@dataclass(frozen=True)
class Setting:
    """What a value of one field may be, and how it is given on the command line."""

    kind: type  # bool, int, float, str or dict
    help: str
    optional: bool = False  # None is allowed: "not given", decided later as ``shown`` says
    low: float | None = None
    high: float | None = None  # for int, INT_MAX when not given (said only to a value above it)
    open_low: bool = False  # low itself is not allowed
    open_high: bool = False
    choices: tuple[str, ...] = ()
    pattern: str = ""  # a str must match it (re.fullmatch); ``text`` says it in words
    text: str = ""
    shown: str = ""  # the default in words, where it is not a value (click shows it as "(...)")
    group: str = "optimization"
    resume: bool = False  # ``--resume`` may change it; every other field is the run's
    flag: str | None = None  # the command-line form; None: --name-with-dashes (and --no-... for a bool); "": none
    metavar: str = ""
    pairs: bool = False  # a dict given as repeated KEY=VALUE flags, each value read as YAML
    more: str = ""  # a further sentence for the docs table only

    def requirement(self) -> str:
        """What the value must be, in words: '... must be <this>, got ...'."""
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is dict:
            return "a mapping of names to values"
        if self.kind is str:
            return self.text or "non-empty text"
        noun = "a whole number" if self.kind is int else "a number"
        if self.low is not None and self.high not in (None, INT_MAX):
            if self.kind is int:
                return f"{noun} from {_num(self.low)} to {_num(self.high)}"
            return f"{noun} in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}{')' if self.open_high else ']'}"
        if (self.low == 0 and self.open_low) or (self.kind is int and self.low == 1):
            return f"a positive {'whole ' if self.kind is int else ''}number"
        if self.low is not None:
            return f"{noun} {'>' if self.open_low else '>='} {_num(self.low)}"
        return noun

    def check(self, value: Any, label: str) -> Any:
        """``value`` when it is allowed (a float as float), else a one-line UsageError that names ``label``."""
        if value is None and self.optional:
            return None
        if not self._fits(value):
            need = self.requirement()
            if ((self.kind is int and self.high is None) or self.high == INT_MAX) and _number(value) and INT_MAX < value < math.inf:
                need += f" up to {INT_MAX}"
            raise UsageError(f"{label} must be {need}, got {_got(value)}")
        return float(value) if self.kind is float else value

    def _fits(self, value: Any) -> bool:
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is dict:
            return isinstance(value, dict) and all(isinstance(k, str) and k for k in value)
        if self.kind is str:
            return (isinstance(value, str) and bool(value) and (not self.choices or value in self.choices)
                    and (not self.pattern or re.fullmatch(self.pattern, value) is not None))
        if not _number(value) or (self.kind is int and not isinstance(value, int)):
            return False
        if self.kind is float and not (abs(value) < 1e308 if isinstance(value, int) else math.isfinite(value)):
            return False
        high = INT_MAX if self.kind is int and self.high is None else self.high  # a float is capped only where said
        return ((self.low is None or (value > self.low if self.open_low else value >= self.low))
                and (high is None or (value < high if self.open_high else value <= high)))

    def parse(self, text: str, label: str) -> Any:
        """A value given as text on the command line, checked."""
        try:
            value = int(text) if self.kind is int else float(text) if self.kind is float else text
        except ValueError:
            value = text
        return self.check(value, label)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else f"{x}"


def _got(value: Any) -> str:
    if isinstance(value, int) and value.bit_length() > 1000:  # Python refuses to write an int of over 4300 digits
        return f"a whole number of {value.bit_length()} bits"
    text = repr(value) if isinstance(value, (str, list, dict, tuple)) else str(value)
    return shown(text if len(text) <= 60 else text[:57] + "...")


def about(**kw: Any) -> dict:
    """A field's metadata: its Setting."""
    return {"setting": Setting(**kw)}


def setting(default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with its Setting (a mapping is written ``field(default_factory=dict, metadata=about(...))``)."""
    return field(default=default, metadata=about(**kw))


def _recipe(name: str, otherwise: str | None = None) -> str:
    return f"the default recipe's for a pretrained backbone, else {otherwise or WITHOUT_RECIPE[name]}"


@dataclass
class FinetuneConfig:
    """Everything that decides a fine-tune. Saved as run_config.yaml; ``--config`` reads it back."""

    backbone: str = setting(kind=str, help="Registry name, timm name, hf-hub:ORG/NAME or local-dir:PATH (zoo list).",
                            group="model", flag="")  # the BACKBONE argument
    data: str = setting(kind=str, group="model", shown="required unless --config or --resume gives it", text="a data spec",
                        help="Data spec: a folder, a .csv, imagefolder:PATH, csv:FILE, fashion-mnist[:DIR], digits, synthetic "
                             "(or a plugin's dataset).")
    head: str = setting("linear", kind=str, group="model", text="a head name", help="Head name (zoo list heads).")
    head_opts: dict = field(default_factory=dict, metadata=about(kind=dict, group="model", flag="--head-opt", pairs=True, shown="none",
                              help="Head option, repeatable; the value is read as YAML (hidden=128)."))
    freeze: str | None = setting(None, kind=str, optional=True, group="model", shown=_recipe("freeze"), text="a freeze policy name",
                                 help="Freeze policy (zoo list freeze).")
    freeze_opts: dict = field(default_factory=dict, metadata=about(kind=dict, group="model", flag="--freeze-opt", pairs=True, shown="none",
                                help="Freeze policy option, repeatable; the value is read as YAML (n=2)."))
    model_args: dict = field(default_factory=dict, metadata=about(kind=dict, group="model", flag="--model-arg", pairs=True, shown="none",
                               help="Argument for timm.create_model, repeatable; the value is read as YAML (drop_path_rate=0.1)."))
    epochs: int | None = setting(None, kind=int, optional=True, low=1, shown=_recipe("epochs"), resume=True,
                                 help="Number of epochs.")
    batch_size: int | None = setting(None, kind=int, optional=True, low=1, shown=f"{BATCH_SIZE}, or all the training images when fewer",
                                     help="Images per batch (per process with --nproc-per-node).",
                                     more="A given size must be at most the number of training images.")
    lr: float | None = setting(None, kind=float, optional=True, low=0, open_low=True, shown=_recipe("lr"),
                               help="Peak learning rate (SGD).")
    momentum: float = setting(0.9, kind=float, low=0, high=1, open_high=True, help="SGD momentum.")
    nesterov: bool = setting(False, kind=bool, help="Nesterov momentum (needs --momentum above 0).")
    weight_decay: float = setting(1e-4, kind=float, low=0,
                                  help="Weight decay (not applied to biases and normalization parameters).")
    warmup_epochs: float = setting(0.0, kind=float, low=0, high=INT_MAX,
                                   help="Linear warm-up, in epochs (fractions allowed), before the cosine decay.")
    label_smoothing: float = setting(0.0, kind=float, low=0, high=1, open_high=True, help="Label smoothing.")
    accum_steps: int = setting(1, kind=int, low=1, help="Gradient accumulation: one update every N batches.")
    clip_grad: float | None = setting(None, kind=float, optional=True, low=0, open_low=True, shown="off",
                                      help="Clip the gradient norm to this value.")
    amp: str = setting("auto", kind=str, choices=AMP_MODES, help="Mixed precision: auto is bf16 autocast on CUDA, off on CPU.")
    channels_last: bool | None = setting(None, kind=bool, optional=True, shown="on for convolutional nets",
                                         help="Memory format of the model and the batches.")
    ema_decay: float | None = setting(None, kind=float, optional=True, low=0, high=1, open_low=True, open_high=True, shown="off",
                                      help="Keep an EMA of the weights with this decay (e.g. 0.999).")
    img_size: int | None = setting(None, kind=int, optional=True, low=8, high=4096, group="model",
                                   shown=_recipe("img_size", "its pretrained size"), help="Input size, in pixels.")
    crop_pct: float | None = setting(None, kind=float, optional=True, low=0, high=1, open_low=True, group="model",
                                     shown="the backbone's",
                                     help="Center crop: resize to size/crop-pct, crop to size; 1 keeps the whole image.",
                                     more="Saved in `config.json`, so `zoo predict` crops the same way "
                                          "([images](finetuning.md#images)).")
    aug: str | None = setting(None, kind=str, optional=True, choices=AUGMENTATIONS, group="model", shown=_recipe("aug"),
                              help="Training augmentation: light is random shifts; the strongest adds flips and scale.")
    freeze_bn: bool | None = setting(None, kind=bool, optional=True, group="model", shown=_recipe("freeze_bn", "off"),
                                     help="Keep the backbone's BatchNorm statistics as pretrained, also in layers that train.",
                                     more="Their scale and shift still train. The default recipe's staged fine-tune turns it on "
                                          "([the default recipe](finetuning.md#the-default-recipe)).")
    val_split: float = setting(0.1, kind=float, low=0, high=1, open_high=True,
                               help="Share of each class held out for validation when the data has no val/test split.")
    shots: int | None = setting(None, kind=int, optional=True, low=1, shown="all", help="Use only N training images per class.")
    seed: int = setting(0, kind=int, low=0, high=2**32 - 1, help="Seed of everything random (split, initialization, order).")
    pretrained: bool = setting(True, kind=bool, group="model", help="Start from the pretrained weights, or from random ones.")
    device: str = setting("auto", kind=str, pattern=r"auto|cpu|cuda(:[0-9]+)?", text="auto, cpu, cuda or cuda:N", resume=True,
                          help="Where to train; under torchrun, cuda is each process's own GPU.")
    metric: str = setting("top1", kind=str, choices=METRICS, help="Metric that picks the best checkpoint.")
    patience: int | None = setting(None, kind=int, optional=True, low=0, shown="off", resume=True,
                                   help="Stop after N epochs without improvement (0: never).")
    strict: bool = setting(False, kind=bool, help="Fail on unreadable images instead of skipping them.")
    sync_bn: bool = setting(False, kind=bool, help="With several processes: BatchNorm statistics over the global batch.")
    save_every: int | None = setting(None, kind=int, optional=True, low=1, metavar="N", shown="only at the end of each epoch",
                                     help="Also write checkpoints/last.pt every N batches.", more="A crash loses at most N batches.")
    feature_cache: bool = setting(True, kind=bool,
                                  help="Compute a frozen backbone's features once, not every epoch, where that changes nothing.",
                                  more="When only the head trains, each evaluation image's features are computed once, and each "
                                       "training image's too when augmentation is off and the frozen part has no dropout "
                                       "([finetuning.md](finetuning.md#the-trainer)).")
    compile: bool = setting(False, kind=bool, help="torch.compile the training forward (for GPUs; slow to start on CPUs).",
                            more="Evaluation and an epoch's short last batch stay eager, so one graph is compiled; it pays off on GPUs "
                                 "and costs about 40 s of start-up on a 2-core CPU.")
    recipe: dict | None = field(default=None, metadata=about(kind=dict, optional=True, flag="",  # set by zoo.recipe.resolve
                                                             help="What the default recipe picked and why (a record)."))

    @classmethod
    def from_dict(cls, values: dict) -> FinetuneConfig:
        """A checked config from keyword values (API keywords, or flags and --config merged); one line if any is bad."""
        unknown = [k for k in values if k not in SETTINGS or SCHEMA[k] is not cls]
        if unknown:
            raise UsageError(unknown_setting(str(unknown[0]), cls))
        for key in ("backbone", "data"):
            if not values.get(key):
                raise UsageError(f"missing '{key}': give it on the command line or in --config")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Every field's value, and the rules that tie two fields (a keyword names itself)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.metadata["setting"].check(getattr(self, f.name), f.name))
        if self.nesterov and self.momentum == 0:
            raise UsageError(f"--nesterov needs --momentum above 0, got --momentum {self.momentum}")

    @staticmethod
    def resume_changeable() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(FinetuneConfig) if f.metadata["setting"].resume)

    def resumed(self, overrides: dict) -> FinetuneConfig:
        """This run's config with what ``--resume`` may change changed; anything else given is refused."""
        changeable = self.resume_changeable()
        fixed = [k for k in overrides if k not in changeable]
        if fixed:
            allowed = ", ".join(flag_of(k) for k in changeable[:-1]) + f" and {flag_of(changeable[-1])}"
            raise UsageError(f"--resume continues the run as configured: only {allowed} may change "
                             f"(remove {', '.join(flag_of(k) for k in fixed)})")
        return FinetuneConfig.from_dict({**dataclasses.asdict(self), **overrides})


@dataclass
class Launch:
    """How many processes, on how many machines, run one fine-tune (not saved: a resumed run may change them)."""

    nproc_per_node: int = setting(1, kind=int, low=1, high=1024, metavar="N", group="processes",
                                  help="Train with N processes on this machine, through torchrun (--batch-size is per process).")
    nnodes: int = setting(1, kind=int, low=1, high=1024, metavar="M", group="processes",
                          help="Number of machines taking part (each runs this command).")
    node_rank: int | None = setting(None, kind=int, optional=True, low=0, high=1023, metavar="R", group="processes",
                                    shown="from the rendezvous", help="This machine's rank, 0..M-1 (optional with --rdzv-endpoint).")
    rdzv_endpoint: str | None = setting(None, kind=str, optional=True, metavar="HOST:PORT", group="processes",
                                        pattern=r"[^\s:]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}", text="HOST:PORT",
                                        shown="none: one machine", help="Rendezvous address every machine can reach (multi-node).",
                                        more="Needed with `--nnodes` above 1.")
    max_restarts: int = setting(0, kind=int, low=0, high=1000, metavar="N", group="processes",
                                help="Restart failed workers up to N times; they continue from the last checkpoint.")

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            f.metadata["setting"].check(getattr(self, f.name), flag_of(f.name))
        if self.node_rank is not None and self.node_rank >= self.nnodes:
            raise UsageError(f"--node-rank must be below --nnodes ({self.nnodes}), got {self.node_rank}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a machine every node can reach)")


@dataclass
class Publish:
    """Where the run goes when it ends (not saved: ``zoo push`` publishes any run later)."""

    push_to_hub: str | None = setting(None, kind=str, optional=True, metavar="ORG/NAME", group="publish", shown="none", text="ORG/NAME",
                                      help="Publish the run to this Hub repo (see zoo push); the repo is created before training.")
    hub_strategy: str = setting("end", kind=str, choices=HUB_STRATEGIES, group="publish",
                                help="With --push-to-hub: push when training ends, or also at every new best checkpoint.")
    private: bool = setting(False, kind=bool, group="publish", flag="--private",
                            help="With --push-to-hub: create the repo private.")


SCHEMA: dict[str, type] = {f.name: cls for cls in (FinetuneConfig, Launch, Publish) for f in dataclasses.fields(cls)}
SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for cls in (FinetuneConfig, Launch, Publish)
                                for f in dataclasses.fields(cls)}


def default(name: str) -> Any:
    f = next(f for f in dataclasses.fields(SCHEMA[name]) if f.name == name)
    return {} if f.default_factory is dict else None if f.default is dataclasses.MISSING else f.default


def flag_of(name: str) -> str:
    """The command-line flag of a setting (``--batch-size``); a setting without one by its name."""
    s = SETTINGS[name]
    if s.flag == "":
        return name
    return s.flag or "--" + name.replace("_", "-")


def check(name: str, value: Any, label: str | None = None) -> Any:
    """One value of the setting ``name`` (a Python keyword unless ``label`` says where it came from), checked."""
    return SETTINGS[name].check(value, label or name)


def parse_pairs(pairs: tuple[str, ...] | list[str], flag: str) -> dict:
    """Repeated ``KEY=VALUE`` flags as a mapping; each value is read as YAML (``n=2`` is a number)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} takes KEY=VALUE, got '{shown(pair)}'")
        out[key.strip()] = yamlfile.loads(value, what=flag, name=shown(key.strip())) if value else ""
    return out


def unknown_setting(key: str, cls: type = FinetuneConfig) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    hint = closest(key, names)
    return f"unknown setting '{shown(key)}'." + (hint or f" Valid: {', '.join(names)}.")


# -- files --------------------------------------------------------------------------------------------------
def load_file(path: str | Path, *, option: str = "") -> dict:
    """The settings in a YAML file (``--config FILE`` or a run's run_config.yaml), each key known and each value checked.

    What is missing is left out (flags or defaults fill it). Every problem is one UsageError that names
    the file and, where it has one, the line: YAML that does not parse, a file that is not a mapping,
    an unknown key, a bad value. ``option`` (``--config``) starts the message.
    """
    path = Path(path)
    prefix = f"{option} " if option else ""
    node = yamlfile.compose(path, what=option or "settings file")
    values = yamlfile.construct(node, path, what=option or "settings file")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"{prefix}{path}: expected a mapping of settings (KEY: VALUE lines), got a {type(values).__name__}")
    lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}
    out = {}
    for key, value in values.items():
        where = f"{prefix}{path}:{lines.get(str(key), 1)}"
        if not isinstance(key, str) or SCHEMA.get(key) is not FinetuneConfig:
            raise UsageError(f"{where}: {unknown_setting(str(key))}")
        out[key] = check(key, value, f"{where}: {key}")
    return out


def dump(config: FinetuneConfig) -> str:
    """run_config.yaml's text: every field, in the schema's order; ``load_file`` reads it back."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


# -- docs ---------------------------------------------------------------------------------------------------
def option_label(name: str) -> str:
    """How the option table and ``--help`` write a setting's flag with its value (``--epochs INTEGER``)."""
    s = SETTINGS[name]
    flag = flag_of(name)
    if s.kind is bool:
        return flag if s.flag else f"{flag} / --no-{flag[2:]}"
    if s.choices:
        return f"{flag} [{'|'.join(s.choices)}]"
    return f"{flag} {metavar(name)}"


def metavar(name: str) -> str:
    s = SETTINGS[name]
    return s.metavar or ("K=V" if s.pairs else {int: "INTEGER", float: "FLOAT", str: "TEXT"}.get(s.kind, "TEXT"))


def shown_default(name: str) -> str:
    """The default as the docs table shows it: a value in backticks, or the default in words."""
    s, value = SETTINGS[name], default(name)
    if s.shown:
        return s.shown
    if s.kind is bool:
        return f"`{flag_of(name) if value else '--no-' + flag_of(name)[2:]}`" if not s.flag else ("on" if value else "off")
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def markdown_table() -> str:
    """The options of ``zoo finetune`` that are settings, as markdown tables by group (docs/cli.md holds it)."""
    out = []
    for group, title in GROUPS.items():
        out += ["", f"{title}:", "", "| option | default | allowed | what it does |", "|---|---|---|---|"]
        for name, s in SETTINGS.items():
            if s.group != group or s.flag == "":
                continue
            cells = [f"`{option_label(name)}`", shown_default(name), s.requirement() if s.kind is not bool else "",
                     " ".join(x for x in (s.help, s.more) if x)]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    changeable = FinetuneConfig.resume_changeable()
    out += ["", f"With `--resume`, only {', '.join(f'`{flag_of(k)}`' for k in changeable[:-1])} and "
                f"`{flag_of(changeable[-1])}` of these may be given, and the options of several processes and of publishing; "
                "the rest is the run's."]
    return "\n".join(out[1:]) + "\n"
