"""PG401 / PG402: validation data feeding training, the artifact, or quantization calibration.

Validation-derived values are found by data flow from the shard names (auditor.flow.taint), never by variable
names. PG401 looks at the training phase (updates whose loss reads validation data; training on validation shards
only) and at the artifact ("paid prefix": validation tokens stored into what is serialized). Test-time training on
validation data after training belongs to PG201 (score-before-update), not here. PG402 follows validation data
through calibration statistics (activations captured by forward hooks, X^T X second moments) into the quantizer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Location, Severity, Verdict
from auditor.flow.phases import is_serializer, is_update, phases_of
from auditor.flow.program import CallSite, Func, Program, program_of
from auditor.flow.taint import AV, CALIBRATION_STEPS, FORWARD_STEP, Ctx, TaintView, deep_path, val_taint
from auditor.flow.walk import walk_events
from rules._flowcases import line_of, record
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
    return av if vt.kind in av.deep_kinds() else None


def _steps(vt: TaintView, av: AV):
    """The witness path (source string first) of the validation content in `av`, fields and items included."""
    return deep_path(av, vt.kind) or ()


def _flow(steps, unit, node, message: str) -> list[FlowStep]:
    out = [FlowStep(u.location(n), msg) for u, n, msg in steps]
    out.append(FlowStep(unit.location(node), message))
    return out


def _entry_funcs(prog: Program) -> set[Func]:
    return {e.site.caller for e in prog.entry_sequence()}


# =================================================================================================== PG401
_MONITOR_OK = record(
    setup="""    monitor_tokens = load_tokens(VAL_FILES)""",
    after_train="""\
        if step % 50 == 0:
            print(f"step:{step} val_loss:{evaluate(model, monitor_tokens):.4f}")""",
)

_VAL_IN_STREAM = record(setup="""    train_tokens = torch.cat([train_tokens, load_tokens(VAL_FILES)])""")

_VAL_ONLY = record(setup="""    train_tokens = load_tokens(VAL_FILES)""")

_PAID_PREFIX = record(
    after_train="""    prefix = load_tokens(VAL_FILES)[:65536].to(torch.uint16)""",
    artifact='{"model": model.state_dict(), "prefix": prefix}',
)

_DEAD_FINETUNE = record(
    helpers="""

def finetune_on_validation(model, opt):
    tokens = load_tokens(VAL_FILES)
    for i in range(10):
        F.cross_entropy(model(tokens[i:i + 64]), tokens[i + 1:i + 65]).backward()
        opt.step()
"""
)

_FLAG_OFF_FINETUNE = record(
    flags='VAL_WARMSTART = int(os.environ.get("VAL_WARMSTART", "0"))',
    setup="""\
    if VAL_WARMSTART:
        warm = load_tokens(VAL_FILES)
        for i in range(VAL_WARMSTART):
            F.cross_entropy(model(warm[i:i + 64]), warm[i + 1:i + 65]).backward()
            opt.step()""",
)

_EVAL_ONLY_TTT = """\
import glob, io, os, zlib
import numpy as np
import torch
import torch.nn.functional as F

VAL_FILES = os.path.join(os.environ.get("DATA_PATH", "./data"), "fineweb_val_*.bin")


def load_tokens(pattern):
    return torch.cat([torch.from_numpy(np.fromfile(f, dtype=np.uint16).astype(np.int64))
                      for f in sorted(glob.glob(pattern))])


def main():
    model = torch.nn.Embedding(1024, 1024)
    with open("final_model.int8.ptz", "rb") as f:
        model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(f.read()))))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tokens = load_tokens(VAL_FILES)
    total = 0.0
    for i in range(0, tokens.numel() - 65, 64):
        chunk = tokens[i:i + 65]
        with torch.no_grad():
            total += F.cross_entropy(model(chunk[:-1]), chunk[1:]).item()
        F.cross_entropy(model(chunk[:-1]), chunk[1:]).backward()
        opt.step()
    print(f"val_loss:{total:.4f}")


if __name__ == "__main__":
    main()
