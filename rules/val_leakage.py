"""PG401 / PG402: validation data feeding training, the artifact, tuning, or quantization calibration.

Both rules are queries over the provenance facts of auditor.flow.taint (found by data flow from the shard names,
never by variable names):

- PG401, training: a training-phase update whose loss derives from validation content, unless the weights are
  restored from a snapshot afterwards (per-window test-time training inside a monitoring eval is transient, and
  PG201 judges it); test-time training after training belongs to PG201 too.
- PG401, artifact ("paid prefix"): raw validation content (`val`, not a model output or metric such as a logged
  `val_bpb`, not calibration statistics) in what is serialized.
- PG401, tuning: a value *selected* by comparing val-derived losses (`val-fit`: a temperature grid-searched on
  held-out val tokens) handed to a call that consumes validation content (the scoring). Fitted on the very tokens
  it then scores is also PG202 (SLOT family).
- PG402: calibration statistics of validation content (`val-stat`: activations captured by registered forward
  hooks during a forward pass over val, `X^T X` moments) reaching a quantizer input: the artifact written, or
  weights loaded into a model. Statistics that are only logged (a diagnostic eval) are not calibration.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Location, Severity, Verdict
from auditor.flow import vocab
from auditor.flow.phases import is_serializer, is_update, phases_of
from auditor.flow.program import CallSite, Func, Program, program_of
from auditor.flow.taint import (
    AV,
    CALIBRATION_STEPS,
    FIT_STEP,
    VAL,
    VAL_FIT,
    VAL_STAT,
    Ctx,
    TaintView,
    deep_path,
    val_taint,
)
from auditor.flow.walk import walk_events
from rules import _val_leakage_cases as cases
from rules._flowcases import line_of
from rules._flowpolicy import reach_outcome, visit_outcome
from rules.base import Case, Rule

_DESERIALIZERS = ("torch.load", "pickle.load", "pickle.loads", "numpy.load")


def _site_args(site: CallSite) -> list[ast.AST]:
    node = site.node
    args = list(node.args) + [k.value for k in node.keywords]
    if isinstance(node.func, ast.Attribute):
        args.append(node.func.value)
    return args


def _val_av(vt: TaintView, c: Ctx, expr: ast.AST) -> AV | None:
    av = vt.engine.av_in(c, expr)
    return av if vt.holds(av) else None


def _steps(vt: TaintView, av: AV):
    """The witness path (source string first) of the first of the view's kinds that `av` carries."""
    for kind in vt.kinds:
        got = deep_path(av, kind)
        if got is not None:
            return got
    return ()


def _flow(steps, unit, node, message: str) -> list[FlowStep]:
    out = [FlowStep(u.location(n), msg) for u, n, msg in steps]
    out.append(FlowStep(unit.location(node), message))
    return out


def _entry_funcs(prog: Program) -> set[Func]:
    return {e.site.caller for e in prog.entry_sequence()}


