"""The ``zoo`` command: a thin click layer over the library. Parse, call, print."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
from pathlib import Path

import click

from zoo import __version__
from zoo import config as settings
from zoo.errors import STOP_SIGNALS, Interrupted, UsageError, ZooError, command, shown
from zoo.plugins import KINDS


class ZooGroup(click.Group):
    """Adds plugin commands lazily and turns ZooError into one line and an exit code."""

    _plugins_loaded = False

    def _load_plugin_commands(self):
        if not ZooGroup._plugins_loaded:
            ZooGroup._plugins_loaded = True
            from zoo.plugins import get_plugins

            get_plugins().call("zoo_register_commands", cli=self)

    def list_commands(self, ctx):
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            self._load_plugin_commands()
            command = super().get_command(ctx, name)
        return command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ZooError as exc:
            if os.environ.get("ZOO_DEBUG"):
                raise
            if not (isinstance(exc, Interrupted) and os.environ.get("ZOO_LAUNCHED")):  # (a worker: its launcher prints the one line)
                click.echo(f"Error: {shown(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a file zoo did not expect to fail: one line, not a traceback
            if os.environ.get("ZOO_DEBUG"):
                raise
            from zoo.redact import redact

            where = f": {exc.filename}" if exc.filename else ""
            click.echo(shown(redact(f"Error: {exc.strerror or exc}{where}")), err=True)
            ctx.exit(1)


def _console():
    from rich.console import Console

    # No markup or emoji codes: a class or file name such as "[link=...]x" prints as written.
    # Piped output is read by grep and scripts: no width limit, so no row is wrapped.
    return Console(soft_wrap=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 100_000)


def _print_table(table, drop: tuple[str, ...] = ()) -> None:
    """Print a rich table without ever splitting a word, a name or a path.

    Columns made with ``no_wrap=True`` (names, sources, paths) keep their whole text; the others
    wrap between words. When that does not fit the terminal, the columns whose headers are in
    ``drop`` go, in that order; when it still does not fit, the table is printed at the width it
    needs and the terminal wraps the lines.
    """
    from rich.cells import cell_len

    console = _console()

    def longest(text, whole: bool) -> int:
        parts = str(text).splitlines() if whole else str(text).split()
        return max((cell_len(p) for p in parts), default=0)

    for column in table.columns:
        column.min_width = max([longest(column.header, True)] + [longest(c, column.no_wrap) for c in column.cells])
    table.min_width = max(longest(table.title or "", False), longest(table.caption or "", False))

    def needed() -> int:
        return console.measure(table, options=console.options.update_width(100_000)).minimum

    for header in drop:
        if needed() <= console.width:
            break
        table.columns[:] = [c for c in table.columns if c.header != header]
    console.print(table, width=max(console.width, needed()), crop=False)


def _json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _import_torch() -> None:
    """Import torch and timm with Python's cyclic garbage collector paused, then freeze them out of its scans.

    Together they build about 400,000 objects that live until the process ends. Left alone, the
    collector walks all of them in every full collection (eight in a W1 fine-tune: 0.8 s) and once
    more at exit (0.8 s); see docs/benchmarks.md. Freezing changes no result.
    """
    gc.disable()
    try:
        import timm  # noqa: F401  (imports torch, and torchvision, a dependency of timm)
    finally:
        gc.freeze()
        gc.enable()


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100,
                                                  "show_default": True})
@click.version_option(__version__, prog_name="zoo")
def cli():
    """zoo: pick a pretrained backbone, fine-tune it on your images, publish it.

    \b
    Examples:
      zoo list
      zoo info resnet18
      zoo finetune resnet18 --data ./photos --freeze head-only --epochs 5
      zoo predict runs/photos-r18 img.jpg
      zoo push runs/photos-r18 me/photos-r18
      zoo compare zoo-fmnist-resnet resnet18 --data ./photos --shots 10

    Set ZOO_DEBUG=1 to see tracebacks.
    """


# -- list / info -----------------------------------------------------------------------------
@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(list(KINDS)))
@click.argument("pattern", required=False)
@click.option("--all", "all_", is_flag=True, help="Also list every pretrained timm model (imports timm once, then cached).")
@click.option("--offline", "offline_only", is_flag=True,
              help="Only backbones whose weights are on this machine (they run without a network).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(kind, pattern, all_, offline_only, as_json):
    """List backbones, heads, freeze policies and datasets (PATTERN is a wildcard).

    \b
    Examples:
      zoo list
      zoo list backbones 'convnext*'
      zoo list backbones --offline
      zoo list heads
      zoo list backbones 'resnet50*' --all --json
    """
    import zoo
    from zoo.plugins import get_plugins

    kinds = [kind] if kind else list(KINDS)
    if offline_only:
        if kind not in (None, "backbones"):
            raise UsageError("--offline lists backbones: use 'zoo list backbones --offline'")
        kinds = ["backbones"]
    out = {}
    for k in kinds:
        if k == "backbones":
            out[k] = [r for r in zoo.list_backbones(pattern, all=all_) if r["offline"] or not offline_only]
        else:
            from zoo.registry import _match

            claimed = get_plugins().extensions() if k == "datasets" else {}
            out[k] = [{"name": e.name, "description": e.description, "provider": e.plugin,
                       **({"extensions": [x for x, n in claimed.items() if n == e.name]} if k == "datasets" else {})}
                      for e in get_plugins().collect(k).values() if not pattern or _match(pattern, e.name)]
    if as_json:
        _json(out if not kind else out[kind])
        return
    from rich.table import Table

    titles = {"backbones": "Backbones", "heads": "Heads", "freeze": "Freeze policies", "datasets": "Datasets"}
    for k, rows in out.items():
        table = Table(title=titles[k], title_justify="left")
        if k == "backbones":
            for col in ("name", "source", "params (M)", "input", "license", "pretrained on", "offline", "provider"):
                table.add_column(col, no_wrap=col in ("name", "source", "provider"))
            for r in rows:
                _row(table, r["name"], r["source"], r.get("params_m"), r.get("input_size"), r.get("license"), r.get("pretrain"),
                     "yes" if r.get("offline") else "", r.get("provider"))
            table.caption, table.caption_justify = OFFLINE_LEGEND, "left"
            _print_table(table, drop=("pretrained on", "source", "provider", "license", "input", "params (M)"))
        else:
            for col in ("name", "description", "provider"):
                table.add_column(col, no_wrap=col != "description")
            for r in rows:
                _row(table, r["name"], r["description"], r["provider"])
            _print_table(table, drop=("provider", "description"))
    if not any(out.values()):
        click.echo(f"nothing matches {shown(repr(pattern))}" if pattern else "nothing registered", err=True)


OFFLINE_LEGEND = ("offline yes: the weights are on this machine (shipped with zoo, in an installed package or in the Hugging "
                  "Face cache): it runs without a network; the others download their weights on first use")


def _row(table, *cells) -> None:
    """Add a row to a rich table; every cell is printable text (see zoo.errors.shown), None is empty."""
    table.add_row(*("" if c is None else shown(c) for c in cells))


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(name, as_json):
    """Show one backbone: source, parameters, input size, normalization, license.

    Reads timm's pretrained configs and the registry; downloads no weights. For a model zoo
    trained (run directory, local-dir:PATH, hf-hub:ORG/NAME), also its classes, head, metrics
    and the plugins it needs.

    \b
    Examples:
      zoo info resnet18
      zoo info convnext_tiny.fb_in1k
      zoo info hf-hub:timm/resnet50.a1_in1k --json
      zoo info runs/photos-r18
    """
    import zoo

    data = zoo.info(name)
    if as_json:
        _json(data)
        return
    from rich.table import Table

    table = Table(show_header=False, title=shown(data["name"]), title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, value in data.items():
        if key == "label_names" and data.get("classes"):
            continue  # the same list as "classes"
        if value not in (None, "", [], {}) or key == "plugins":
            _row(table, key, _info_value(key, value))
    _print_table(table)


def _info_value(key: str, value) -> str:
    """One cell of ``zoo info``: lists joined, a head or freeze policy with its options, metrics and plugins in words."""
    if key in ("head", "freeze"):
        options = value.get("options")
        options = ", ".join(f"{k}={v}" for k, v in options.items()) if isinstance(options, dict) else ""
        return f"{value.get('name')}{f' ({options})' if options else ''}"
    if key == "metrics":
        per_class = value.get("per_class")
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if not isinstance(v, (dict, list))) + (
            f"; per class: {', '.join(f'{c} {_fmt(a)}' for c, a in per_class.items())}" if isinstance(per_class, dict) else "")
    if key == "plugins":
        return "; ".join(f"{p['name']} {p['version'] or ''} (provides {', '.join(map(str, p['provides'])) or '?'}): "
                         + (f"installed ({p['installed']})" if p["installed"] else
                            f"missing, install with: {p['install']}" if p["install"] else "not installed, not needed to load it")
                         for p in value) or "none beyond zoo's built-ins"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# -- plugins -------------------------------------------------------------------------------
@cli.group()
def plugins():
    """List, install and uninstall plugins (pip in this interpreter)."""


@plugins.command("list")
@click.option("--all", "all_", is_flag=True, help="Include zoo's built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_list(all_, as_json):
    """Installed plugins: name, version, hooks, what each registered, load errors.

    \b
    Examples:
      zoo plugins list
      zoo plugins list --all --json
    """
    from zoo.plugins import KINDS, get_plugins

    p = get_plugins()
    for kind in KINDS:
        p.collect(kind)
    rows = [{"name": i.name, "version": i.version, "distribution": i.distribution, "builtin": i.builtin, "hooks": i.hooks,
             "registered": i.__dict__.get("registered", []), "errors": i.errors}
            for i in p.info.values() if all_ or not i.builtin]
    if as_json:
        _json(rows)
        return
    if not rows:
        click.echo("no plugins installed (zoo plugins install NAME; --all shows the built-ins)")
        return
    from rich.table import Table

    table = Table()
    for col in ("name", "version", "hooks", "registered", "errors"):
        table.add_column(col, no_wrap=col in ("name", "version"))
    for r in rows:
        _row(table, r["name"], r["version"] or ("built-in" if r["builtin"] else ""), ", ".join(r["hooks"]),
             ", ".join(r["registered"]), "; ".join(r["errors"]))
    _print_table(table, drop=("hooks",))


def _pip(args: list[str]) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if ln.startswith("ERROR:")), lines[-1] if lines else "pip failed")
        raise ZooError(f"pip {args[0]} failed: {reason.removeprefix('ERROR: ')}")
    click.echo(shown(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else "done")


@plugins.command("install")
@click.argument("specs", nargs=-1)
@click.option("--upgrade", "-U", is_flag=True, help="Upgrade to the newest version.")
@click.option("-e", "--editable", "editable", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Install a local plugin folder in editable mode.")
@click.option("--from-model", "from_model", metavar="MODEL",
              help="Install the plugins a saved model needs (run directory, local-dir:PATH or hf-hub:ORG/NAME).")
@click.option("-y", "--yes", is_flag=True, help="With --from-model: do not ask before installing.")
@click.option("--find-links", metavar="DIR|URL", help="Also look for packages here (pip's --find-links), e.g. a wheelhouse.")
@click.option("--index-url", metavar="URL", help="Package index to use instead of PyPI (pip's --index-url).")
@click.option("--no-index", is_flag=True, help="Use no package index, only --find-links (pip's --no-index).")
def plugins_install(specs, upgrade, editable, from_model, yes, find_links, index_url, no_index):
    """Install plugins with pip into zoo's own environment.

    From a source checkout, the first-party plugins (zoo-heads, zoo-peft, zoo-hf-datasets,
    zoo-tensorboard, zoo-efficientnet-lite) come from its plugins/ folder: they are not on PyPI.

    \b
    Examples:
      zoo plugins install zoo-heads
      zoo plugins install ./plugins/zoo-heads
      zoo plugins install -e ./my-plugin
      zoo plugins install --from-model hf-hub:me/photos-cosine
      zoo plugins install --from-model runs/photos --find-links ./wheels -y
    """
    extra = [*(["--find-links", find_links] if find_links else []), *(["--index-url", index_url] if index_url else []),
             *(["--no-index"] if no_index else [])]
    if from_model:
        specs = (*specs, *_plugins_for_model(from_model, yes))
        if not specs and not editable:
            return
    if not specs and not editable:
        raise UsageError("name at least one plugin: zoo plugins install NAME|PATH (or --from-model MODEL)")
    from zoo import plugin_packages as pp

    # First-party plugins are not on the package index: from a source checkout, their folders in plugins/.
    reqs = [pp.requirement(s) for s in specs]
    for spec, req in zip(specs, reqs, strict=False):
        if req != spec:
            click.echo(f"{shown(spec)}: from this checkout's {shown(Path(req).relative_to(Path(req).parents[1]))}")
    # Local folders whose build requirements this environment meets: built with those (no build environment
    # fetched from the index, so offline too).
    local = not editable and all(pp.builds_here(r) for r in reqs)
    # "--" ends pip's options: a requirement can never be read as one (-i URL, -r FILE, -e PATH).
    _pip(["install", "--disable-pip-version-check", *extra, *(["--no-build-isolation"] if local else []),
          *(a for e in editable for a in ("-e", e)), *(["--upgrade"] if upgrade else []), "--", *reqs])


def _plugins_for_model(model: str, yes: bool) -> list[str]:
    """The ``name==version`` requirements of the plugins ``model`` needs and this environment lacks, once the user agrees.

    Every record a model needs is checked (``plugin_packages.pinned``) before anything is asked or installed.
    """
    from packaging.requirements import Requirement

    from zoo import plugin_packages as pp

    def label(p: dict) -> str:
        return shown(f"{p['name']} {p['version']}" if p.get("version") else p["name"])

    def provides(p: dict) -> str:
        return shown(", ".join(map(str, pp.provides(p))) or "?")

    records = pp.recorded(model)
    for p in records:
        if not pp.needed(p):
            click.echo(f"{label(p)} trained it ({provides(p)}) but is not needed to load it: skipped")
    wanted = [(p, pp.pinned(p, where=shown(model))) for p in records if pp.needed(p)]
    missing = []
    for p, req in wanted:
        have = pp.installed(p)
        if have is not None and Requirement(req).specifier.contains(have, prereleases=True):
            click.echo(f"{label(p)} is installed ({provides(p)})")
        else:
            missing.append(req)
            click.echo(f"will install {req} (entry point {shown(repr(p.get('entry_point', '?')))}, provides {provides(p)})"
                       f"{f'; {have} is installed now' if have else ''}")
    if not missing:
        click.echo(f"{shown(model)} needs no plugin that is missing here" if wanted else f"{shown(model)} needs no plugin to load")
        return []
    if not yes:
        click.confirm("Install?", abort=True)
    return missing


@plugins.command("new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="Where to create the NAME folder.")
def plugins_new(name, parent):
    """Write a working plugin skeleton: pyproject with the entry point, one head, a README, a test.

    \b
    Examples:
      zoo plugins new zoo-myheads
      zoo plugins install ./zoo-myheads && python -m pytest zoo-myheads/tests
    """
    from zoo.plugin_packages import new_plugin

    folder = new_plugin(name, parent)
    where = str(folder) if folder.is_absolute() else f"./{folder.as_posix()}"  # pip reads a bare name as a package on the index
    click.echo(f"created {shown(where)}: install it with: {command('zoo', 'plugins', 'install', where)}; then run: "
               f"{command('python', '-m', 'pytest', where + '/tests')}")


@plugins.command("uninstall")
@click.argument("names", nargs=-1, required=True)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def plugins_uninstall(names, yes):
    """Uninstall plugins with pip.

    \b
    Example:
      zoo plugins uninstall zoo-heads -y
    """
    from importlib import metadata

    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise UsageError(f"'{name}' is not installed: see 'zoo plugins list'") from None
        if not any(ep.group == "zoo" for ep in dist.entry_points):
            raise UsageError(f"'{name}' is not a zoo plugin (no entry point in the 'zoo' group): use pip to remove it")
    if not yes:
        click.confirm(f"Uninstall {', '.join(names)}?", abort=True)
    _pip(["uninstall", "-y", "--", *names])


# -- finetune / predict / evaluate ----------------------------------------------------------------
def _setting_option(name: str, **override):
    """The click option of one setting (zoo.config): its flag, help and default; the value checked as it is parsed.

    Values are parsed and checked by the schema, not by click, so that a bad one is one line that names
    the flag (exit 2), as from a --config file or the Python API.
    """
    s = settings.SETTINGS[name]
    flag = settings.flag_of(name)
    kw = {"help": override.get("help", s.help), "show_default": override.get("show_default", s.shown or True)}
    if s.kind is bool:
        if s.flag:
            return click.option(flag, name, is_flag=True, default=settings.default(name), **kw)
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=settings.default(name), **kw)
    metavar = f"[{'|'.join(s.choices)}]" if s.choices else settings.metavar(name)
    return click.option(flag, name, type=click.STRING, metavar=metavar, multiple=s.pairs,
                        default=() if s.pairs else settings.default(name), callback=_checked, **kw)


def _checked(ctx, param, value):
    if ctx.get_parameter_source(param.name) is click.core.ParameterSource.DEFAULT:
        return settings.default(param.name)
    s, flag = settings.SETTINGS[param.name], settings.flag_of(param.name)
    return s.check(settings.parse_pairs(value, flag), flag) if s.pairs else s.parse(value, flag)


def _setting_options(schema):
    """The options of every setting of ``schema`` that has a flag, in the schema's order."""
    def decorate(fn):
        for f in reversed(dataclasses.fields(schema)):
            if settings.SETTINGS[f.name].flag != "":
                fn = _setting_option(f.name)(fn)
        return fn
    return decorate


