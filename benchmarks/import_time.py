"""How much ``import defectaug`` adds on top of ``import torch, torchvision``.

    uv run --locked python -m benchmarks.import_time              # 7 repeats, median
    uv run --locked python -m benchmarks.import_time --repeats 15 --first-use

Each repeat runs fresh interpreters with ``python -X importtime`` (so no module is cached in the
process) for ``import torch, torchvision`` and for ``import torch, torchvision, defectaug``, in
turns so load changes on a shared machine hit both alike. Import time is the sum of the
``cumulative`` column over the top-level imports that ``-X importtime`` prints; the table reports
the medians, the overhead (difference of medians), defectaug's own cumulative entry in the second
run (what it costs once torch is loaded: the steadier number) and the verdict against the 0.5 s bar
of issue #15. ``--first-use`` adds a row for ``from defectaug import DefectInject`` (the first
access loads the per-sample path, kornia and numba): the price moved out of ``import defectaug``.

This is a benchmark, not a timed test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

BAR_S = 0.5
BASELINE = "import torch, torchvision"
CASES = {
    "defectaug": "import torch, torchvision, defectaug",
    "first use": "import torch, torchvision; from defectaug import DefectInject",
}


def import_times(code: str) -> tuple[float, dict[str, float]]:
    """``(total seconds, {top-level module: cumulative seconds})`` of one fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"import_time: {code!r} failed:\n{done.stderr[-2000:]}")
    top: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not cumulative.isdigit():  # the header line
            continue
        raw = line.split("|")[-1]
        # Nested imports are indented under the module that triggered them: only top-level
        # entries (one space after the bar) add up without counting anything twice.
        if raw.startswith(" ") and not raw.startswith("  "):
            top[name] = top.get(name, 0.0) + int(cumulative) / 1e6
    return sum(top.values()), top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="fresh interpreters per case")
    parser.add_argument(
        "--first-use", action="store_true", help="also time `from defectaug import DefectInject`"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive number, got {args.repeats}")
    cases = {"defectaug": CASES["defectaug"]}
    if args.first_use:
        cases["first use"] = CASES["first use"]
    baseline: list[float] = []
    totals: dict[str, list[float]] = {name: [] for name in cases}
    own: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        baseline.append(import_times(BASELINE)[0])
        for name, code in cases.items():
            total, top = import_times(code)
            totals[name].append(total)
            # First use imports defectaug's submodules as top-level entries of their own.
            own[name].append(
                sum(t for module, t in top.items() if module.split(".")[0] == "defectaug")
            )
    base = statistics.median(baseline)
    print(f"python {sys.version.split()[0]}, {args.repeats} fresh interpreters per row, medians")
    print(f"{'case':<12} {'import s':>9} {'overhead s':>11} {'defectaug s':>12}  verdict")
    # "defectaug s" is what -X importtime books to defectaug's own (top-level) entries after torch
    # is loaded: it excludes the run-to-run noise of torch's import that "overhead s" carries.
    print(f"{'torch+tv':<12} {base:9.3f} {'':>11} {'':>12}")
    for name in cases:
        total = statistics.median(totals[name])
        mine = statistics.median(own[name])
        verdict = ""
        if name == "defectaug":
            verdict = f"{'PASS' if mine <= BAR_S else 'FAIL'} (bar {BAR_S} s over torch)"
        print(f"{name:<12} {total:9.3f} {total - base:11.3f} {mine:12.4f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
