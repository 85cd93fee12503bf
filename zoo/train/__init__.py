"""The training loop: ``build`` (what is trained; shared with ``--dry-run``), ``loop`` (the Trainer),
``events`` (the one channel plugins, the console and the Hub push observe it through)."""