@cli.command()
@click.argument("backbone", required=False)
@_setting_options(settings.FinetuneConfig)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), show_default="runs/BACKBONE-DATA-TIME", help="Run directory.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file with the same options (e.g. a run's run_config.yaml); flags override it.")
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Continue a run from checkpoints/last.pt.")
@click.option("--dry-run", is_flag=True, help="Print the parameter groups and freeze schedule; do not train.")
@_setting_options(settings.Publish)
@_setting_options(settings.Launch)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def finetune(backbone, config_file, resume, dry_run, as_json, quiet, out, **flags):
    """Fine-tune BACKBONE on your images with SGD; writes a Hub-ready run directory.

    \b
    Examples:
      zoo finetune resnet18 --data ./photos --freeze head-only --epochs 5
      zoo finetune convnext-tiny --data photos.csv --freeze last-n --freeze-opt n=2
      zoo finetune test_resnet --data digits --no-pretrained --img-size 32 --epochs 3
      zoo finetune --config runs/photos-r18/run_config.yaml
      zoo finetune --resume runs/photos-r18
      zoo finetune resnet18 --data ./photos --push-to-hub me/photos-r18 --hub-strategy best
      zoo finetune hf-hub:me/photos-r18 --data ./more-photos --epochs 2
      zoo finetune resnet18 --data ./photos --nproc-per-node 4 --batch-size 32
    """
    import zoo

    def take(schema) -> dict:
        return {f.name: flags.pop(f.name) for f in dataclasses.fields(schema)}

    launch, publish = settings.Launch(**take(settings.Launch)), take(settings.Publish)
    launch.validate()
    source = click.get_current_context().get_parameter_source  # an option's default never overrides --config or the resumed run
    values = settings.load_file(config_file, option="--config") if config_file else {}
    values.update({k: v for k, v in flags.items() if source(k) is not click.core.ParameterSource.DEFAULT})
    if backbone:
        values["backbone"] = backbone
    # Every setting is checked before torch loads and before anything is read or written.
    from zoo.rundir import RunDir

    config = RunDir(resume).resumed_config(values) if resume else settings.FinetuneConfig.from_dict(values)
    _import_torch()
    from zoo import distributed
    from zoo.progress import ConsoleReporter
    from zoo.trainer import plan

    hub_args = publish if publish["push_to_hub"] else {}
    ctx = distributed.env_context()
    if (launch.nproc_per_node > 1 or launch.nnodes > 1) and not ctx.enabled and not dry_run:
        from zoo import launch as launcher

        launcher.finetune(values, resume=resume, out=out, hub_args=hub_args, quiet=quiet, as_json=as_json, **dataclasses.asdict(launch))
        return
    reporter = ConsoleReporter(quiet=quiet or not ctx.main, json_mode=as_json and ctx.main)
    if resume:
        result = zoo.finetune(resume=resume, reporter=reporter, **hub_args, **values)
    else:
        if dry_run:
            _print_plan(plan(config), as_json)
            return
        result = zoo.finetune(out=out, reporter=reporter, **hub_args, **dataclasses.asdict(config))
    if not ctx.main:
        return  # rank 0 reports for the job
    summary = {"run_dir": str(result.run_dir), **{k: v for k, v in result.metrics.items() if k not in ("confusion",)}}
    pushed = getattr(result, "hub", None)
    if pushed is not None:
        summary["hub"] = pushed
    if as_json:
        _json(summary)
    elif not quiet:
        from rich.table import Table

        click.echo(f"done: {shown(result.run_dir)}")  # a line of its own: a table title would wrap the path
        table = Table(show_header=False)
        for key in ("top1", "top5", "loss", "epoch", "eval_split", "train_loss", "train_top1"):
            if key in summary:
                v = summary[key]
                _row(table, key, f"{v:.4f}" if isinstance(v, float) else v)
        _print_table(table)
        if pushed is not None:
            _print_push(pushed)
            click.echo(f"predict with: {command('zoo', 'predict', 'hf-hub:' + pushed['repo_id'], 'IMAGE')}")
        else:
            click.echo(f"predict with: {command('zoo', 'predict', result.run_dir, 'IMAGE')}")