# =================================================================================================== PG401
class TrainOnVal(Rule):
    id = "PG401"
    name = "train-on-val"
    title = "Validation data used for training, tuning, or stored in the artifact"
    category = "train_on_val"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "The score is only meaningful on data the model never trained on. Validation tokens may not enter the "
        "training stream, may not be compressed into the artifact ('paid prefix'), and may not tune a parameter "
        "before they are scored (a temperature grid-searched on held-out val tokens). Monitoring validation loss "
        "during training under no_grad is fine; test-time training (after training, or per window with the "
        "weights restored) is judged by PG201."
    )
    basis = Basis(
        ref="openai/parameter-golf README (commit 2cff08e1a, Alex Zhao)",
        date="2026-03-20",
        quote="You CANNOT access validation data during training, e.g. by compressing it into your 16mb with "
        "'paid prefix'.",
        section="A.1, A.8",
    )
    valid = (
        Case(code=cases.record(), verdict=Verdict.PASS, note="baseline shape"),
        Case(code=cases.TUNED_ON_TRAIN, verdict=Verdict.PASS, note="temperature searched on training tokens"),
        Case(code=cases.BEST_MONITOR_LOGGED, verdict=Verdict.PASS, note="best monitoring loss only logged"),
        Case(
            code=cases.CHECKPOINT_WITH_METRIC,
            verdict=Verdict.PASS,
            note="debug checkpoint holding a scalar val_bpb metric, not validation tokens",
        ),
        Case(
            code=cases.PREFIX_TTT_RESTORED,
            verdict=Verdict.PASS,
            note="per-window prefix TTT in a monitoring eval, weights restored after every window",
        ),
        Case(
            code=cases.PREQUANT_PREFIX_TTT_RESTORED,
            verdict=Verdict.PASS,
            note="per-window TTT on val before the artifact is written, weights restored after every window",
        ),
        Case(
            code=cases.PREQUANT_PROBE,
            verdict=Verdict.PASS,
            note="a local linear probe fitted on val activations before the artifact write: not the written model",
        ),
        Case(
            code=cases.VAL_SHARD_REWRITTEN,
            verdict=Verdict.PASS,
            note="custom-tokenizer data step writing the re-tokenized validation shard (the val set, not the artifact)",
        ),
        Case(code=cases.MONITOR_OK, verdict=Verdict.PASS, note="periodic val monitoring without updates"),
        Case(code=cases.DEAD_FINETUNE, verdict=Verdict.PASS, note="dead code: info only"),
        Case(code=cases.FLAG_OFF_FINETUNE, verdict=Verdict.PASS, note="default-off flag: info only"),
        Case(
            code=cases.EVAL_ONLY_TTT,
            verdict=Verdict.PASS,
            note="eval-only script: updates after the artifact is loaded are test-time training (PG201)",
        ),
    )
    invalid = (
        Case(
            code=cases.VAL_IN_STREAM,
            verdict=Verdict.FAIL,
            line=line_of(cases.VAL_IN_STREAM, "loss.backward()"),
            note="val shards appended to the training stream",
        ),
        Case(
            code=cases.VAL_ONLY,
            verdict=Verdict.FAIL,
            line=line_of(cases.VAL_ONLY, "loss.backward()"),
            note="training on validation shards only",
        ),
        Case(
            code=cases.PAID_PREFIX,
            verdict=Verdict.FAIL,
            line=line_of(cases.PAID_PREFIX, "torch.save("),
            note="val tokens stored in the artifact",
        ),
        Case(
            code=cases.TUNED_ON_VAL,
            verdict=Verdict.FAIL,
            line=line_of(cases.TUNED_ON_VAL, "best_t = t"),
            note="temperature grid-searched on held-out val tokens, then used to score the rest",
        ),
        Case(
            code=cases.PREFIX_TTT_KEPT,
            verdict=Verdict.FAIL,
            line=line_of(cases.PREFIX_TTT_KEPT, ".backward()"),
            note="val updates during training that are never undone",
        ),
        Case(
            code=cases.VAL_PREFIX_FILE,
            verdict=Verdict.FAIL,
            line=line_of(cases.VAL_PREFIX_FILE, "f.write(tokens"),
            note="the same shard writer aimed at a file shipped with the model: a paid prefix",
        ),
        Case(
            code=cases.PREQUANT_TTT,
            verdict=Verdict.FAIL,
            line=line_of(cases.PREQUANT_TTT, ".backward()"),
            note="TTT on all val tokens after training, then the adapted weights are quantized into the artifact",
        ),
        Case(
            code=cases.PREQUANT_TTT_TWO_PATHS,
            verdict=Verdict.FAIL,
            line=line_of(cases.PREQUANT_TTT_TWO_PATHS, ".backward()"),
            note="the val adaptation helper also called under a default-off flag: the default branch still runs it",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        prog = program_of(ctx)
        if prog.entry is None:
            yield self.skip("no entry script could be parsed; nothing to follow")
            return
        ph = phases_of(ctx)
        vt = val_taint(ctx)
        yield from self._training_updates(ctx, prog, ph, vt)
        yield from self._paid_prefix(prog, vt.only(VAL))
        yield from self._tuned_on_val(prog, vt)
        yield from self._not_running(prog, vt)
        if vt.incomplete:
            yield self.finding(
                Verdict.WARN,
                "data-flow analysis hit its budget; validation data reaching training may be missed",
                [],
                confidence=Confidence.LOW,
            )

    def _training_events(self, prog: Program, ph):
        events = []
        for e in ph.events:
            phase = ph.phase_of(e)
            # updates between training and the artifact write ("serialization") change the weights that are
            # written: test-time training there on validation data is trained into the artifact (pre-quant TTT)
            if phase in ("training", "serialization") or (
                phase == "setup" and (ph.confident or ph.training_end < 0)
            ):
                if not ph.confident and (
                    e.site.ext in _DESERIALIZERS or (e.site.ext or "").endswith("decompress")
                ):
                    break  # an eval-only script: updates after loading an artifact are test-time training
                events.append(e)
        return events

    def _training_updates(self, ctx: AuditContext, prog: Program, ph, vt: TaintView) -> Iterable[Finding]:
        self._reported: set[int] = set()
        # a helper reached both under a flag that does not run and on a path that runs: judge the path that runs
        visits = sorted(walk_events(ctx, self._training_events(prog, ph)), key=lambda v: not v.live)
        for v in visits:
            site = v.site
            if not is_update(site) or site.attr == "step" or v.ctx is None or id(site.node) in self._reported:
                continue
            hit = next(((a, av) for a in _site_args(site) if (av := _val_av(vt, v.ctx, a)) is not None), None)
            if hit is None:
                continue
            self._reported.add(id(site.node))
            expr, av = hit
            loc = site.unit.location(site.node)
            flow = _flow(_steps(vt, av), site.unit, site.node, "gradient update on validation-derived loss")
            if ph.phase_of(v.event) == "serialization" and _throwaway_model(site):
                continue  # a probe built and fitted inside one function: not the weights that are written
            restore = _restored_after(site, v.chain)
            if restore is not None:
                yield self.info(
                    "an update on validation data during training, but the weights are restored from a snapshot "
                    f"afterwards ({restore}): per-window test-time training, judged by PG201",
                    [loc],
                    flow=flow,
                )
                continue
            out = visit_outcome(v)
            if out.state == "off":
                yield self.info(
                    f"a training update on validation data, but it does not run: {out.note}", [loc], flow=flow
                )
                continue
            via = f"; {out.note}" if out.note else ""
            what = (
                "update on validation data before the artifact is written (the val-fitted weights are what is "
                "quantized and serialized)"
                if ph.phase_of(v.event) == "serialization"
                else "training-phase update computed from validation data"
            )
            yield self.finding(
                Verdict.WARN if out.state == "contested" else Verdict.FAIL,
                f"{what}{via} (`{ast.unparse(expr)[:60]}` derives from validation shards)",
                [loc],
                flow=flow,
                related=[v.event.site.unit.location(v.event.site.node)],
            )

    def _paid_prefix(self, prog: Program, vt: TaintView) -> Iterable[Finding]:
        for f, ctxs in vt.engine.ctxs.items():
            for site in f.calls:
                if not is_serializer(site) or id(site.node) in self._reported:
                    continue
                if _writes_val_shard(prog, site):
                    continue  # data preparation writing the validation set itself (a re-tokenized val shard)
                for c in ctxs:
                    hit = _raw_val_arg(vt, c, site)
                    if hit is None:
                        continue
                    self._reported.add(id(site.node))
                    av = hit
                    loc = site.unit.location(site.node)
                    flow = _flow(
                        _steps(vt, av), site.unit, site.node, "validation data written into the artifact"
                    )
                    r = _chain_reach(prog, c, site)
                    if not r.live:
                        yield self.info(
                            f"validation tokens would be written into the artifact, but {r.reason}",
                            [loc],
                            flow=flow,
                        )
                    else:
                        disagree = _contested(prog, c, site, r) or ""
                        documented = "" if disagree else _documented(prog, c, site, r)
                        yield self.finding(
                            Verdict.WARN if disagree else Verdict.FAIL,
                            "validation tokens are written into the artifact ('paid prefix')"
                            + (f" ({disagree})" if disagree else documented),
                            [loc],
                            flow=flow,
                        )
                    break

    def _tuned_on_val(self, prog: Program, vt: TaintView) -> Iterable[Finding]:
        """A value selected by comparing val-derived losses, handed to a call that consumes validation content."""
        fit, raw = vt.only(VAL_FIT), vt.only(VAL)
        done: set[int] = set()
        for f, ctxs in vt.engine.ctxs.items():
            for site in f.calls:
                if site.ext in ("print", "logging.info") or site.attr in vocab.METADATA_CALLS:
                    continue
                args = _site_args(site)
                for c in ctxs:
                    tuned = next((a for a in args if fit.holds(vt.engine.av_in(c, a))), None)
                    if tuned is None or not any(a is not tuned and _val_av(raw, c, a) for a in args):
                        continue
                    steps = _steps(fit, vt.engine.av_in(c, tuned))
                    k = next((i for i, (_, _, m) in enumerate(steps) if m == FIT_STEP), None)
                    if k is None:
                        continue
                    unit, node, _ = steps[k + 1] if k + 1 < len(steps) else steps[k]
                    if id(node) in done:
                        break
                    done.add(id(node))
                    loc = unit.location(node)
                    flow = _flow(
                        steps, site.unit, site.node, "the tuned value is used on validation data here"
                    )
                    r = _chain_reach(prog, c, site)
                    what = (
                        f"`{ast.unparse(tuned)[:40]}` is selected by comparing losses on validation data and "
                        f"then used on validation data (`{ast.unparse(site.node)[:60]}`)"
                    )
                    if not r.live:
                        yield self.info(f"{what}, but it does not run: {r.reason}", [loc], flow=flow)
                    else:
                        disagree = _contested(prog, c, site, r) or ""
                        documented = "" if disagree else _documented(prog, c, site, r)
                        yield self.finding(
                            Verdict.WARN if disagree else Verdict.FAIL,
                            f"{what}: validation tokens tune an evaluation parameter before they are scored"
                            + (f" ({disagree})" if disagree else documented),
                            [loc],
                            flow=flow,
                            related=[site.unit.location(site.node)],
                        )
                    break

    def _not_running(self, prog: Program, vt: TaintView) -> Iterable[Finding]:
        """Updates on validation data in functions that never run or only under default-off flags."""
        for f, ctxs in vt.engine.ctxs.items():
            for site in f.calls:
                if not is_update(site) or site.attr == "step" or id(site.node) in self._reported:
                    continue
                r = prog.site_reach(site)
                if r.live:
                    continue
                if any(_val_av(vt, c, a) is not None for c in ctxs for a in _site_args(site)):
                    self._reported.add(id(site.node))
                    yield self.info(
                        f"an update on validation data that does not run: {r.reason}",
                        [site.unit.location(site.node)],
                    )


def _throwaway_model(site: CallSite) -> bool:
    """The update's function builds its own module (`probe = nn.Linear(...)`) and its optimizer over that module's
    parameters only: a diagnostic probe fitted and discarded there, not the model that is serialized."""
    local: set[str] = set()
    for n in site.caller.own_nodes():
        if (
            isinstance(n, ast.Assign)
            and len(n.targets) == 1
            and isinstance(n.targets[0], ast.Name)
            and isinstance(n.value, ast.Call)
        ):
            f = n.value.func
            while isinstance(f, ast.Call | ast.Attribute) and not (
                isinstance(f, ast.Attribute) and f.attr[:1].isupper()
            ):
                f = f.func if isinstance(f, ast.Call) else f.value
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name[:1].isupper():
                local.add(n.targets[0].id)
    opt_over: list[str] = []
    for n in site.caller.own_nodes():
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "parameters":
            recv = n.func.value
            opt_over.append(recv.id if isinstance(recv, ast.Name) else "")
    return bool(opt_over) and all(r in local for r in opt_over)


def _written_path(site: CallSite) -> ast.AST | None:
    """The path of `f.write(...)` where f comes from `with open(PATH, "wb") as f` in the same function."""
    recv = site.node.func.value if isinstance(site.node.func, ast.Attribute) else None
    if site.attr != "write" or not isinstance(recv, ast.Name):
        return None
    for n in site.caller.own_nodes():
        if (
            isinstance(n, ast.withitem)
            and isinstance(n.optional_vars, ast.Name)
            and n.optional_vars.id == recv.id
            and isinstance(n.context_expr, ast.Call)
            and n.context_expr.args
        ):
            return n.context_expr.args[0]
    return None


def _path_strings(prog: Program, func: Func, expr: ast.AST, depth: int = 0) -> list[str]:
    """String pieces a path expression is built from: its constants (f-string parts included), the values
    assigned to the local names it reads, and, for a parameter, the arguments its callers pass (two levels)."""
    out: list[str] = []
    for n in ast.walk(expr):
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.append(n.value)
        elif isinstance(n, ast.Name) and depth < 3:
            for a in func.own_nodes():
                if isinstance(a, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == n.id for t in a.targets
                ):
                    out.extend(_path_strings(prog, func, a.value, depth + 1))
            if n.id in func.params:
                for caller in prog.callers(func)[:20]:
                    arg = caller.arg_for(func, n.id)
                    if arg is not None:
                        out.extend(_path_strings(prog, caller.caller, arg, depth + 1))
    return out


def _writes_val_shard(prog: Program, site: CallSite) -> bool:
    """A write into a file named as a validation shard: a data-preparation script producing the validation set
    (e.g. re-tokenized for a custom tokenizer), not the artifact. Only the file's name decides it."""
    path = _written_path(site)
    if path is None:
        return False
    return any(vocab.VAL_SHARD.search(t) for t in _path_strings(prog, site.caller, path))


def _raw_val_arg(raw: TaintView, c: Ctx, site: CallSite) -> AV | None:
    """A serialized argument carrying raw validation content (`raw` asks for the `val` kind only: model outputs,
    metrics and calibration statistics are other kinds)."""
    for a in _site_args(site):
        av = _val_av(raw, c, a)
        if av is not None:
            return av
    return None


def _snapshots(func: Func) -> set[str]:
    """Names bound in `func` to a snapshot of state (`copy.deepcopy(m.state_dict())`, `{k: v.clone() ...}`)."""
    out: set[str] = set()
    for n in func.own_nodes():
        if isinstance(n, ast.Assign) and any(
            isinstance(c, ast.Call)
            and (c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", ""))
            in vocab.SNAPSHOT_CALLS
            for c in ast.walk(n.value)
        ):
            out.update(t.id for t in n.targets if isinstance(t, ast.Name))
    return out


def _restored_after(site: CallSite, chain) -> str | None:
    """Where the weights are restored from a snapshot after this update (in its function, or in a caller on the
    walk chain after the call that leads here): the update does not persist into the trained model."""
    links = [(site.caller, site.node)] + [(s.caller, s.node) for s in reversed(list(chain)[:-1])]
    for func, after in links:
        names = _snapshots(func)
        if not names:
            continue
        for s in func.calls:
            if s.attr != vocab.RESTORE_ATTR or (s.node.lineno, s.node.col_offset) <= (
                after.lineno,
                after.col_offset,
            ):
                continue
            used = {n.id for a in _site_args(s) for n in ast.walk(a) if isinstance(n, ast.Name)}
            if used & names:
                return f"{s.unit.location(s.node)}"
    return None


# =================================================================================================== PG402
class CalibOnVal(Rule):
    id = "PG402"
    name = "calib-on-val"
    title = "Quantization calibration computed from validation data"
    category = "calib_on_val"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    rationale = (
        "GPTQ Hessians, AWQ activation scales and clip searches fit the quantized weights to the data they see; "
        "computed on validation tokens they leak the scored text into the artifact. Calibration from training "
        "shards, or from tokens the model generates itself, is legal; activation statistics of a diagnostic val "
        "eval that never reach the quantizer (only logged) are not calibration."
    )
    basis = Basis(
        ref="PR #1019 (merged; replaced val calibration after the PR #728 dispute); issue #1017 C3",
        date="2026-03-28",
        quote="no val/train data accessed during quantization",
        section="A.8",
    )
    valid = (
        Case(code=cases.CALIB_TRAIN, verdict=Verdict.PASS, note="GPTQ Hessians from training shards"),
        Case(code=cases.CALIB_SELFGEN, verdict=Verdict.PASS, note="AR self-generated calibration tokens"),
        Case(code=cases.CALIB_VAL_DEAD, verdict=Verdict.PASS, note="dead code: info only"),
        Case(code=cases.CALIB_VAL_FLAG, verdict=Verdict.PASS, note="default-off flag: info only"),
        Case(
            code=cases.ACT_STATS_LOGGED,
            verdict=Verdict.PASS,
            note="hook-captured activation statistics of a val eval, only logged: not a quantizer input",
        ),
        Case(
            code=cases.HOOKS_AFTER_MONITOR,
            verdict=Verdict.PASS,
            note="the val monitoring evals run before the Hessian hooks are installed and after they are removed",
        ),
    )
    invalid = (
        Case(
            code=cases.CALIB_VAL,
            verdict=Verdict.FAIL,
            line=line_of(cases.CALIB_VAL, "hessians = collect_hessians("),
            note="Hessians from validation tokens",
        ),
        Case(
            code=cases.CALIB_VAL_FLAG,
            files={"run.sh": "CALIB_SOURCE=val torchrun --nproc_per_node=8 train_gpt.py\n"},
            verdict=Verdict.FAIL,
            line=line_of(cases.CALIB_VAL_FLAG, "hessians = collect_hessians(", 1),
            note="off by default, but the run script selects validation calibration: it runs as documented",
        ),
        Case(
            code=cases.HOOKS_OVER_VAL,
            verdict=Verdict.FAIL,
            line=line_of(cases.HOOKS_OVER_VAL, "evaluate(model, load_tokens(VAL_FILES)[:4096])"),
            note="val batches forwarded while the Hessian hooks are registered",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        prog = program_of(ctx)
        if prog.entry is None:
            yield self.skip("no entry script could be parsed; nothing to follow")
            return
        vt = val_taint(ctx)
        stat = vt.only(VAL_STAT)
        entry_funcs = _entry_funcs(prog)
        reported: set[int] = set()
        for f, ctxs in vt.engine.ctxs.items():
            for site in f.calls:
                if not _quantizer_input(site):
                    continue
                for c in ctxs:
                    hit = next(
                        (av for a in _site_args(site) if (av := _val_av(stat, c, a)) is not None), None
                    )
                    if hit is None:
                        continue
                    steps = _steps(stat, hit)
                    cal = next((i for i, (_, _, m) in enumerate(steps) if m in CALIBRATION_STEPS), None)
                    if cal is None:
                        continue
                    anchor = _anchor(steps[:cal], entry_funcs, prog) or steps[cal]
                    unit, node, _ = anchor
                    if id(node) in reported or id(steps[cal][1]) in reported:
                        continue  # one finding per calibration (its statistics are used in several places)
                    reported.update((id(node), id(steps[cal][1])))
                    loc: Location = unit.location(node)
                    flow = _flow(
                        steps,
                        site.unit,
                        site.node,
                        "calibration statistics of validation data reach the quantized weights here",
                    )
                    r = prog.reach(unit, node)  # the calibration on val runs only when its hand-off runs
                    r = (
                        r
                        if not r.live or (r.gate is not None and r.gate.by_command)
                        else _chain_reach(prog, c, site)
                    )
                    if not r.live:
                        yield self.info(
                            f"quantization calibration on validation data, but it does not run: {r.reason}",
                            [loc],
                            flow=flow,
                        )
                    else:
                        disagree = _contested(prog, c, site, r) or ""
                        documented = "" if disagree else _documented(prog, c, site, r)
                        yield self.finding(
                            Verdict.WARN if disagree else Verdict.FAIL,
                            "quantization calibration statistics are computed from "
                            f"validation data{f' ({disagree})' if disagree else documented}",
                            [loc],
                            flow=flow,
                            related=[site.unit.location(site.node)],
                        )
                    break
        if vt.incomplete:
            yield self.finding(
                Verdict.WARN,
                "data-flow analysis hit its budget; calibration on validation data may be missed",
                [],
                confidence=Confidence.LOW,
            )


def _quantizer_input(site: CallSite) -> bool:
    """Where calibration statistics become quantized weights that count: the artifact being written, or weights
    loaded into a model (dequantized state for the scored model)."""
    return is_serializer(site) or site.attr == vocab.RESTORE_ATTR


def _chain_reach(prog: Program, c: Ctx, site: CallSite):
    """Does `site` run in context `c`? Every call on the context's caller chain must run too."""
    r = prog.site_reach(site)
    if not r.live:
        return r
    for link in c.chain():
        if link.site is not None:
            rr = prog.site_reach(link.site)
            if not rr.live:
                return rr
        elif link.func.kind == "function" and not prog.func_reach(link.func).live:
            return prog.func_reach(link.func)
    return r


def _contested(prog: Program, c: Ctx, site: CallSite, r) -> str:
    """Non-empty when the documented sources disagree on a gate of `site` or its caller chain (then WARN); a gate
    a run command or a log turns on is the documented configuration and is named in the message instead."""
    out = reach_outcome(r, [site] + [link.site for link in c.chain()])
    return out.note if out.state == "contested" else ""


def _documented(prog: Program, c: Ctx, site: CallSite, r) -> str:
    """`runs as documented: ...` when a run command or log turns the construct on (else "")."""
    out = reach_outcome(r, [site] + [link.site for link in c.chain()])
    return f" ({out.note})" if out.state == "live" and out.note else ""


def _anchor(steps, entry_funcs: set[Func], prog: Program):
    """The last step before calibration that sits in the entry flow: where val data is handed to calibration."""
    for unit, node, msg in reversed(steps):
        f = prog.enclosing_func(unit, node)
        if f in entry_funcs and msg.startswith("passed to"):
            return unit, node, msg
    return None
