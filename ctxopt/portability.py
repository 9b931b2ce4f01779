"""Portability across task models: carry a learned context C to another LM, gated.

:func:`transfer` takes the context C at a store revision, learned with one task
LM, and applies it to the program running on another LM:

1. **re-validates** C on the *val* split of every task seen so far, against the
   new LM without C (the program's own instruction, C₀), and reports per-task
   deltas;
2. with ``adapt=True`` runs a short gated optimizer pass on the new LM, one step
   per seen task, starting from C. Besides the usual proposers (reflection can
   ``UPDATE``/``DELETE`` rules, demos, format rules) an :class:`AblationProposer`
   offers to delete each transferred rule and the task's demos, so a rule that
   does not help the new model is removed when the gate sees the gain;
3. **never silently keeps a worse version**: if the result scores below the new
   LM without C on the seen tasks' val (mean of per-task means), it falls back
   to C₀, commits that, and says so in the result and the commit;
4. **commits** on the branch ``transfer/<sanitized LM spec>`` (created at the
   source revision when absent): one commit that applies C (with the val deltas
   in its metadata), the adapt steps, and one commit with the outcome. Every
   transfer is recorded, even when nothing changes. The store's HEAD is put back
   where it was afterwards, so a resumed ``ctxopt run`` never writes to the
   transfer branch, and the store's writer lock is held meanwhile, so a run still
   writing to the store fails loudly (``StoreLockedError``) instead of committing
   there. Transfer from a finished run, or from an imported copy of its bundle.

Which stream and tasks: an explicit ``stream`` wins; otherwise ``state.json``
of the run directory holding the store (``RUN_DIR/store``) names the stream and
seed; otherwise the store's metadata (the stream name of C₀'s commit, or of an
earlier transfer). Seen tasks are the tasks named in the history of the
revision. Test splits are never opened here; :func:`measure_test` reports the
accuracy-matrix figures *after* all decisions are made.

Example:
    >>> res = transfer("runs/ii8/store", "local:qwen2.5-coder-1.5b", adapt=True)  # doctest: +SKIP
    >>> res.kept, res.branch                                                        # doctest: +SKIP
    ('adapted', 'transfer/local-qwen2.5-coder-1.5b')
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from ctxopt._atomic import write_json
from ctxopt.budget import Budget, get_budget
from ctxopt.context import GLOBAL, LearnedContext
from ctxopt.edits import DeleteItem, RemoveDemo
from ctxopt.engine import measure_row
from ctxopt.errors import ConfigError
from ctxopt.evaluator import Evaluator
from ctxopt.gate import DEFAULT_GATE, Gate
from ctxopt.lm import DEFAULT_REFLECTION_LM, get_lm, lm_name
from ctxopt.optimizer import ContinualOptimizer, Event
from ctxopt.proposer import Proposal, ProposalContext
from ctxopt.rundir import RunDir
from ctxopt.store import Store, validate_ref_name
from ctxopt.tasks import Task, TaskStream

__all__ = [
    "transfer",
    "measure_test",
    "TransferResult",
    "TaskDelta",
    "AblationProposer",
    "branch_for",
    "resolve_stream",
    "source_lms",
]

log = logging.getLogger(__name__)

BRANCH_PREFIX = "transfer/"
RESULT_VERSION = 1


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TaskDelta:
    """Val scores of one seen task on the target LM: without C, with C, after adapting, kept."""

    task: str
    without: float
    with_c: float
    adapted: float | None = None
    final: float | None = None

    @property
    def delta(self) -> float:
        """With C minus without C."""
        return round(self.with_c - self.without, 6)

    @property
    def adapted_delta(self) -> float | None:
        return None if self.adapted is None else round(self.adapted - self.without, 6)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "without": self.without, "with_c": self.with_c, "delta": self.delta,
                "adapted": self.adapted, "adapted_delta": self.adapted_delta, "final": self.final}


@dataclass(frozen=True)
class TransferResult:
    """What a transfer did.

    Attributes:
        kept: ``"transferred"`` (C as is), ``"adapted"`` (C after the adapt pass)
            or ``"none"`` (fell back to the program without C).
        reason: Why that version was kept, in words.
        rows: Per-task val scores (:class:`TaskDelta`), in stream order.
        contexts: The contexts compared: ``none`` (C₀), ``transferred`` and, with
            adapt, ``adapted``; ``final`` is the one committed last.

    Example:
        >>> r = TransferResult("a" * 40, "local", "local:x", "transfer/local-x", "b" * 40, "kept", "ok",
        ...                    (TaskDelta("t", 0.2, 0.5),), "s", 0, ("t",))
        >>> r.mean("with_c"), r.rows[0].delta
        (0.5, 0.3)
    """

    source_rev: str
    from_lm: str
    to_lm: str
    branch: str
    final_rev: str
    kept: str
    reason: str
    rows: tuple[TaskDelta, ...]
    stream: str
    seed: int
    tasks: tuple[str, ...]
    adapted: bool = False
    work_dir: str = ""
    contexts: dict[str, LearnedContext] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fell_back(self) -> bool:
        return self.kept == "none"

    def mean(self, column: str) -> float | None:
        """Mean over tasks of one column (``without``, ``with_c``, ``adapted``, ``final``)."""
        values = [getattr(r, column) for r in self.rows]
        if not values or any(v is None for v in values):
            return None
        return round(sum(values) / len(values), 6)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": RESULT_VERSION, "source_rev": self.source_rev, "from_lm": self.from_lm, "to_lm": self.to_lm,
            "branch": self.branch, "final_rev": self.final_rev, "kept": self.kept, "reason": self.reason,
            "rows": [r.to_dict() for r in self.rows], "stream": self.stream, "seed": self.seed,
            "tasks": list(self.tasks), "adapted": self.adapted, "work_dir": self.work_dir,
            "context_hashes": {k: v.hash for k, v in self.contexts.items()},
            "means": {c: self.mean(c) for c in ("without", "with_c", "adapted", "final")},
        }


# --------------------------------------------------------------------------- proposer


@dataclass
class AblationProposer:
    """Offer to delete each transferred rule in scope of the task, and the task's demos.

    Rules learned with another LM may not help this one. Each in-scope item
    becomes an independent on/off proposal (``DeleteItem``); the task's demos,
    if any, one "no demos" alternative in the ``demos`` group. The search and
    the gate decide what goes.

    Example:
        >>> AblationProposer().max_items
        12
    """

    max_items: int = 12

    def propose(self, pc: ProposalContext) -> list[Proposal]:
        pctx = pc.context.predictor(pc.predictor)
        scope = None if pc.scope == GLOBAL else pc.task
        items = [it for it in pctx.scoped_items(scope) if it.scope in (pc.scope, GLOBAL)]
        # Task-scoped items first: deleting them cannot affect other tasks.
        items.sort(key=lambda it: (it.scope == GLOBAL,))
        out = []
        for it in items[: self.max_items]:
            edit = DeleteItem(pc.predictor, it.id, rationale=f"ablation: does {it.id} help this model?")
            out.append(Proposal(f"ablate.{it.id}", (edit,), "ablation", f"drop {it.kind} {it.id}: {it.text[:80]}"))
        demos = [d for d in pctx.demos if d.scope == pc.scope]
        if demos:
            edits = tuple(RemoveDemo(pc.predictor, d.id, rationale="ablation: do these demos help this model?")
                          for d in demos)
            out.append(Proposal("ablate.demos", edits, "ablation", f"drop the {len(demos)} demos of the task",
                                group="demos"))
        return out


# --------------------------------------------------------------------------- stream and history


def branch_for(lm_spec: str) -> str:
    """The transfer branch for a target LM spec, checked by the store's ref-name rules.

    Example:
        >>> branch_for("local:qwen2.5-coder-1.5b")
        'transfer/local-qwen2.5-coder-1.5b'
        >>> branch_for("/models/My Model.gguf")
        'transfer/models-My-Model.gguf'
    """
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(lm_spec))
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"-{2,}", "-", name).strip("-.")
    if name.endswith(".lock"):
        name = name[: -len(".lock")] + "-lock"
    name = name[: 100 - len(BRANCH_PREFIX)].rstrip("-.")
    if not name:
        raise ConfigError(f"cannot name a transfer branch after LM spec {lm_spec!r}; pass branch=NAME")
    return validate_ref_name(BRANCH_PREFIX + name, "branch")


def _run_state(store: Store) -> dict[str, Any] | None:
    """The identity of the run that holds ``store`` (stream, seed, tasks) and how far it got, if known."""
    run = RunDir.of_store(store)
    try:
        state = run.read_state()
    except ConfigError as exc:
        raise ConfigError(f"{exc}; pass --stream and --seed") from None
    return None if state is None else {**(state.get("identity") or {}), "done": state.get("done")}


def _history_meta(store: Store, rev: str) -> list[dict[str, Any]]:
    """Metadata of every version reachable from ``rev``, oldest first."""
    return [v.metadata for v in reversed(store.log(rev))]


def source_lms(store: Store, rev: str = "HEAD") -> dict[str, str]:
    """The LMs the context at ``rev`` was learned with: the newest ``lms`` in its history."""
    for meta in reversed(_history_meta(store, rev)):
        if isinstance(meta.get("lms"), dict) and meta["lms"].get("task_lm"):
            return dict(meta["lms"])
    return {}


def resolve_stream(
    store: Store,
    rev: str = "HEAD",
    *,
    stream: TaskStream | str | None = None,
    seed: int | None = None,
    sizes: tuple[int, int, int] | None = None,
    tasks: Sequence[str] | None = None,
) -> tuple[TaskStream, list[Task], int]:
    """The stream behind a store, the tasks seen up to ``rev`` (stream order) and the seed.

    Raises:
        ConfigError: the stream cannot be found or loaded, or no task was seen.
    """
    from ctxopt.streams import load_stream

    history = _history_meta(store, rev)
    state = _run_state(store)
    recorded = next((m["transfer"] for m in reversed(history) if isinstance(m.get("transfer"), dict)
                     and m["transfer"].get("stream")), {})
    if isinstance(stream, TaskStream):
        loaded = stream
        seed = int(seed if seed is not None else stream.meta.get("seed", 0))
    else:
        name = stream
        if name is None and state is not None:
            name, seed = state.get("stream"), seed if seed is not None else state.get("seed")
        if name is None and recorded:
            name = recorded["stream"]
            seed = seed if seed is not None else recorded.get("seed")
            sizes = sizes or (tuple(recorded["sizes"]) if recorded.get("sizes") else None)
        if name is None:
            name = next((m["stream"] for m in history if m.get("stream")), None)
            if name is not None and seed is None:
                log.warning("store %s does not record the stream's seed; using seed 0 (pass --seed)", store.path)
        if name is None:
            raise ConfigError(f"cannot tell which stream store {store.path} learned on; pass --stream NAME --seed N")
        seed = int(seed or 0)
        try:
            loaded = load_stream(name, seed=seed, sizes=sizes)
        except ConfigError as exc:
            raise ConfigError(f"cannot load stream {name!r} of store {store.path} ({exc}); "
                              "pass --stream with its name or YAML path") from None
        if state is not None and state.get("stream") == name and state.get("tasks") not in (None, list(loaded.names)):
            raise ConfigError(f"{RunDir.of_store(store).state_path} lists tasks {state['tasks']}, but stream "
                              f"{name!r} has {list(loaded.names)}; pass --stream/--seed/--sizes as in the run")
    if tasks:
        missing = [t for t in tasks if t not in loaded.names]
        if missing:
            raise ConfigError(f"stream {loaded.name!r} has no task(s) {', '.join(missing)}; "
                              f"tasks: {', '.join(loaded.names)}")
        names = set(tasks)
    else:
        names = {m["task"] for m in history if isinstance(m.get("task"), str)}
        names |= {t for m in history if isinstance(m.get("transfer"), dict) for t in m["transfer"].get("tasks", ())}
        if not names & set(loaded.names) and state is not None:
            names = set((state.get("tasks") or [])[: int(state.get("done") or 0)])
    seen = [t for t in loaded.tasks if t.name in names]
    if not seen:
        raise ConfigError(f"the history of {rev} in store {store.path} names no task of stream {loaded.name!r}; "
                          "pass --tasks")
    return loaded, seen, int(seed)


# --------------------------------------------------------------------------- transfer


def _val_means(ev: Evaluator, program: dspy.Module, ctx: LearnedContext, tasks: Sequence[Task],
               scenario: str) -> dict[str, float]:
    return {t.name: round(ev.evaluate(program, ctx, t, list(t.val), scenario=scenario).mean, 6) for t in tasks}


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else 0.0


def _work_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _default_work_dir(store: Store) -> Path:
    if RunDir.of_store(store).state_path.is_file():
        return store.path.parent / "transfers"
    return store.path.parent / f"{store.path.name}.transfers"


def transfer(
    store: Store | str | Path,
    to_lm: Any,
    *,
    adapt: bool = False,
    stream: TaskStream | str | None = None,
    seed: int | None = None,
    sizes: tuple[int, int, int] | None = None,
    tasks: Sequence[str] | None = None,
    program: dspy.Module | None = None,
    reflection_lm: Any = None,
    budget: str | Budget | dict | None = "light",
    gate: str | Gate = DEFAULT_GATE,
    epsilon: float = 0.02,
    rev: str = "HEAD",
    branch: str | None = None,
    work_dir: str | Path | None = None,
    num_threads: int = 2,
    callbacks: Sequence[Callable[[Event], None]] = (),
) -> TransferResult:
    """Apply the context at ``rev`` to the program on ``to_lm``; re-validate, optionally adapt, commit.

    Args:
        store: The store (or its path) holding C.
        to_lm: The target task LM: a spec such as ``"local:qwen2.5-coder-1.5b"`` or a ``dspy.LM``.
        adapt: Run a short gated optimizer pass on the new LM, one step per seen task.
        stream, seed, sizes, tasks: Override what :func:`resolve_stream` reads from the run.
        program: The program; default the built-in program of the stream. Its own
            instruction and demos are "without C".
        reflection_lm: Proposes edits under ``adapt``; default the one C was learned with.
        budget, gate, epsilon: Of the adapt pass (see :class:`ContinualOptimizer`).
        rev: The version to transfer.
        branch: Branch to commit on; default ``transfer/<sanitized to_lm>``.
        work_dir: Caches and the Optuna study of this transfer; default next to the store.
        num_threads: Evaluator threads.
        callbacks: Receive the adapt pass's :class:`~ctxopt.optimizer.Event` s and
            ``transfer`` events (``phase``: validate, adapt, commit).

    Returns:
        A :class:`TransferResult`; its ``final_rev`` is on ``branch``.
    """
    from ctxopt.program import program_for

    st = store if isinstance(store, Store) else Store.open(store)
    source = st.version(rev)
    source_ctx = st.show(source.rev)
    lms = source_lms(st, source.rev)
    loaded, seen, seed = resolve_stream(st, source.rev, stream=stream, seed=seed, sizes=sizes, tasks=tasks)
    program = program if program is not None else program_for(loaded)
    new_lm = get_lm(to_lm) if isinstance(to_lm, str) else to_lm
    to_name = to_lm if isinstance(to_lm, str) else lm_name(to_lm)
    branch = validate_ref_name(branch, "branch") if branch else branch_for(to_name)
    budget_obj = get_budget(budget)
    baseline = LearnedContext.from_program(program)
    key = _work_key(source.context_hash, to_name, seed, loaded.name, [t.name for t in seen],
                    budget_obj.to_dict(), str(gate), epsilon, baseline.hash)
    wd = Path(work_dir) if work_dir is not None else _default_work_dir(st) / f"{branch_for(to_name)[len(BRANCH_PREFIX):]}-{key}"
    wd.mkdir(parents=True, exist_ok=True)

    def emit(kind: str, **data: Any) -> None:
        for cb in callbacks:
            cb(Event(kind, 0, "", data))

    emit("phase", phase="validate", tasks=[t.name for t in seen])
    ev = Evaluator(new_lm, num_threads=num_threads, cache_dir=wd / "eval_cache")
    without = _val_means(ev, program, baseline, seen, loaded.scenario)
    with_c = _val_means(ev, program, source_ctx, seen, loaded.scenario)
    record = {"from_lm": lms.get("task_lm", "unknown"), "to_lm": to_name, "source_rev": source.rev,
              "source_context_hash": source.context_hash, "stream": loaded.name, "seed": seed,
              "sizes": loaded.meta.get("sizes"), "tasks": [t.name for t in seen], "adapt": adapt,
              "val": {t.name: {"without": without[t.name], "with": with_c[t.name],
                               "delta": round(with_c[t.name] - without[t.name], 6)} for t in seen}}
    refl_spec = reflection_lm or lms.get("reflection_lm") or DEFAULT_REFLECTION_LM
    refl_name = refl_spec if isinstance(refl_spec, str) else lm_name(refl_spec)
    commit_lms = {"task_lm": to_name, "reflection_lm": refl_name}

    contexts: dict[str, LearnedContext] = {"none": baseline, "transferred": source_ctx}
    adapted_scores: dict[str, float] | None = None
    # The writer lock is held from the first commit to the switch back: HEAD is on the transfer branch
    # meanwhile, and another writer (a run still going) must fail loudly rather than commit there.
    with st.lock():
        original = st.current_branch() or st.resolve("HEAD")
        try:
            if branch not in st.branches():
                st.branch(branch, source.rev)
            st.switch(branch)
            deltas = ", ".join(f"{t}: {v['delta']:+.3f}" for t, v in record["val"].items())
            st.commit(source_ctx, f"transfer: apply {source.short} (learned with {record['from_lm']}) to {to_name}\n\n"
                                  f"val with C minus without C: {deltas}",
                      {"transfer": {**record, "phase": "apply"}, "lms": commit_lms}, allow_empty=True)
            candidate, candidate_scores, kept = source_ctx, with_c, "transferred"
            if adapt:
                emit("phase", phase="adapt")
                refl = get_lm(refl_spec, max_tokens=768) if isinstance(refl_spec, str) else refl_spec
                opt = ContinualOptimizer(new_lm, refl, budget=budget_obj, gate=gate, epsilon=epsilon, seed=seed,
                                         num_threads=num_threads, callbacks=callbacks, measure_test=False,
                                         extra_proposers=[AblationProposer()], run_dir=wd, store=st)
                for i, task in enumerate(seen):
                    opt.step(program, task, context=source_ctx if i == 0 else None, seen=seen[:i],
                             scenario=loaded.scenario)
                candidate = opt.context or source_ctx
                adapted_scores = _val_means(ev, program, candidate, seen, loaded.scenario)
                candidate_scores, kept = adapted_scores, "adapted"
                contexts["adapted"] = candidate
            base_mean, cand_mean = _mean(without), _mean(candidate_scores)
            worse = [t.name for t in seen if candidate_scores[t.name] < without[t.name]]
            if cand_mean < base_mean:
                reason = (f"the {kept} context scores {cand_mean:.3f} < {base_mean:.3f} without C on val "
                          f"(mean over {len(seen)} tasks); fell back to the program without C")
                final, final_scores, kept = baseline, without, "none"
                log.warning("transfer to %s: %s", to_name, reason)
            else:
                reason = f"the {kept} context scores {cand_mean:.3f} ≥ {base_mean:.3f} without C on val"
                if worse:
                    reason += f"; worse than without C on: {', '.join(worse)}"
                final, final_scores = candidate, candidate_scores
            contexts["final"] = final
            emit("phase", phase="commit", kept=kept, reason=reason)
            subject = "transfer: fall back to the program without C" if kept == "none" else f"transfer: keep the {kept} context"
            version = st.commit(final, f"{subject} on {to_name}\n\n{reason}",
                                {"transfer": {**record, "phase": "result", "kept": kept, "reason": reason,
                                              "adapted_val": adapted_scores, "final_val": final_scores},
                                 "lms": commit_lms, "scores": {"val": final_scores}}, allow_empty=True)
        finally:
            if original in st.branches():
                st.switch(original)
            else:
                st.checkout(original)

    rows = tuple(TaskDelta(t.name, without[t.name], with_c[t.name],
                           None if adapted_scores is None else adapted_scores[t.name], final_scores[t.name])
                 for t in seen)
    result = TransferResult(source.rev, record["from_lm"], to_name, branch, version.rev, kept, reason, rows,
                            loaded.name, seed, tuple(t.name for t in seen), adapt, str(wd), contexts)
    write_json(wd / ("transfer-adapt.json" if adapt else "transfer.json"), result.to_dict())
    return result


# --------------------------------------------------------------------------- measurement (test only)


def measure_test(
    result: TransferResult,
    lm: Any,
    stream: TaskStream,
    *,
    program: dspy.Module | None = None,
    num_threads: int = 2,
    cache_dir: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Test-split accuracy of each compared context on the seen tasks, for reporting only.

    Call it after :func:`transfer` has made and committed every decision; nothing
    here feeds back into learning. Uses :func:`ctxopt.engine.measure_row`.

    Returns:
        ``{"none"|"transferred"|"adapted"|"final": {"row": [...], "acc": mean}}``.
    """
    from ctxopt.program import program_for

    program = program if program is not None else program_for(stream)
    seen = TaskStream(stream.name, stream.scenario, tuple(stream[name] for name in result.tasks), stream.meta)
    ev = Evaluator(get_lm(lm) if isinstance(lm, str) else lm, num_threads=num_threads,
                   cache_dir=cache_dir if cache_dir is not None else (Path(result.work_dir) / "test_cache"
                                                                      if result.work_dir else None))
    out: dict[str, dict[str, Any]] = {}
    for name, ctx in result.contexts.items():
        row = measure_row(ev, program, seen, ctx)
        out[name] = {"row": row, "acc": round(sum(row) / len(row), 6), "context_hash": ctx.hash}
    return out