# -- push -----------------------------------------------------------------------------------
@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id", metavar="ORG/NAME")
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--revision", metavar="BRANCH", show_default="main", help="Push to this branch (created when missing).")
@click.option("--commit-message", metavar="MSG", show_default="Upload RUN with zoo", help="Message of the commit.")
@click.option("--with-checkpoints", is_flag=True, help="Also upload checkpoints/ (full training state, for resuming).")
@click.option("--overwrite-card", is_flag=True, help="Replace a README.md that was edited by hand on the Hub.")
@click.option("--dry-run", "dry_run", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Write the folder that would be uploaded to DIR; upload nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def push(run_dir, repo_id, private, revision, commit_message, with_checkpoints, overwrite_card, dry_run, as_json):
    """Publish a run directory to the Hugging Face Hub as one commit.

    Uploads model.safetensors, config.json, a model card for the repo, run_config.yaml, metrics.jsonl
    and the plots. Pushing an unchanged run makes no commit. The token comes from HF_TOKEN or
    'hf auth login'.

    \b
    Examples:
      zoo push runs/photos-r18 me/photos-r18
      zoo push runs/photos-r18 me/photos-r18 --private --with-checkpoints
      zoo push runs/photos-r18 me/photos-r18 --dry-run /tmp/upload
    """
    import zoo

    result = zoo.push(run_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
                      with_checkpoints=with_checkpoints, overwrite_card=overwrite_card, dry_run=dry_run)
    if as_json:
        _json(result)
        return
    _print_push(result)


def _print_push(result: dict) -> None:
    for note in result.get("notes", []):
        click.echo(f"zoo: {shown(note)}", err=True)
    if result.get("dry_run"):
        click.echo(shown(f"{len(result['files'])} files in {result['dry_run']}: {', '.join(result['files'])}"))
    elif result.get("commit"):
        click.echo(shown(f"pushed to {result['repo_url']} (commit {result['commit'][:10]} on {result['revision']})"))
    else:
        click.echo(shown(f"{result['repo_url']} is up to date (commit {str(result.get('head'))[:10]} on {result['revision']})"))


def _print_plan(p: dict, as_json: bool) -> None:
    if as_json:
        _json(p)
        return
    from rich.table import Table

    if p.get("recipe"):
        from zoo.recipe import describe

        click.echo("\n".join(map(shown, describe(p["recipe"]).splitlines())))
    table = Table(title=shown(f"{p['backbone']}: {len(p['classes'])} classes, freeze {p['freeze']}, {p['epochs']} epochs"), title_justify="left")
    for col in ("group", "params", "from epoch", "trainable", "lr scale", "norm layers"):
        table.add_column(col, no_wrap=col == "group")
    for g in p["groups"]:
        for i, s in enumerate(g["schedule"]):
            _row(table, g["group"] if i == 0 else "", f"{g['params']:,}" if i == 0 else "", s["from_epoch"],
                          _trainable_cell(g, s), f"{s['lr_scale']:.3g}", f"{g['norm_layers']} {s['norm']}" if g["norm_layers"] else "-")
    _print_table(table)


def _trainable_cell(group: dict, setting: dict) -> str:
    """'yes', 'no', or how many of the group's parameters train (a policy may train only some, e.g. adapters)."""
    if not setting["trainable"]:
        return "no"
    part = group.get("trainable_params", group["params"])
    return "yes" if part == group["params"] else f"yes: {part:,}"


@cli.command()
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=5, help="How many classes to show per image.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict(model, images, top_k, as_json):
    """Classify images with a saved model (run directory, local-dir:PATH or hf-hub:ORG/NAME).

    \b
    Examples:
      zoo predict runs/photos-r18 cat.jpg dog.png
      zoo predict hf-hub:me/photos-r18 img.jpg --top-k 1 --json
    """
    _import_torch()
    import zoo

    results = zoo.predict(model, list(images), top_k=top_k)
    if as_json:
        _json(results)
        return
    for r in results:
        preds = "  ".join(f"{shown(p['label'])} {p['score']:.3f}" for p in r["predictions"])
        click.echo(f"{shown(r['image'])}: {preds}")


@cli.command()
@click.argument("model")
@click.option("--data", required=True, help="Data spec, as for finetune; its val/test split is used when present.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evaluate(model, data, as_json):
    """Accuracy, per-class accuracy and confusion matrix of a saved model on a dataset.

    \b
    Example:
      zoo evaluate runs/photos-r18 --data ./photos-test
    """
    _import_torch()
    import zoo

    result = zoo.evaluate(model, data=data)
    if as_json:
        _json(result)
        return
    from rich.table import Table

    console = _console()
    console.print(shown(f"{result['images']} images ({result['split']} split): top-1 {result['top1']:.4f}"), highlight=False)
    table = Table(title="confusion (rows: true, columns: predicted)", title_justify="left")
    table.add_column("class", no_wrap=True)
    table.add_column("acc")
    for c in result["classes"]:
        table.add_column(shown(c[:8]), justify="right")
    for c, row in zip(result["classes"], result["confusion"], strict=False):
        _row(table, c, f"{result['per_class'][c]:.3f}", *row)
    _print_table(table)


@cli.command()
@click.argument("backbones", nargs=-1, required=True)
@click.option("--data", required=True, help="Data spec, as for finetune.")
@_setting_option("shots")
@_setting_option("img_size", show_default="each backbone's, as the default recipe picks it",
                 help="Input size for every candidate, in pixels.")
@_setting_option("val_split")
@_setting_option("seed", help="Seed of the split and the probe (as zoo finetune --seed).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def compare(backbones, data, shots, img_size, val_split, seed, as_json):
    """Rank backbones for your data by a quick linear probe on frozen features.

    \b
    Examples:
      zoo compare zoo-fmnist-resnet resnet18 --data ./photos --shots 20
      zoo compare convnext-atto mobilenetv3-large --data photos.csv --json
    """
    from dataclasses import asdict

    _import_torch()
    from zoo.compare import compare as _compare

    def progress(c):
        if not as_json:
            click.echo(f"{shown(c.name)}: linear-probe top-1 {c.top1:.4f} ({c.seconds:.1f} s)" if c.error is None
                       else f"{shown(c.name)}: failed: {c.error}", err=True)

    ranked = _compare(list(backbones), data_spec=data, shots=shots, img_size=img_size, val_split=val_split, seed=seed,
                      progress=progress)
    if as_json:
        _json([asdict(c) for c in ranked])
        return
    from rich.table import Table

    table = Table(title=shown(f"linear probe on {data}" + (f", {shots} shots per class" if shots else "")), title_justify="left")
    for col in ("rank", "backbone", "top-1", "seconds", "params (M)", "features"):
        table.add_column(col, no_wrap=col == "backbone")
    for i, c in enumerate(ranked, 1):
        if c.error is None:
            _row(table, i, c.name, f"{c.top1:.4f}", f"{c.seconds:.1f}", c.params_m, c.feature_dim)
        else:
            _row(table, "-", c.name, "failed", f"{c.seconds:.1f}", "", "")
    _print_table(table, drop=("features", "params (M)", "seconds"))


# -- doctor ---------------------------------------------------------------------------------
@cli.command()
@click.option("--offline", is_flag=True, help="Do not contact the Hub.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(offline, as_json):
    """What to check (and paste into a bug report) when something is wrong.

    Versions, devices, plugins and their load status, the registry files in use, the Hub endpoint
    and whether it answers, cache folders and their sizes. Tokens are never shown.

    \b
    Examples:
      zoo doctor
      zoo doctor --offline --json
    """
    from zoo.doctor import report

    r = report(check_hub=not offline)
    if as_json:
        _json(r)
        return
    from rich.table import Table

    def section(title, rows):
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column(no_wrap=True)
        table.add_column()
        for key, value in rows:
            _row(table, key, value)
        _print_table(table)

    section("versions", r["versions"].items())
    d = r["devices"]
    section("devices", [("cpu cores", d["cpu_cores"]), ("torch threads", d["torch_threads"]),
                        ("cuda", ", ".join(f"{c['index']}: {c['name']} ({c['memory_gib']} GiB)" for c in d["cuda"]) or "none"),
                        ("distributed backends", ", ".join(k for k, v in d["distributed"].items() if v) or "none")])
    section("plugins", [(p["name"], f"{p['version'] or ''} {p['status']}{': ' + '; '.join(p['errors']) if p['errors'] else ''}")
                        for p in r["plugins"]])
    section("registry files", [(f["role"], f"{f['path']}{'' if f['exists'] else ' (absent)'}") for f in r["registry_files"]])
    h = r["hub"]
    reach = "not checked" if "reachable" not in h else ("yes" if h["reachable"] else f"no ({h.get('error') or h.get('status')})")
    section("hub", [("endpoint", h["endpoint"]), ("offline", h["offline"]), ("token set", "yes" if h["token_set"] else "no"),
                    ("reachable", reach + (f", {h['seconds']} s" if "seconds" in h else ""))])
    section("caches", [(c["name"], f"{c['path']}  " + ("absent" if c["bytes"] is None else f"{c['bytes'] / 2**20:.1f} MiB"))
                       for c in r["caches"]])


def _redacted_traceback(kind, value, tb) -> None:
    """sys.excepthook: an unexpected failure (or one ZOO_DEBUG shows) prints its traceback, tokens redacted."""
    import traceback

    from zoo.redact import redact

    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _exit_quietly(signum, frame):
    # A launcher's worker before its trainer runs (which takes the signals over) has written nothing; an exception
    # raised here could land in an import's callback, which would print it and go on.
    os._exit(130)


def main() -> None:
    import signal

    sys.excepthook = _redacted_traceback
    # SIGTERM and SIGHUP stop zoo as Ctrl-C does, so that files being written and worker processes
    # are cleaned up (the trainer handles all three while it runs); one ignored with nohup stays ignored.
    # A worker of zoo's launcher stopped before its trainer runs exits quietly: the launcher prints the one line.
    launched = bool(os.environ.get("ZOO_LAUNCHED"))
    for sig in STOP_SIGNALS:
        if (launched or sig != signal.SIGINT) and signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, _exit_quietly if launched else _interrupt)
    try:
        cli(prog_name="zoo")
    finally:
        gc.freeze()  # the process ends: spare the collector's last walk over every object (0.8 s after torch)


if __name__ == "__main__":
    main()
