"""How a fine-tune shows progress: a rich bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import contextlib
import sys
import time

from zoo.errors import shown
from zoo.train.events import Reporter


class ConsoleReporter(Reporter):
    """The CLI's subscriber to the trainer's events (zoo.train.events)."""

    def __init__(self, *, quiet: bool = False, json_mode: bool = False):
        from rich.console import Console

        super().__init__(quiet=quiet or json_mode)
        self.console = Console(stderr=True, markup=False, emoji=False)  # dataset and run names print as written
        self.live = self.console.is_terminal and not self.quiet
        self.progress = None

    @contextlib.contextmanager
    def work(self, header: str, total: int):
        """A callback for long work: its first call prints ``header``; on a terminal a transient bar follows the work.
        Nothing is shown when the work never starts (its result came from a cache)."""
        bar, task = None, None

        def advance(n: int) -> None:
            nonlocal bar, task
            if bar is None:
                self.console.print(shown(header), highlight=False)
                bar = False
                if self.live:
                    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                    bar = Progress(TextColumn(shown(header.split(":")[0]).replace("{", "{{").replace("}", "}}"), markup=False),
                                   BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                   console=self.console, transient=True)
                    bar.start()
                    task = bar.add_task("", total=total)
            if bar:
                bar.advance(task, n)

        try:
            yield None if self.quiet else advance
        finally:
            if bar:
                bar.stop()

    def on_note(self, trainer, text: str):
        if not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    def on_train_start(self, trainer, config):
        if self.quiet:
            return
        cfg = config
        self.console.print(shown(
            f"fine-tuning {trainer.spec.source} on {trainer.dataset.name}: {len(trainer.train_data.labels)} train / "
            f"{len(trainer.val_data.labels) if trainer.val_data is not None else 0} eval images, {len(trainer.classes)} classes, "
            f"freeze {cfg.freeze}, head {cfg.head}, {trainer.device.type}, run {trainer.run_dir}"), highlight=False)
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]:.4f}  {task.fields[ips]:.0f} img/s"),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(f"epoch {trainer.epoch + 1}/{cfg.epochs}", total=trainer.batches_per_epoch,
                                               completed=trainer.batch, loss=0.0, ips=0.0)
        self.t0, self.seen, self.shown = time.perf_counter(), 0, 0.0

    def on_batch(self, trainer, n, loss):
        if self.progress is None:
            return
        self.seen += n
        now = time.perf_counter()
        if now - self.shown < 0.1 and trainer.batch < trainer.batches_per_epoch:
            return  # the bar redraws 10 times a second; reading the loss would wait for the GPU every step
        self.shown = now
        ips = self.seen / max(1e-9, now - self.t0)
        self.progress.update(self.task, completed=trainer.batch, loss=float(loss), ips=ips,
                             description=f"epoch {trainer.epoch + 1}/{trainer.config.epochs}")

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.quiet:
            return
        parts = [f"epoch {epoch}/{trainer.config.epochs}"]
        for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
            if metrics.get(key) is not None:
                parts.append(f"{key} {metrics[key]:.4f}")
        parts.append(f"{metrics['images_per_s']:.0f} img/s")
        text = "  ".join(parts)
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)
            self.progress.reset(self.task, total=trainer.batches_per_epoch)
            self.t0, self.seen, self.shown = time.perf_counter(), 0, 0.0
        else:
            print(text, file=sys.stderr, flush=True)

    def on_train_stop(self, trainer):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
