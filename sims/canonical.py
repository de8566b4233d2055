"""`python -m sims.canonical`: rerun the recorded studies behind figures/ and refresh it.

1. the main job, default configuration      -> outputs/canonical/main         (resumable)
2. the theory checks, reusing that log       -> outputs/canonical/checks       (no extra fits: same cells;
   inverse-bound is a fit-free computation, inverse-ratio reads the main job's fits)
3. the start / iteration-budget sensitivity  -> outputs/canonical/sensitivity  (reuses the main job's fits)
4. the robustness sweep over 20 random truths -> outputs/canonical/robustness  (resumable)
5. copy the tables into figures/, draw every figure from them (sims.figures) and refresh README's
   generated tables (sims.readme_tables).
Steps 1, 3 and 4 skip fits already in their logs, so a killed run picks up where it stopped.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from reparam.sims.figures import redraw


def _run(args: list[str]) -> None:
    print("$ python -m " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sims.canonical", description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("outputs/canonical"))
    ap.add_argument("--figures", type=Path, default=Path("figures"))
    ap.add_argument("--skip-robustness", action="store_true")
    args = ap.parse_args(argv)
    main_dir, checks_dir, robust_dir = args.work / "main", args.work / "checks", args.work / "robustness"
    sens_dir = args.work / "sensitivity"
    _run(["sims.convergence", f"hydra.run.dir={main_dir}", "figures=false"])
    _run(["sims.check", "--all", "--out", str(checks_dir), "--log", str(main_dir / "results.jsonl"), "--quiet"])
    _run(["sims.sensitivity", "--out", str(sens_dir), "--reuse", str(main_dir / "results.jsonl"), "--quiet"])
    if not args.skip_robustness:
        _run(["sims.robustness", "--out", str(robust_dir), "--quiet"])
    args.figures.mkdir(parents=True, exist_ok=True)
    for src, dst in [(main_dir / "results.csv", "results.csv"), (main_dir / "summary.csv", "summary.csv"),
                     (checks_dir / "report.md", "checks_report.md"),
                     (sens_dir / "sensitivity.csv", "sensitivity.csv"),
                     (robust_dir / "robustness.csv", "robustness.csv"),
                     (robust_dir / "robustness_summary.csv", "robustness_summary.csv"),
                     (robust_dir / "results.csv", "robustness_results.csv")]:
        if src.exists():
            shutil.copyfile(src, args.figures / dst)
    for check in ("inverse-ratio", "inverse-bound"):  # their tables, reports and figures keep their own folders
        if (checks_dir / check).is_dir():
            shutil.copytree(checks_dir / check, args.figures / check, dirs_exist_ok=True)
    for p in redraw(args.figures):
        print(p)
    _run(["sims.readme_tables", "--figures", str(args.figures)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