"""


class TrainOnVal(Rule):
    id = "PG401"
    name = "train-on-val"
    title = "Validation data used for training or stored in the artifact"
    category = "train_on_val"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "The score is only meaningful on data the model never trained on. Validation tokens may not enter the "
        "training stream, and may not be compressed into the artifact ('paid prefix'). Monitoring validation "
        "loss during training under no_grad is fine; test-time training after training is judged by PG201."
    )
    basis = Basis(
        ref="openai/parameter-golf README (commit 2cff08e1a, Alex Zhao)",
        date="2026-03-20",
        quote="You CANNOT access validation data during training, e.g. by compressing it into your 16mb with "
        "'paid prefix'.",
        section="A.1, A.8",
    )
    valid = (
        Case(code=record(), verdict=Verdict.PASS, note="baseline shape"),
        Case(code=_MONITOR_OK, verdict=Verdict.PASS, note="periodic val monitoring without updates"),
        Case(code=_DEAD_FINETUNE, verdict=Verdict.PASS, note="dead code: info only"),
        Case(code=_FLAG_OFF_FINETUNE, verdict=Verdict.PASS, note="default-off flag: info only"),
        Case(
            code=_EVAL_ONLY_TTT,
            verdict=Verdict.PASS,
            note="eval-only script: updates after the artifact is loaded are test-time training (PG201)",
        ),
    )
    invalid = (
        Case(
            code=_VAL_IN_STREAM,
            verdict=Verdict.FAIL,
            line=line_of(_VAL_IN_STREAM, "loss.backward()"),
            note="val shards appended to the training stream",
        ),
        Case(
            code=_VAL_ONLY,
            verdict=Verdict.FAIL,
            line=line_of(_VAL_ONLY, "loss.backward()"),
            note="training on validation shards only",
        ),
        Case(
            code=_PAID_PREFIX,
            verdict=Verdict.FAIL,
            line=line_of(_PAID_PREFIX, "torch.save("),
            note="val tokens stored in the artifact",
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
        yield from self._paid_prefix(prog, vt)
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
            if phase == "training" or (phase == "setup" and (ph.confident or ph.training_end < 0)):
                if not ph.confident and (
                    e.site.ext in _DESERIALIZERS or (e.site.ext or "").endswith("decompress")
                ):
                    break  # an eval-only script: updates after loading an artifact are test-time training
                events.append(e)
        return events

    def _training_updates(self, ctx: AuditContext, prog: Program, ph, vt: TaintView) -> Iterable[Finding]:
        self._reported: set[int] = set()
        for v in walk_events(ctx, self._training_events(prog, ph)):
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
            if not v.live:
                yield self.info(
                    f"a training update on validation data, but {v.gate.describe()}", [loc], flow=flow
                )
                continue
            disagree = v.command_disagrees
            via = f"; {disagree.describe()}" if disagree is not None else ""
            yield self.finding(
                Verdict.WARN if disagree is not None else Verdict.FAIL,
                f"training-phase update computed from validation data{via} "
                f"(`{ast.unparse(expr)[:60]}` derives from validation shards)",
                [loc],
                flow=flow,
                related=[v.event.site.unit.location(v.event.site.node)],
            )

    def _paid_prefix(self, prog: Program, vt: TaintView) -> Iterable[Finding]:
        for f, ctxs in vt.engine.ctxs.items():
            for site in f.calls:
                if not is_serializer(site) or id(site.node) in self._reported:
                    continue
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
                        disagree = _command_disagrees(prog, c, site, r)
                        yield self.finding(
                            Verdict.WARN if disagree else Verdict.FAIL,
                            "validation tokens are written into the artifact ('paid prefix')"
                            + (f" ({disagree})" if disagree else ""),
                            [loc],
                            flow=flow,
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


def _raw_val_arg(vt: TaintView, c: Ctx, site: CallSite) -> AV | None:
    """A serialized argument carrying validation data that went through no model and no calibration."""
    for a in _site_args(site):
        av = _val_av(vt, c, a)
        if av is None:
            continue
        msgs = {m for _, _, m in _steps(vt, av)}
        if msgs & set(CALIBRATION_STEPS) or FORWARD_STEP in msgs:
            continue  # model outputs (metrics) or calibration statistics: not raw validation text
        return av
    return None


# =================================================================================================== PG402
_CALIB_HELPERS = """

def collect_hessians(model, tokens, n_batches):
    hessians = {}
    hooks = []

    def make_hook(name):
        def hook(module, inputs, output):
            x = inputs[0].float()
            hessians[name] = hessians.get(name, 0) + x.T @ x
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(name)))
    with torch.no_grad():
        for i in range(n_batches):
            model(tokens[i * 64:(i + 1) * 64])
    for h in hooks:
        h.remove()
    return hessians


def quantize_with_hessians(state_dict, hessians):
    out = {}
    for name, w in state_dict.items():
        h = hessians.get(name.rsplit(".", 1)[0])
        scale = w.abs().amax() / 127 if h is None else (w.abs() * h.diag().sqrt()).amax() / 127
        out[name] = (torch.round(w / scale).to(torch.int8), scale)
    return out


def generate_calibration(model, n_tokens):
    tokens = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(n_tokens):
            probs = torch.softmax(model(tokens[-1:]), dim=-1)
            tokens = torch.cat([tokens, torch.multinomial(probs[-1], 1)])
    return tokens
