"""The ``diffgeo learn-direction`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from diffgeo.cli._args import (
    ArgumentParser,
    check_model_arg,
    check_output_file,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    preflight,
)
from diffgeo.core.io import result_path
from diffgeo.editing.learned import logger, train_direction
from diffgeo.editing.objectives import probe_objective
from diffgeo.models.loading import list_models, load


# -- command line -----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffgeo learn-direction --model shapes --factor colour --target blue --steps 300
    --out directions/shapes_blue``: train f_t with the attribute probe (resumes from --out), then
    write the per-timestep Direction beside it (``OUT.direction.safetensors``).

    >>> main(["--factor", "colour"])   # refused by the parser: --out is required
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """

    p = ArgumentParser(prog="diffgeo learn-direction", description=main.__doc__.partition(">>>")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("--factor", default="colour")
    p.add_argument("--target", default="blue")
    p.add_argument("--steps", type=positive_int, default=300)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--lr", type=positive_float, default=3e-3)
    p.add_argument("--l1-weight", type=non_negative_float, default=3.0)
    p.add_argument("--t-edit", type=non_negative_int, default=None)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--direction-steps", type=positive_int, default=50, help="DDIM grid of the saved Direction")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    checks = [lambda: check_model_arg(args.model), lambda: check_output_file(result_path(args.out)),
              lambda: check_output_file(_direction_path(result_path(args.out)))]
    if args.model in list_models():  # an embedded model's reader is known by name: factor and target checked now
        checks.append(lambda: probe_objective(args.model, args.factor, args.target))
    base = preflight(p, *checks)[1]

    model = load(args.model)
    ld = train_direction(model, probe_objective(model, args.factor, args.target), out=args.out, steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, l1_weight=args.l1_weight, t_edit=args.t_edit,
                         seed=args.seed)
    d = ld.to_direction(model, steps=args.direction_steps)
    written = d.save(_direction_path(base))
    logger.info("f_t at %s (step %d), direction at %s", base, ld.step, written)
    return 0


def _direction_path(base: Path) -> Path:
    """OUT.direction.safetensors beside OUT.safetensors (the learned f_t)."""
    return base.with_name(base.name[: -len(".safetensors")] + ".direction.safetensors")
