"""``gepa-seq``, ``mipro-seq`` and ``gepa-joint``: DSPy's own optimizers as comparison methods.

* ``gepa-seq`` runs ``dspy.GEPA`` on each task in turn, starting from the
  previous task's program, with trainset and valset of the current task only —
  the sequential fine-tuning analogue, free to forget.
* ``mipro-seq`` does the same with ``dspy.MIPROv2``.
* ``gepa-joint`` runs ``dspy.GEPA`` once on the union of every task's train and
  val (an upper reference, not continual); its context then stays fixed.

The optimized program is turned back into a :class:`LearnedContext` with
:meth:`LearnedContext.from_program` (instruction and demos; demos keep only the
signature's fields). The task LM runs the program (``dspy.context(lm=task_lm)``);
the reflection LM is GEPA's ``reflection_lm`` and MIPROv2's ``prompt_model``.
Both get the task's metric in their form: GEPA receives score and feedback
(``dspy.Prediction(score=, feedback=)``), MIPROv2 the score (and, while it
bootstraps demos, whether the example was solved).

**Budgets.** The unit is one program call on one example, as in ctxopt's
ledger. Each step may spend ``ctx.task_calls`` of them; a plan sets the
optimizer's own knobs so that its worst case stays within that:

* GEPA (:func:`gepa_plan`): its stop check runs before each iteration, and one
  iteration costs at most ``max(2·minibatch, 5 merge examples)`` plus a full
  valset evaluation, so ``max_metric_calls = task_calls − |val| −
  max(2·minibatch, 5)``; the valset is cut if the budget cannot afford two
  evaluations of it.
* MIPROv2 (:func:`mipro_plan`): ``auto=None``; cost = bootstrapping (at most
  ``num_candidates − 2`` demo sets, each at most one pass over the trainset
  used) + the default program's full val evaluation + ``num_trials`` minibatch
  evaluations + the full evaluations MIPROv2 interleaves (counted by
  replaying its schedule, :func:`mipro_full_evals`). The plan takes the most
  trials that fit.

Reflection calls are not capped by these APIs (GEPA reflects once per
iteration; MIPROv2's proposer makes a fixed number of calls); the harness
reports what each method used.

Example:
    >>> gepa_plan(300, n_val=30).max_metric_calls
    264
    >>> p = mipro_plan(300, n_train=40, n_val=30)
    >>> p.worst_case <= 300, p.num_trials >= 2
    (True, True)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import dspy

from ctxopt.baselines.base import LearnContext, Outcome, sample
from ctxopt.context import LearnedContext
from ctxopt.errors import ConfigError
from ctxopt.tasks import example_id

__all__ = [
    "GepaJoint",
    "GepaPlan",
    "GepaSeq",
    "MiproPlan",
    "MiproSeq",
    "gepa_plan",
    "mipro_full_evals",
    "mipro_plan",
    "program_context",
    "task_metric",
]

log = logging.getLogger(__name__)

GEPA_MERGE_SUBSAMPLE = 5  # examples a GEPA merge proposal is scored on (gepa.proposer.merge)


# --------------------------------------------------------------------------- budget plans


@dataclass(frozen=True)
class GepaPlan:
    """GEPA's budget knobs for one step, and the worst case they allow.

    Example:
        >>> GepaPlan(264, 30, 3, 300).to_dict()["worst_case"]
        300
    """

    max_metric_calls: int
    val_size: int
    minibatch: int
    worst_case: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def gepa_plan(task_calls: int, n_val: int, minibatch: int = 3) -> GepaPlan:
    """The largest ``max_metric_calls`` whose worst case stays within ``task_calls``.

    Raises:
        ConfigError: The budget cannot pay for even one GEPA iteration.
    """
    per_iter = max(2 * minibatch, GEPA_MERGE_SUBSAMPLE)
    val = min(n_val, (task_calls - per_iter - 1) // 2)
    if val < 1 or task_calls - val - per_iter < val + 1:
        raise ConfigError(f"a budget of {task_calls} task-LM calls per task is too small for GEPA "
                          f"(needs at least {2 * (1 + per_iter) + 1}); raise task_calls_per_task")
    max_calls = task_calls - val - per_iter
    return GepaPlan(max_calls, val, minibatch, max_calls - 1 + per_iter + val)


def mipro_full_evals(num_trials: int, steps: int) -> int:
    """How many full valset evaluations MIPROv2 interleaves with ``num_trials`` minibatch trials.

    Replays ``MIPROv2._optimize_prompt_parameters``: a full evaluation follows a
    trial whose number is a multiple of ``steps + 1`` or is the next to last;
    each adds a trial to the study, which shifts later trial numbers.

    Example:
        >>> mipro_full_evals(10, 5)
        2
    """
    adjusted = num_trials + num_trials // steps + 1 + (1 if num_trials % steps else 0)
    added = fulls = 0
    for k in range(num_trials):
        trial_num = 2 + k + added  # the default program is trial 0; optuna numbers from 0, MIPRO adds 1
        if trial_num % (steps + 1) == 0 or trial_num == adjusted - 1:
            fulls += 1
            added += 1
    return fulls


@dataclass(frozen=True)
class MiproPlan:
    """MIPROv2's budget knobs for one step, and the worst case they allow."""

    num_candidates: int
    num_trials: int
    train_size: int
    val_size: int
    minibatch: bool
    minibatch_size: int
    full_eval_steps: int
    max_bootstrapped_demos: int
    max_labeled_demos: int
    worst_case: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mipro_cost(c: int, t: int, train: int, val: int, mb: int, steps: int) -> int:
    bootstrap = max(0, c - 2) * train  # demo sets -1 .. c-4 bootstrap; -3 (zero-shot) and -2 (labeled) are free
    if mb >= val:
        return bootstrap + val + t * val
    return bootstrap + val + t * mb + mipro_full_evals(t, steps) * val