"""

_CALIB_VAL = record(
    helpers=_CALIB_HELPERS,
    after_train="""\
    calib_tokens = load_tokens(VAL_FILES)[:65536]
    hessians = collect_hessians(model, calib_tokens, 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

_CALIB_TRAIN = record(
    helpers=_CALIB_HELPERS,
    after_train="""\
    hessians = collect_hessians(model, train_tokens[:65536], 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

_CALIB_SELFGEN = record(
    helpers=_CALIB_HELPERS,
    after_train="""\
    calib_tokens = generate_calibration(model, 4096)
    hessians = collect_hessians(model, calib_tokens, 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

_CALIB_VAL_DEAD = record(
    helpers=_CALIB_HELPERS
    + """

def calibrate_on_validation(model):
    return collect_hessians(model, load_tokens(VAL_FILES), 64)
""",
    after_train="""\
    hessians = collect_hessians(model, train_tokens[:65536], 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

_CALIB_VAL_FLAG = record(
    flags='CALIB_SOURCE = os.environ.get("CALIB_SOURCE", "train")',
    helpers=_CALIB_HELPERS,
    after_train="""\
    if CALIB_SOURCE == "val":
        hessians = collect_hessians(model, load_tokens(VAL_FILES)[:65536], 64)
    else:
        hessians = collect_hessians(model, train_tokens[:65536], 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)


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
        "shards, or from tokens the model generates itself, is legal."
    )
    basis = Basis(
        ref="PR #1019 (merged; replaced val calibration after the PR #728 dispute); issue #1017 C3",
        date="2026-03-28",
        quote="no val/train data accessed during quantization",
        section="A.8",
    )
    valid = (
        Case(code=_CALIB_TRAIN, verdict=Verdict.PASS, note="GPTQ Hessians from training shards"),
        Case(code=_CALIB_SELFGEN, verdict=Verdict.PASS, note="AR self-generated calibration tokens"),
        Case(code=_CALIB_VAL_DEAD, verdict=Verdict.PASS, note="dead code: info only"),
        Case(code=_CALIB_VAL_FLAG, verdict=Verdict.PASS, note="default-off flag: info only"),
    )
    invalid = (
        Case(
            code=_CALIB_VAL,
            verdict=Verdict.FAIL,
            line=line_of(_CALIB_VAL, "hessians = collect_hessians("),
            note="Hessians from validation tokens",
        ),
        Case(
            code=_CALIB_VAL_FLAG,
            files={"run.sh": "CALIB_SOURCE=val torchrun --nproc_per_node=8 train_gpt.py\n"},
            verdict=Verdict.WARN,
            line=line_of(_CALIB_VAL_FLAG, "hessians = collect_hessians(", 1),
            note="off by default, but the run script selects validation calibration: WARN naming both",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        prog = program_of(ctx)
        if prog.entry is None:
            yield self.skip("no entry script could be parsed; nothing to follow")
            return
        vt = val_taint(ctx)
        entry_funcs = _entry_funcs(prog)
        reported: set[int] = set()
        for f, ctxs in vt.engine.ctxs.items():
            for site in f.calls:
                for c in ctxs:
                    hit = _calibrated_arg(vt, c, site)
                    if hit is None:
                        continue
                    steps = _steps(vt, hit)
                    cal = next(i for i, (_, _, m) in enumerate(steps) if m in CALIBRATION_STEPS)
                    anchor = _anchor(steps[:cal], entry_funcs, prog) or steps[cal]
                    unit, node, _ = anchor
                    if id(node) in reported or id(steps[cal][1]) in reported:
                        continue  # one finding per calibration (its statistics are used in several places)
                    reported.update((id(node), id(steps[cal][1])))
                    loc: Location = unit.location(node)
                    flow = _flow(
                        steps, site.unit, site.node, "calibration statistics of validation data are used here"
                    )
                    r = _chain_reach(prog, c, site)
                    if not r.live:
                        yield self.info(
                            f"quantization calibration on validation data, but it does not run: {r.reason}",
                            [loc],
                            flow=flow,
                        )
                    else:
                        disagree = _command_disagrees(prog, c, site, r)
                        yield self.finding(
                            Verdict.WARN if disagree else Verdict.FAIL,
                            "quantization calibration statistics are computed from "
                            f"validation data{f' ({disagree})' if disagree else ''}",
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


def _calibrated_arg(vt: TaintView, c: Ctx, site: CallSite) -> AV | None:
    """The call's result or an argument that carries calibration statistics (hook captures / X^T X) of
    validation data: where such statistics are produced or consumed."""
    if site.ext in ("print", "logging.info") or site.attr in ("append", "extend", "get", "items", "keys"):
        return None
    for a in [site.node, *site.node.args, *[k.value for k in site.node.keywords]]:
        av = c.node_avs.get(id(a))
        if av is None or vt.kind not in av.deep_kinds():
            continue
        if any(m in CALIBRATION_STEPS for _, _, m in _steps(vt, av)):
            return av
    return None


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


def _command_disagrees(prog: Program, c: Ctx, site: CallSite, r) -> str:
    """Non-empty when the defaults and a documented run command disagree about whether `site` runs: a default-off
    gate a command turns on, or a default-on gate a command turns off (on the site or its caller chain)."""
    if r.gate is not None and not r.gate.taken and r.gate.enabled_by:
        return r.reason
    sites = [site] + [link.site for link in c.chain() if link.site is not None]
    off = next((g for s in sites for g in s.gates if g.taken and g.disabled_by), None)
    return off.describe() if off is not None else ""


def _anchor(steps, entry_funcs: set[Func], prog: Program):
    """The last step before calibration that sits in the entry flow: where val data is handed to calibration."""
    for unit, node, msg in reversed(steps):
        f = prog.enclosing_func(unit, node)
        if f in entry_funcs and msg.startswith("passed to"):
            return unit, node, msg
    return None
