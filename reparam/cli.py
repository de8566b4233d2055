"""`reparam <command> [key=value ...]`: one entry point for every app of the package.

Every command is a Hydra app, so all of them take the same `key=value` overrides, `--help`, `--cfg job`
and (where a sweep makes sense) `-m` multiruns and `hydra/launcher=...`. `reparam convergence n=1000` is
the same run as `python -m reparam.sims.convergence n=1000`, or `python -m sims.convergence n=1000` in a
checkout. `reparam data fetch e2e` (an argparse command, in TOOLS) gets the data of the real-transformer studies.
"""
from __future__ import annotations

import importlib
import sys

# command -> module holding its Hydra `main`; the command is the module name with dashes
COMMANDS: dict[str, tuple[str, str]] = {
    "convergence": ("reparam.sims.convergence", "the main job: error vs n for every structure and regime"),
    "check": ("reparam.sims.check", "the citable theory checks (THEORY section 5 and 7)"),
    "robustness": ("reparam.sims.robustness", "the study over many random ground truths"),
    "calibrate": ("reparam.sims.calibrate", "how often each theory check's verdict is wrong (coverage, error rates)"),
    "sensitivity": ("reparam.sims.sensitivity", "over-specified cells under other starts and iteration budgets"),
    "aggregate": ("reparam.sims.aggregate", "merge the result logs of runs or sweeps into one table and figures"),
    "figures": ("reparam.sims.figures", "redraw every figure of a folder from its tables"),
    "readme-tables": ("reparam.sims.readme_tables", "refresh the generated blocks of README.md and docs/ from figures/"),
    "canonical": ("reparam.sims.canonical", "regenerate every committed result, table and figure"),
    "bench": ("reparam.sims.bench", "the solver benchmarks behind BENCHMARKS.md"),
    "minimax": ("reparam.sims.minimax", "the local minimax lower bound from psi(delta), beside the measured error"),
    "planted-prefix": ("reparam.experiments.planted_prefix", "planted-prefix rate study in a real attention layer"),
    "low-data": ("reparam.experiments.low_data", "low-data table-to-text prefix-tuning protocol"),
    "low-data-timing": ("reparam.experiments.low_data_timing", "time the low-data protocol's training steps"),
}


# plain (argparse) commands, outside COMMANDS because they take --options, not Hydra's key=value settings
TOOLS: dict[str, tuple[str, str]] = {
    "data": ("reparam.lm.datasets", "fetch|status: get and check the data of the real-transformer studies"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: reparam <command> [key=value ...]   (reparam <command> --help for its settings)"]
    lines += [f"       reparam {name} {text}   (reparam {name} --help)" for name, (_, text) in TOOLS.items()]
    lines += ["", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command in TOOLS:
        importlib.import_module(TOOLS[command][0]).main(rest)
        return
    if command not in COMMANDS:
        print(f"error: command={command!r} is invalid: must be one of {list(COMMANDS) + list(TOOLS)}", file=sys.stderr)
        sys.exit(2)
    try:  # Ctrl-C while the command's libraries load: one line, as later (reparam.app)
        module = importlib.import_module(COMMANDS[command][0])
    except KeyboardInterrupt:
        from .console import INTERRUPTED_STATUS, NOTHING_WRITTEN

        print(NOTHING_WRITTEN, file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_STATUS)
    sys.argv = [f"reparam {command}", *rest]  # Hydra parses sys.argv
    module.main()


if __name__ == "__main__":
    main()
