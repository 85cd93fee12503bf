"""How fast does `zoo list` start, relative to `import timm`?

Runs, as subprocesses of this interpreter (sys.executable):
  * the `zoo` console script next to sys.executable, if there is one:  zoo list   (the headline)
  * python -m zoo list
  * python -c "import timm"
`zoo list` runs with ZOO_LOAD_PLUGINS="" (built-ins only). One warm-up run each, then 7 timed
rounds in which the commands run side by side (interleaved); the medians are compared.

    .venv/bin/python bench/startup.py

Always exits 0: it reports, it does not judge.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = 7
TARGET = 0.10


def wall_time(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def main() -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    zoo_env = {**env, "ZOO_LOAD_PLUGINS": ""}
    py = sys.executable
    script = Path(py).parent / ("zoo.exe" if os.name == "nt" else "zoo")
    benches: list[tuple[str, list[str], dict]] = []
    if script.is_file() and os.access(script, os.X_OK):
        benches.append(("zoo list", [str(script), "list"], zoo_env))
    benches.append(("python -m zoo list", [py, "-m", "zoo", "list"], zoo_env))
    benches.append(("python -c 'import timm'", [py, "-c", "import timm"], env))

    for _, cmd, e in benches:  # warm-up: page cache, .pyc files, timm's lazy caches
        wall_time(cmd, e)
    times: dict[str, list[float]] = {label: [] for label, _, _ in benches}
    for _ in range(ROUNDS):
        for label, cmd, e in benches:
            times[label].append(wall_time(cmd, e))

    medians = {label: statistics.median(ts) for label, ts in times.items()}
    timm = medians["python -c 'import timm'"]
    width = max(map(len, medians))
    print(f"interpreter: {py}")
    print(f"{'command':<{width}}  {'median s':>9}  {'min s':>7}  {'max s':>7}  {'/ import timm':>13}")
    for label, ts in times.items():
        print(f"{label:<{width}}  {medians[label]:>9.3f}  {min(ts):>7.3f}  {max(ts):>7.3f}  {medians[label] / timm:>13.3f}")
    headline = "zoo list" if "zoo list" in medians else "python -m zoo list"
    if headline != "zoo list":
        print(f"(no console script at {script}; the headline uses python -m zoo list)")
    print(f"ratio zoo_list/import_timm = {medians[headline] / timm:.3f} (target <= {TARGET:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
