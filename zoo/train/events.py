"""The one channel through which training is observed: ``Events.emit(event, **payload)``.

Each event reaches, in this order, the installed plugins' ``zoo_on_<event>`` hook (for the three
events plugins see: train_start, epoch_end, train_end; a failing plugin is reported and skipped)
and then every subscriber's ``on_<event>(trainer, **payload)`` method, if it has one: the console
reporter, the Hub push of ``zoo.finetune(push_to_hub=...)``, a test's observer.

    event        payload             when
    note         text                before training: a line worth showing (the default recipe's pick)
    train_start  config              once per fit(), after setup, before the first step (also on resume)
    batch        n, loss             after each batch of n images; loss is a 0-d tensor on the device
    epoch_end    epoch, metrics      after an epoch is evaluated and checkpointed (metrics: its metrics.jsonl line)
    best         run_dir             rank 0, after a new best checkpoint is written
    train_stop                       the loop has ended, however it ended (reporters close their bars)
    train_end    run_dir, metrics    the run directory is complete
"""

from __future__ import annotations

import contextlib

from zoo.plugins import fire

PLUGIN_EVENTS = ("train_start", "epoch_end", "train_end")  # the hooks of zoo.hookspecs


class Events:
    """Delivers events to plugins, then to subscribers, in the order they were given."""

    def __init__(self, trainer, subscribers):
        self.trainer, self.subscribers = trainer, list(subscribers)

    def emit(self, event: str, **payload) -> None:
        if event in PLUGIN_EVENTS:
            fire(f"zoo_on_{event}", trainer=self.trainer, **payload)
        for subscriber in self.subscribers:
            handler = getattr(subscriber, f"on_{event}", None)
            if handler is not None:
                handler(self.trainer, **payload)


class Reporter:
    """A quiet subscriber: subclasses (the CLI's ConsoleReporter) print progress.

    Besides the ``on_<event>`` methods, ``work(header, total)`` shows long work that is no event
    (decoding, frozen features).
    """

    def __init__(self, quiet: bool = True):
        self.quiet = quiet

    @contextlib.contextmanager
    def work(self, header: str, total: int):
        """A callback ``advance(n)`` for long work (decoding, frozen features), or None; see the CLI's reporter."""
        yield None

    def on_note(self, trainer, text: str): ...

    def on_train_start(self, trainer, config): ...

    def on_batch(self, trainer, n, loss):
        """``float(loss)`` waits for the step: read it seldom."""

    def on_epoch_end(self, trainer, epoch, metrics): ...

    def on_train_stop(self, trainer): ...
