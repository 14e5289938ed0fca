"""`synth search SPEC --space ...`: a bounded search over the choices a user varies, each
trial a real training run, with Optuna (the ``search`` extra).

A search space is a list of ``NAME=DOMAIN`` choices. NAME says what a trial changes in
the spec — as an edit of its parsed AST, printed back as a spec, never a text template:

==========================  =================================================================
``recipe.OPTION``           a recipe option (``recipe.lr``, ``recipe.epochs``, ...)
``VALUE.OPTION``            a keyword option of the one call in VALUE's assignment that has it
                            (``feats.stage``: ``feats = r(image, stage=3)``; ``head.out``)
``adapt.OPTION``            that option of every ``adapt ... with METHOD(...)`` statement
                            (``adapt.rank`` for LoRA's rank)
``frozen_stages.SOURCE``    how many of SOURCE's first feature stages stay frozen (the rest of
                            it trains): ``train SOURCE`` then ``freeze SOURCE@stage0, ...``
==========================  =================================================================

DOMAIN is ``LOW:HIGH`` (a float, uniform), ``LOW:HIGH:log`` (log-uniform), ``LOW..HIGH``
(whole numbers), or ``A|B|C`` (a choice of literals). Each trial writes its spec, trains
it on the training split less a stratified fifth held out (seeded), and reports the
held-out accuracy (the objective), the test accuracy, trainable parameters and seconds.
The study lives in ``OUT/study.db`` (SQLite): running the same command again resumes it
up to ``--trials``. Results are a table, ``results.json`` and a Pareto plot of held-out
accuracy against trainable parameters and against time.

>>> parse_space(["recipe.lr=1e-4:1e-2:log", "feats.stage=2|3", "frozen_stages.r=0..3"])
[Choice(name='recipe.lr', kind='float', low=0.0001, high=0.01, log=True, options=()), \
Choice(name='feats.stage', kind='categorical', low=None, high=None, log=False, options=(2, 3)), \
Choice(name='frozen_stages.r', kind='int', low=0, high=3, log=False, options=())]
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from synthdsl.lang import ast
from synthdsl.lang.errors import SynthError
from synthdsl.lang.printer import format_spec
from synthdsl.train.errors import TrainError

#: The fraction of the training split each trial holds out to be scored on.
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Choice:
    """One dimension of the space."""

    name: str
    kind: str  #: float, int or categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    options: tuple = ()


def _literal(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip('"')


def parse_space(items: Sequence[str]) -> list[Choice]:
    """``NAME=DOMAIN`` items as choices (see the module); S010 for one that is malformed."""
    out = []
    for item in items:
        name, sep, domain = item.partition("=")
        name, domain = name.strip(), domain.strip()
        if not sep or not name or not domain:
            raise SynthError("S010", f"--space {item!r}: expected NAME=DOMAIN",
                             hint="e.g. --space recipe.lr=1e-4:1e-2:log --space feats.stage=2|3")
        try:
            if "|" in domain:
                out.append(Choice(name, "categorical",
                                  options=tuple(_literal(v) for v in domain.split("|"))))
            elif ".." in domain:
                lo, hi = (int(v) for v in domain.split(".."))
                if hi < lo:
                    raise ValueError("the range runs backwards")
                out.append(Choice(name, "int", lo, hi))
            else:
                parts = domain.split(":")
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
                    raise ValueError("expected LOW:HIGH or LOW:HIGH:log")
                lo, hi = float(parts[0]), float(parts[1])
                log = len(parts) == 3
                if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (log and lo <= 0):
                    raise ValueError("LOW < HIGH, finite (and > 0 on a log scale)")
                out.append(Choice(name, "float", lo, hi, log))
        except ValueError as e:
            raise SynthError("S010", f"--space {item!r}: {e}",
                             hint="LOW:HIGH, LOW:HIGH:log, LOW..HIGH or A|B|C") from None
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise SynthError("S010", "--space names a choice twice")
    return out


# ---- applying a trial's values to the spec -------------------------------------------


def _set_kwarg(kwargs: tuple[ast.KwArg, ...], name: str, value: Any) -> tuple[ast.KwArg, ...]:
    if any(k.name == name for k in kwargs):
        return tuple(k.model_copy(update={"value": value}) if k.name == name else k
                     for k in kwargs)
    return (*kwargs, ast.KwArg(name=name, value=value))


def _calls(expr) -> list:
    """Every call and stage inside an expression."""
    if isinstance(expr, ast.Call):
        return [expr, *[c for a in expr.args for c in _calls(a)]]
    if isinstance(expr, ast.Pipe):
        return [*_calls(expr.value), expr.stage]
    return []


def _replace(expr, old, new):
    if expr is old:
        return new
    if isinstance(expr, ast.Call):
        return expr.model_copy(update={"args": tuple(_replace(a, old, new) for a in expr.args)})
    if isinstance(expr, ast.Pipe):
        return expr.model_copy(update={"value": _replace(expr.value, old, new),
                                       "stage": new if expr.stage is old else expr.stage})
    return expr


def apply_values(spec: ast.Spec, values: dict[str, Any]) -> ast.Spec:
    """`spec` with a trial's `values` (choice name -> value) applied; S010 naming a choice
    the spec has nothing for."""
    statements = list(spec.statements)
    tail: list = []
    for name, value in values.items():
        head, _, option = name.partition(".")
        if not option:
            raise SynthError("S010", f"--space {name}: expected a dotted name such as "
                             "recipe.lr or feats.stage")
        if head == "recipe":
            at = [i for i, st in enumerate(statements) if isinstance(st, ast.RecipeStmt)]
            if at:
                st = statements[at[-1]]
                statements[at[-1]] = st.model_copy(
                    update={"options": _set_kwarg(st.options, option, value)})
            else:
                statements.append(ast.RecipeStmt(options=(ast.KwArg(name=option, value=value),)))
        elif head == "adapt":
            at = [i for i, st in enumerate(statements) if isinstance(st, ast.AdaptStmt)]
            if not at:
                raise SynthError("S010", f"--space {name}: the spec has no adapt statement")
            for i in at:
                statements[i] = statements[i].model_copy(
                    update={"options": _set_kwarg(statements[i].options, option, value)})
        elif head == "frozen_stages":
            if not isinstance(value, int) or value < 0:
                raise SynthError("S010", f"--space {name}: takes whole numbers ≥ 0")
            tail.append(ast.TrainStmt(patterns=(ast.Pattern(text=option),)))
            if value:
                tail.append(ast.FreezeStmt(patterns=tuple(
                    ast.Pattern(text=f"{option}@stage{k}") for k in range(value))))
        else:
            at = [i for i, st in enumerate(statements)
                  if isinstance(st, ast.Assign) and head in [t.name for t in st.targets]]
            if not at:
                raise SynthError("S010", f"--space {name}: the spec assigns no value '{head}'")
            st = statements[at[0]]
            found = [c for c in _calls(st.value) if any(k.name == option for k in c.kwargs)]
            if len(found) != 1:
                raise SynthError("S010", f"--space {name}: '{head}' has "
                                 f"{'no call' if not found else 'several calls'} with option "
                                 f"'{option}'", hint="name an option written once in it")
            new = found[0].model_copy(update={"kwargs": _set_kwarg(found[0].kwargs, option,
                                                                    value)})
            statements[at[0]] = st.model_copy(update={"value": _replace(st.value, found[0],
                                                                        new)})
    outputs = [i for i, st in enumerate(statements) if isinstance(st, ast.OutputStmt)]
    cut = outputs[0] if outputs else len(statements)
    statements = statements[:cut] + tail + statements[cut:]
    return spec.model_copy(update={"statements": tuple(statements)})


# ---- the study -----------------------------------------------------------------------


def _optuna():
    try:
        import optuna
    except ImportError:
        raise TrainError("synth search needs Optuna, which is not installed",
                         hint="pip install 'synthdsl[search]'") from None
    return optuna


def search(spec_path: str | Path, data: str, space: Sequence[Choice], out: str | Path, *,
           trials: int = 10, seed: int = 0, classes: Sequence[int | str] | None = None,
           log=print) -> list[dict[str, Any]]:
    """Run (or resume) the study in `out` up to `trials` finished trials; every trial's
    record (values, held-out and test accuracy, trainable parameters, seconds)."""
    optuna = _optuna()
    from synthdsl.lang.parse import parse_file

    spec = parse_file(spec_path)
    out = Path(out)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="synth", storage=f"sqlite:///{out / 'study.db'}", load_if_exists=True,
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]

    def objective(trial) -> float:
        values = {}
        for c in space:
            if c.kind == "float":
                values[c.name] = trial.suggest_float(c.name, c.low, c.high, log=c.log)
            elif c.kind == "int":
                values[c.name] = trial.suggest_int(c.name, int(c.low), int(c.high))
            else:
                values[c.name] = trial.suggest_categorical(c.name, list(c.options))
        text = format_spec(apply_values(spec, values))
        (out / "trials" / f"{trial.number:04d}.synth").write_text(text)
        try:
            record = run_trial(text, Path(spec_path), data, classes, seed)
        except SynthError as e:  # this trial's spec is wrong: said, and the study goes on
            log(f"trial {trial.number} failed: {e}")
            raise
        for k, v in record.items():
            trial.set_user_attr(k, v)
        log(f"trial {trial.number}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float)
                                                    else f"{k}={v}" for k, v in values.items())
            + f" -> held-out {record['val_accuracy']:.4f}, test {record['test_accuracy']:.4f}, "
            f"{record['trainable']:,} trainable, {record['seconds']:.1f} s")
        return record["val_accuracy"]

    if trials > len(done):
        study.optimize(objective, n_trials=trials - len(done), catch=(SynthError,))
    records = [{"trial": t.number, "values": dict(t.params), **t.user_attrs}
               for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    (out / "results.json").write_text(json.dumps({"space": [c.__dict__ for c in space],
                                                  "trials": records}, indent=2))
    return records


def run_trial(text: str, path: Path, data: str, classes, seed: int) -> dict[str, Any]:
    """Train the spec `text`, read as the spec at `path` (its relative paths and lock), on
    the training split less a held-out fifth."""
    from synthdsl.graph import build_graph
    from synthdsl.lang.parse import parse_spec
    from synthdsl.pipeline import check_locked, compile_locked
    from synthdsl.train.data import DataSpec
    from synthdsl.train.evaluate import evaluate
    from synthdsl.train.options import Options
    from synthdsl.train.preprocess import preprocess_for
    from synthdsl.train.recipe import Recipe
    from synthdsl.train.run import hold_out, train

    t0 = time.perf_counter()
    graph = check_locked(build_graph(parse_spec(text, str(path))))
    recipe = Recipe.resolve(graph.graph.get("recipe"), {"seed": seed})
    model = compile_locked(graph, seed=seed)
    pre = preprocess_for(model)
    spec_data = DataSpec(data, tuple(classes) if classes else None)
    fit, val = hold_out(spec_data.load("train", pre.size, pre.channels or 3), VAL_FRACTION, seed)
    test = spec_data.load("test", pre.size, pre.channels or 3)
    train(model, fit, None, recipe=recipe, preprocess=pre, options=Options(quiet=True))

    def acc(d) -> float:
        return float(evaluate(model, d, pre).rows[0].metrics.accuracy)

    return {"val_accuracy": acc(val), "test_accuracy": acc(test),
            "trainable": sum(p.numel() for p in model.trainable_parameters()),
            "seconds": time.perf_counter() - t0}


def pareto(records: list[dict[str, Any]], cost: str) -> list[int]:
    """The trials no other trial beats on held-out accuracy at no more `cost`."""
    front = []
    for r in records:
        if not any(o is not r and o["val_accuracy"] >= r["val_accuracy"] and o[cost] <= r[cost]
                   and (o["val_accuracy"] > r["val_accuracy"] or o[cost] < r[cost])
                   for o in records):
            front.append(r["trial"])
    return front


def table(records: list[dict[str, Any]]) -> str:
    """The trials, best held-out accuracy first, Pareto-optimal ones marked."""
    front = set(pareto(records, "trainable")) | set(pareto(records, "seconds"))
    names = sorted({k for r in records for k in r["values"]})
    rows = [["trial", *names, "held-out", "test", "trainable", "seconds", "pareto"]]
    for r in sorted(records, key=lambda r: -r["val_accuracy"]):
        rows.append([str(r["trial"]), *[_fmt(r["values"].get(n)) for n in names],
                     f"{r['val_accuracy']:.4f}", f"{r['test_accuracy']:.4f}",
                     f"{r['trainable']:,}", f"{r['seconds']:.1f}",
                     "*" if r["trial"] in front else ""])
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def plot(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Held-out accuracy against trainable parameters and against seconds, fronts drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, cost, label in ((axes[0], "trainable", "trainable parameters"),
                            (axes[1], "seconds", "seconds per trial")):
        ax.scatter([r[cost] for r in records], [r["val_accuracy"] for r in records],
                   color="#999999", label="trials")
        front = sorted((r for r in records if r["trial"] in pareto(records, cost)),
                       key=lambda r: r[cost])
        ax.plot([r[cost] for r in front], [r["val_accuracy"] for r in front], "o-",
                color="#c44e52", label="Pareto front")
        ax.set_xlabel(label)
        if cost == "trainable":
            ax.set_xscale("log")
        ax.legend()
    axes[0].set_ylabel("held-out accuracy")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


