"""The recipe space of a search (7_search.py): which recipes, which knobs each draws and from which
ranges (read from the declarations: the objectives' in losses/, the shared ones in toolkit/plan.py),
how a drawn recipe becomes 1_train.py's arguments, when it last changes what it trains on, and the
pruner that waits for that change before judging it.
"""
import itertools

import numpy as np
import optuna

import criterion
from toolkit import plan
from toolkit.cli import UserError
from toolkit.space import Choice, Integer, LogUniform

BASELINE = "ERM"
DEFAULT_RECIPES = (*criterion.objective_names(), "LDAM-DRW")
SETTLE_EPOCHS = 2  # epochs a late change (DRW, DRS, SPBL's last stage) is given before pruning may judge it


def split_recipe(recipe: str) -> tuple:
    """("LDAM", True) of "LDAM-DRW": an objective of criterion.py's table, with or without --drw."""
    objective, drw = (recipe[:-4], True) if recipe.endswith("-DRW") else (recipe, False)
    if objective not in criterion.OBJECTIVES:
        raise UserError(f"--objectives: unknown recipe {recipe!r}; choose from {', '.join(criterion.OBJECTIVES)} "
                        f"(add -DRW to one that takes --drw, e.g. LDAM-DRW)")
    if drw and not criterion.OBJECTIVES[objective].drw:
        usable = ", ".join(f"{n}-DRW" for n, row in criterion.OBJECTIVES.items() if row.drw)
        raise UserError(f"--objectives {recipe}: {objective} does not take --drw; DRW recipes: {usable}")
    return objective, drw


def recipe_knobs(recipe: str, fixed=frozenset()) -> list:
    """The HyperParameters a search draws for a recipe, in order: the shared knobs (toolkit/plan.py),
    the objective's own and those it reads (losses/), the DRW share of a -DRW recipe, mixup's alpha
    where the objective takes mixed batches; minus those fixed on the command line."""
    objective, drw = split_recipe(recipe)
    row = criterion.OBJECTIVES[objective]
    declared = {h.dest: h for h in criterion.hyper_parameters()}
    knobs = [*plan.SEARCHED_KNOBS, *row.hyper_parameters, *(declared[d] for d in row.reads)]
    knobs += [plan.DRW_SHARE] if drw else []
    knobs += [plan.MIXUP_ALPHA] if row.loss.mixing_refusal is None else []
    return [h for h in knobs if h.search is not None and h.dest not in fixed]


def describe_space(recipes_: list, fixed=frozenset()) -> str:
    """--space: every recipe's knobs and ranges."""
    lines = []
    for recipe in recipes_:
        lines.append(f"{recipe}: {criterion.OBJECTIVES[split_recipe(recipe)[0]].summary}")
        knobs = recipe_knobs(recipe, fixed)
        width = max([len(h.flag) for h in knobs], default=0)
        lines += [f"  {h.flag:<{width}}  {h.search}  (default {'none' if h.default is None else h.default})"
                  for h in knobs] or ["  (nothing searched)"]
    knobs = {h.dest for recipe in recipes_ for h in recipe_knobs(recipe)}
    if set(fixed) & knobs:
        lines.append(f"fixed, not searched: {', '.join(sorted(set(fixed) & knobs))}")
    return "\n".join(lines)


def grid_values(search, points: int) -> list:
    """`points` values spread over a range (on its scale), or every value of a Choice."""
    if isinstance(search, Choice):
        return list(search.values)
    if isinstance(search, LogUniform):
        values = np.geomspace(search.low, search.high, points)
    else:
        values = np.linspace(search.low, search.high, points)
    if isinstance(search, Integer):
        return sorted({int(round(v)) for v in values})
    return [float(f"{v:.4g}") for v in values]


def grid(recipes_: list, fixed, points: int) -> list:
    """Every combination of grid values, recipe by recipe: [{"recipe": ..., dest: value, ...}]."""
    combos = []
    for recipe in recipes_:
        knobs = recipe_knobs(recipe, fixed)
        for values in itertools.product(*(grid_values(h.search, points) for h in knobs)):
            combos.append({"recipe": recipe, **{h.dest: v for h, v in zip(knobs, values)}})
    return combos


def for_objective(argv: list, objective: str) -> list:
    """The shared training options without the objective flags that `objective` does not read
    (1_train.py refuses those): `--la-tau 1.5` fixes LA's tau, and ERM's trials go without it."""
    parser = plan.build_parser()
    flag_dests = {o: a.dest for a in parser._actions for o in a.option_strings if a.dest in criterion.DEFAULTS}
    reads = set(criterion.OBJECTIVES[objective].flags)
    kept, dropping = [], False
    for token in argv:
        if token.startswith("--"):
            dest = flag_dests.get(token.split("=", 1)[0])
            if dest is None and token.startswith("--no-"):
                dest = flag_dests.get("--" + token.split("=", 1)[0][5:])
            dropping = dest is not None and dest not in reads
        if not dropping:
            kept.append(token)
    return kept


def recipe_argv(recipe: str, params: dict, epochs: int) -> list:
    """1_train.py's options that set a recipe's drawn values."""
    objective, _ = split_recipe(recipe)
    by_dest = {h.dest: h for h in recipe_knobs(recipe)}
    argv = ["--objective", objective]
    for dest, value in params.items():
        if dest == "recipe":
            continue
        knob = by_dest[dest]
        if knob is plan.DRW_SHARE:
            argv += ["--drw", str(plan.drw_epoch(value, epochs))]
        elif isinstance(value, bool):
            argv.append(knob.flag if value else "--no-" + knob.flag[2:])
        elif value is not None:  # None: the option off (its default)
            argv += [knob.flag, str(value)]
    return argv


def describe_params(recipe: str, params: dict) -> str:
    """"LA, la_tau 1.5, weight_decay 0.001": a recipe in words."""
    shown = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {'none' if v is None else v}"
             for k, v in params.items() if k != "recipe"]
    return ", ".join([recipe, *shown])


def late_change(args) -> int:
    """The last epoch (counted from 1) at which the recipe changes what it trains on: the DRW start,
    the DRS start, an objective's last stage (`Objective.last_change`, SPBL's); 0 when
    nothing changes late."""
    return max(args.drw or 0, args.drs or 0, criterion.OBJECTIVES[args.objective].loss.last_change(args))


# ---------------------------------------------------------------- pruning

class LateChangeGuard(optuna.pruners.BasePruner):
    """Successive halving, but never before a recipe's late change has had SETTLE_EPOCHS epochs to
    show: a DRW recipe judged at an epoch before its re-weighting starts is judged as plain ERM (see
    docs/search.md for the measurement that made this guard)."""

    def __init__(self, inner: optuna.pruners.BasePruner):
        self.inner = inner

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        if step is None or step < trial.user_attrs.get("settles_at", 0):
            return False
        return self.inner.prune(study, trial)


def build_pruner(kind: str, min_resource: int, reduction_factor: int, epochs: int):
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        inner = optuna.pruners.HyperbandPruner(min_resource, epochs, reduction_factor)
    else:
        inner = optuna.pruners.SuccessiveHalvingPruner(min_resource, reduction_factor)
    return LateChangeGuard(inner) if kind != "unguarded" else inner


def rung_epochs(settings) -> list:
    """The epochs at which successive halving compares trials."""
    if settings.pruner == "none":
        return []
    rungs, epoch = [], settings.min_resource
    while epoch < settings.epochs:
        rungs.append(epoch)
        epoch *= settings.reduction_factor
    return rungs