def mipro_plan(task_calls: int, n_train: int, n_val: int, *, num_candidates: int = 4, minibatch_size: int = 10,
               full_eval_steps: int = 5, max_demos: int = 3) -> MiproPlan:
    """The most MIPROv2 trials whose worst case stays within ``task_calls``.

    Prefers the whole valset and trainset: it halves the trainset used for
    bootstrapping (down to 2 examples), then the valset, until at least 2
    trials fit; failing that, 1 trial with the smallest sets.

    Raises:
        ConfigError: The budget cannot pay for one trial.
    """

    def halvings(n: int, low: int) -> list[int]:
        out = [n]
        while out[-1] > low:
            out.append(max(low, out[-1] // 2))
        return out

    best = None
    for val in halvings(n_val, 1):
        mb = min(minibatch_size, val)
        for train in halvings(n_train, min(2, n_train)):
            t = 0
            while _mipro_cost(num_candidates, t + 1, train, val, mb, full_eval_steps) <= task_calls:
                t += 1
            if t >= 1 and best is None:
                best = (train, t, val, mb)
            if t >= 2:
                best = (train, t, val, mb)
                break
        if best is not None and best[1] >= 2:
            break
    if best is None:
        raise ConfigError(f"a budget of {task_calls} task-LM calls per task is too small for MIPROv2; "
                          "raise task_calls_per_task")
    train, t, val, mb = best
    return MiproPlan(num_candidates, t, train, val, mb < val, mb, full_eval_steps, max_demos, max_demos,
                     _mipro_cost(num_candidates, t, train, val, mb, full_eval_steps))


# --------------------------------------------------------------------------- metric and program


def task_metric(tasks: Sequence[Any], *, form: str) -> Callable[..., Any]:
    """The tasks' metrics in DSPy's optimizer form; each gold example is scored by its own task.

    Args:
        tasks: The tasks whose train/val examples will be scored.
        form: ``"gepa"`` (``(gold, pred, trace, pred_name, pred_trace) -> Prediction(score, feedback)``)
            or ``"mipro"`` (``(gold, pred, trace=None) -> float``, or solved-or-not while bootstrapping).
    """
    by_id = {example_id(e): t for t in tasks for e in (*t.train, *t.val)}
    only = tasks[0] if len(tasks) == 1 else None

    def score(gold: Any, pred: Any) -> tuple[float, str]:
        task = by_id.get(example_id(gold), only)
        if task is None:
            return 0.0, "this example belongs to no known task"
        try:
            s = task.metric(gold, pred)
            return min(1.0, max(0.0, float(s.score))), str(s.feedback)
        except Exception as exc:  # noqa: BLE001 - one failure is one bad score
            return 0.0, f"the metric failed on this example ({type(exc).__name__}: {exc})"

    if form == "gepa":
        def gepa_metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None,
                        pred_trace: Any = None) -> dspy.Prediction:
            value, feedback = score(gold, pred)
            return dspy.Prediction(score=value, feedback=feedback)

        return gepa_metric
    if form == "mipro":
        def mipro_metric(gold: Any, pred: Any, trace: Any = None) -> float | bool:
            value, _ = score(gold, pred)
            return value >= 1.0 if trace is not None else value

        return mipro_metric
    raise ConfigError(f"unknown metric form {form!r}; use gepa or mipro")


def start_program(program: dspy.Module, context: LearnedContext, task: str | None) -> dspy.Module:
    """A fresh copy of ``program`` with ``context`` applied: where an optimizer starts."""
    student = copy.deepcopy(program)
    context.apply_to(student, task=task)
    for _, pred in student.named_predictors():
        pred.lm = None  # the optimizer's dspy.context decides the LM
    return student


def program_context(program: dspy.Module) -> LearnedContext:
    """The learned context of an optimized program: instructions and demos (signature fields only)."""
    program = copy.deepcopy(program)
    for _, pred in program.named_predictors():
        fields = set(pred.signature.input_fields) | set(pred.signature.output_fields)
        clean = []
        for demo in getattr(pred, "demos", None) or ():
            data = dict(demo.toDict() if hasattr(demo, "toDict") else demo)
            kept = {k: v for k, v in data.items() if k in fields}
            if kept:
                clean.append(dspy.Example(**kept))
        pred.demos = clean
    return LearnedContext.from_program(program)


def _usage_note(name: str, before: LearnedContext, after: LearnedContext) -> str:
    changed = before.hash != after.hash
    return f"{name}: {'new instruction/demos' if changed else 'no change'}"


# --------------------------------------------------------------------------- methods


class GepaSeq:
    """``dspy.GEPA`` on each task in turn (current task's train and val only).

    Args:
        minibatch: GEPA's ``reflection_minibatch_size``.
        use_merge: GEPA's merge proposals.
    """

    name = "gepa-seq"
    joint = False

    def __init__(self, minibatch: int = 3, use_merge: bool = True) -> None:
        self.minibatch = minibatch
        self.use_merge = use_merge

    def _run(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext,
             train: list[Any], val: list[Any], task_name: str | None) -> Outcome:
        n_pred = len(program.named_predictors())
        plan = gepa_plan(ctx.task_calls // max(1, n_pred), len(val), self.minibatch)
        val = sample(val, plan.val_size, ctx.seed, self.name, "val", ctx.step)
        optimizer = dspy.GEPA(task_metric(tasks, form="gepa"), max_metric_calls=plan.max_metric_calls,
                              reflection_lm=ctx.reflection_lm, reflection_minibatch_size=self.minibatch,
                              use_merge=self.use_merge, num_threads=ctx.num_threads, seed=ctx.seed,
                              track_stats=False)
        student = start_program(program, context, task_name)
        with dspy.context(lm=ctx.task_lm):
            best = optimizer.compile(student, trainset=train, valset=val)
        new = program_context(best)
        return Outcome(new, note=_usage_note(self.name, context, new), accepted=new.hash != context.hash,
                       extra={"plan": plan.to_dict()})

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        task = tasks[-1]
        return self._run(program, context, [task], ctx, list(task.train), list(task.val),
                         task.family if ctx.aware else None)


class GepaJoint(GepaSeq):
    """``dspy.GEPA`` once on the union of all tasks' train and val (upper reference, not continual)."""

    name = "gepa-joint"
    joint = True

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        train = [e for t in tasks for e in t.train]
        val = [e for t in tasks for e in t.val]
        return self._run(program, context, list(tasks), ctx, train, val, None)


class MiproSeq:
    """``dspy.MIPROv2`` on each task in turn (current task's train and val only).

    Args:
        num_candidates: Instruction and demo-set candidates.
        minibatch_size: Val examples per trial.
        full_eval_steps: Trials between full val evaluations.
        max_demos: ``max_bootstrapped_demos`` and ``max_labeled_demos``.
    """

    name = "mipro-seq"
    joint = False

    def __init__(self, num_candidates: int = 4, minibatch_size: int = 10, full_eval_steps: int = 5,
                 max_demos: int = 3) -> None:
        self.num_candidates = num_candidates
        self.minibatch_size = minibatch_size
        self.full_eval_steps = full_eval_steps
        self.max_demos = max_demos

    def learn(self, program: Any, context: LearnedContext, tasks: Sequence[Any], ctx: LearnContext) -> Outcome:
        task = tasks[-1]
        n_pred = len(program.named_predictors())
        plan = mipro_plan(ctx.task_calls // max(1, n_pred), len(task.train), len(task.val),
                          num_candidates=self.num_candidates, minibatch_size=self.minibatch_size,
                          full_eval_steps=self.full_eval_steps, max_demos=self.max_demos)
        train = sample(task.train, plan.train_size, ctx.seed, self.name, "train", ctx.step)
        val = sample(task.val, plan.val_size, ctx.seed, self.name, "val", ctx.step)
        optimizer = dspy.MIPROv2(task_metric([task], form="mipro"), prompt_model=ctx.reflection_lm,
                                 task_model=ctx.task_lm, auto=None, num_candidates=plan.num_candidates,
                                 max_bootstrapped_demos=plan.max_bootstrapped_demos,
                                 max_labeled_demos=plan.max_labeled_demos, num_threads=ctx.num_threads,
                                 max_errors=10**6, seed=ctx.seed + ctx.step, verbose=False, track_stats=False)
        student = start_program(program, context, task.family if ctx.aware else None)
        with dspy.context(lm=ctx.task_lm):
            best = optimizer.compile(student, trainset=train, valset=val, num_trials=plan.num_trials,
                                     minibatch=plan.minibatch, minibatch_size=plan.minibatch_size,
                                     minibatch_full_eval_steps=plan.full_eval_steps,
                                     view_data_batch_size=min(10, len(train)))
        new = program_context(best)
        return Outcome(new, note=_usage_note(self.name, context, new), accepted=new.hash != context.hash,
                       extra={"plan": plan.to_dict()})
