"""kill -9 at random moments of ``pyrodyn fit``: every rerun resumes, and the finished run has
the same losses and scores as an uninterrupted one.

Each try reruns the same command into one folder, killing it (SIGKILL: no handler runs) after a
random delay, until a run finishes on its own; then its losses.json and metrics.json are
compared with those of a run that was never interrupted. Run from the repository root:

    .venv/bin/python bench/kill_resume.py --tries 20
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYRODYN = [sys.executable, "-m", "pyrodyn.cli"]


def fit_command(data: Path, out: Path, steps: int) -> list[str]:
    return [*PYRODYN, "fit", str(data), "--out", str(out), "--quiet", "--set", f"steps={steps}",
            "checkpoint_every=10", "eval_every=40", "refine_steps=0", "batch_size=16"]


def finished(out: Path) -> dict:
    """What a finished run found (seconds of fitting, which differ, left out)."""
    losses = json.loads((out / "losses.json").read_text())
    losses.pop("elapsed")
    return {"losses": losses, "metrics": json.loads((out / "metrics.json").read_text())}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    data = folder / "data.npz"
    subprocess.run([*PYRODYN, "simulate", "limit_cycle", "--out", str(data), "--n-trials", "60",
                    "--n-bins", "30", "--n-neurons", "10", "--seed", str(args.seed)], check=True,
                   capture_output=True)
    start = time.perf_counter()
    subprocess.run(fit_command(data, folder / "reference", args.steps), check=True,
                   capture_output=True)
    whole = time.perf_counter() - start
    reference = finished(folder / "reference")
    print(f"uninterrupted run: {whole:.1f} s wall (imports included)")
    rows = []
    for attempt in range(args.tries):
        out = folder / f"try{attempt}"
        kills, moments = 0, []
        while True:
            process = subprocess.Popen(fit_command(data, out, args.steps),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            delay = rng.uniform(0.2, whole)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.kill()  # SIGKILL
                process.wait()
                kills += 1
                moments.append(round(delay, 1))
                continue
            if process.returncode != 0:
                error = process.stderr.read().decode().strip().splitlines()
                raise SystemExit(f"try {attempt}: rerun failed: {error[-1] if error else '?'}")
            break
        same = finished(out) == reference
        rows.append({"try": attempt, "kills": kills, "kill_seconds": moments, "same": same})
        print(f"try {attempt:2d}: killed {kills} times at {moments} s; finished run "
              f"{'identical to' if same else 'DIFFERS from'} the uninterrupted one", flush=True)
    identical = sum(r["same"] for r in rows)
    total_kills = sum(r["kills"] for r in rows)
    print(f"{identical}/{len(rows)} tries identical after {total_kills} kills in all")
    return rows


if __name__ == "__main__":
    main()
