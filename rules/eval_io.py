"""PG101 / PG102: network access and training-shard reads while the reported score is computed.

Both rules walk the call tree under the evaluation phase of the entry flow (auditor.flow.phases: the calls after
the training loop and the artifact write, i.e. the ones that reload the artifact and score it). A construct that
only runs before training (setup downloads), in code nobody calls, or behind a flag that is off by default, is
reported as information, never as a failure.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, Severity, Verdict
from auditor.flow import vocab
from auditor.flow.phases import Phases, phases_of
from auditor.flow.program import CallSite, Program, program_of
from auditor.flow.taint import train_taint
from auditor.flow.walk import Visit, walk_events
from rules._flowcases import line_of, record
from rules._flowpolicy import visit_outcome
from rules.base import Case, Rule

# --------------------------------------------------------------------------------------------------- network sinks
# declared once in auditor.flow.vocab (library semantics as data)
_NET_MODULES = vocab.NET_MODULES
_NET_CALLS = vocab.NET_CALLS
_NET_PACKAGES = vocab.NET_PACKAGES
_NET_PROGRAMS = vocab.NET_PROGRAMS
_SUBPROCESS = vocab.SUBPROCESS_CALLS


def network_reason(prog: Program, site: CallSite) -> str | None:
    """Why this call reaches the network (None: it does not, as far as the code shows)."""
    ext = site.ext or ""
    if not ext:
        return None
    if ext in _NET_CALLS:
        return f"{ext}() opens a network connection"
    root = ext.split(".")[0]
    if any(ext == m or ext.startswith(m + ".") for m in _NET_MODULES):
        return f"{ext}() is a network client call"
    if root in _NET_PACKAGES:
        return f"{ext}() talks to a remote hub"
    if (
        root == "transformers"
        and site.attr == "from_pretrained"
        or ext.endswith(".from_pretrained")
        and root in vocab.PRETRAINED_HUBS
    ):
        return f"{ext}() downloads from the Hugging Face hub unless given a local path"
    if ext in _SUBPROCESS:
        program = _subprocess_program(prog, site)
        if program is None:
            return None
        name = program.rsplit("/", 1)[-1]
        if name in _NET_PROGRAMS:
            return f"{ext}() runs `{name}`, a network tool"
        if name.startswith("python") and "pip" in _command_words(prog, site):
            return f"{ext}() runs pip, which downloads packages"
    return None


def _command_words(prog: Program, site: CallSite) -> list[str]:
    if not site.node.args:
        return []
    arg = site.node.args[0]
    value = prog.eval_const(site.unit, arg, site.caller)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    if isinstance(arg, (ast.List, ast.Tuple)):
        words = []
        for elt in arg.elts:
            v = prog.eval_const(site.unit, elt, site.caller)
            words.append(v if isinstance(v, str) else "?")
        return words
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value).split()
    return []


def _subprocess_program(prog: Program, site: CallSite) -> str | None:
    words = _command_words(prog, site)
    skip = {"sudo", "env", "nohup", "time", "bash", "sh", "-c", "exec"}
    for w in words:
        for part in w.split():
            if part in skip or "=" in part:
                continue
            return part
    return None


# --------------------------------------------------------------------------------------------------- read sinks
_READ_CALLS = {
    "open",
    "io.open",
    "numpy.fromfile",
    "numpy.memmap",
    "numpy.load",
    "torch.load",
    "torch.from_file",
    "pathlib.Path.read_bytes",
    "pathlib.Path.read_text",
    "builtins.open",
    "mmap.mmap",
}
_READ_ATTRS = {"read_bytes", "read_text", "fromfile", "memmap", "load_file"}


def is_read(site: CallSite) -> bool:
    ext = site.ext or ""
    return ext in _READ_CALLS or (site.attr in _READ_ATTRS)


def _entry_phase(ph: Phases, prog: Program, site: CallSite) -> str:
    """Phase of a sink: its own entry event's, else the latest phase among the entry events whose call trees
    contain its function (evaluation, then serialization, training, setup), else 'unreached'."""
    direct = ph.phase_of_site(site)
    if direct is not None:
        return direct
    drivers = prog.inlined_driver_sites()
    phases = set()
    for ev in ph.events:
        if id(ev.site.node) not in drivers and site.caller in prog.called_under(ev.site, include_gated=True):
            phases.add(ph.phase_of(ev))
    for p in ("evaluation", "serialization", "training", "setup"):
        if p in phases:
            return p
    return "unreached"


def _eval_visits(ctx: AuditContext) -> Iterator[Visit]:
    ph = phases_of(ctx)
    yield from walk_events(ctx, ph.eval_events)


# =================================================================================================== PG101
_NET_EVAL = record(
    helpers="""
from huggingface_hub import hf_hub_download


def fetch_side_table():
    path = hf_hub_download(repo_id="someone/ngram-tables", filename="table.bin")
    return torch.load(path)
""",
    eval="""    table = fetch_side_table()
    val_loss = evaluate(model, val_tokens) + 0 * table.sum().item()""",
)

_CURL_EVAL = record(
    helpers="""

def refresh_tokenizer():
    subprocess.run(["curl", "-sSLo", "tok.model", "https://example.com/tok.model"], check=True)
""",
    eval="""    refresh_tokenizer()
    val_loss = evaluate(model, val_tokens)""",
)

_SETUP_DOWNLOAD = record(
    helpers="""
from huggingface_hub import snapshot_download
""",
    setup="""    snapshot_download(repo_id="willdepueoai/parameter-golf", repo_type="dataset", local_dir=DATA)""",
)

_LOCAL_SUBPROCESS = record(
    eval="""    subprocess.run(["lrzip", "-z", "final_model.int8.ptz"], check=True)
    val_loss = evaluate(model, val_tokens)"""
)

_DEAD_DOWNLOAD = record(
    helpers="""
import urllib.request


def fetch_remote_stats(url):
    return urllib.request.urlopen(url).read()
"""
)

_FLAG_OFF = record(
    flags='USE_REMOTE_CACHE = bool(int(os.environ.get("USE_REMOTE_CACHE", "0")))',
    helpers="""
import requests
""",
    eval="""    if USE_REMOTE_CACHE:
        requests.get("https://example.com/cache.bin", timeout=10)
    val_loss = evaluate(model, val_tokens)""",
)

_FLAG_ON_BY_README = {
    "README.md": "Run with:\n\n```\nUSE_REMOTE_CACHE=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
}


class EvalTimeNetworkIO(Rule):
    id = "PG101"
    name = "eval-time-network-io"
    title = "Network access or downloads while the score is computed"
    category = "eval_io"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    rationale = (
        "The artifact must be self-contained: evaluation may not download data, tables, tokenizers or weights, "
        "or open network connections. Downloads during setup (before training starts) are not evaluation, and "
        "local subprocesses (lrzip, g++, pyminify) are allowed. Code behind a flag that is off by default is "
        "information; when a README/*.sh run command turns that flag on, it runs as documented (FAIL naming the command)."
    )
    basis = Basis(
        ref="openai/parameter-golf README (FAQ: what counts toward the artifact)",
        date="2026-03-18",
        quote="No external downloads, training dataset access, or network calls are allowed during evaluation. "
        "The artifact must be fully self-contained and reproducible.",
        section="A.1, A.9",
    )
    valid = (
        Case(code=_SETUP_DOWNLOAD, verdict=Verdict.PASS, note="dataset download before training is setup"),
        Case(code=_LOCAL_SUBPROCESS, verdict=Verdict.PASS, note="lrzip is a local binary"),
        Case(code=_DEAD_DOWNLOAD, verdict=Verdict.PASS, note="dead code: info only"),
        Case(code=_FLAG_OFF, verdict=Verdict.PASS, note="behind a default-off flag: info only"),
    )
    invalid = (
        Case(
            code=_NET_EVAL,
            verdict=Verdict.FAIL,
            line=line_of(_NET_EVAL, "= hf_hub_download("),
            note="hf_hub_download reached from the evaluation",
        ),
        Case(code=_CURL_EVAL, verdict=Verdict.FAIL, line=line_of(_CURL_EVAL, 'subprocess.run(["curl"')),
        Case(
            code=_FLAG_OFF,
            files=_FLAG_ON_BY_README,
            verdict=Verdict.FAIL,
            line=line_of(_FLAG_OFF, "requests.get("),
            note="default-off flag turned on by the README command: the documented configuration runs it",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        prog = program_of(ctx)
        if prog.entry is None:
            yield self.skip("no entry script could be parsed; nothing to follow")
            return
        ph = phases_of(ctx)
        reported: set[int] = set()
        for v in _eval_visits(ctx):
            reason = network_reason(prog, v.site)
            if reason is None or id(v.site.node) in reported:
                continue
            reported.add(id(v.site.node))
            loc = v.site.unit.location(v.site.node)
            out = visit_outcome(v)
            if out.state == "off":
                yield self.info(
                    f"{reason}; it is reachable from the evaluation but does not run: {out.note}",
                    [loc],
                    flow=v.chain_flow(reason),
                )
                continue
            via = f" ({out.note})" if out.note else ""
            verdict = Verdict.FAIL if ph.confident and out.state == "live" else Verdict.WARN
            extra = "" if ph.confident else " (the training/evaluation split of this script is not certain)"
            yield self.finding(
                verdict,
                f"{reason} during evaluation{via}{extra}",
                [loc],
                related=[v.event.site.unit.location(v.event.site.node)],
                flow=v.chain_flow(reason),
                data={"phase": "evaluation"},
            )
        # everything else that reaches the network: setup, training, dead or default-off code
        for site in prog.all_sites():
            if id(site.node) in reported:
                continue
            reason = network_reason(prog, site)
            if reason is None:
                continue
            reported.add(id(site.node))
            loc = site.unit.location(site.node)
            r = prog.site_reach(site)
            if r.status in ("dead", "gated_off"):
                yield self.info(f"{reason}, but it does not run: {r.reason}", [loc])
                continue
            phase = _entry_phase(ph, prog, site)
            if phase in ("evaluation",):  # reached in a context the walk did not attribute (recursion cap)
                yield self.finding(Verdict.WARN, f"{reason}; reachable from the evaluation phase", [loc])
            elif not ph.confident and phase != "setup":
                yield self.finding(
                    Verdict.WARN,
                    f"{reason}; the script's phases could not be told apart, so "
                    "this may run during evaluation",
                    [loc],
                    confidence=Confidence.LOW,
                )
            else:
                yield self.info(f"{reason} in the {phase} phase, not during evaluation", [loc])
        for loc, why, func in prog.defeated:
            if func in ph.eval_funcs and prog.func_reach(func).live:
                yield self.finding(
                    Verdict.WARN,
                    f"evaluation code uses {why}; network use cannot be ruled out statically",
                    [loc],
                    confidence=Confidence.LOW,
                )


# =================================================================================================== PG102
_TRAIN_AT_EVAL = record(
    helpers="""

def evaluate_with_unigram_prior(model, tokens):
    prior = torch.bincount(load_tokens(TRAIN_FILES), minlength=1024).float()
    return evaluate(model, tokens) + 0 * prior.sum().item()
""",
    eval="    val_loss = evaluate_with_unigram_prior(model, val_tokens)",
)

_TRAIN_AT_EVAL_INLINE = record(
    eval="""    shard = sorted(glob.glob(TRAIN_FILES))[0]
    cache = np.fromfile(shard, dtype=np.uint16)
    val_loss = evaluate(model, val_tokens) + 0 * float(cache[:1].sum())"""
)

_GPTQ_TRAIN = record(
    helpers="""

def collect_hessian(model, tokens):
    acts = model(tokens[:-1]).float()
    return acts.T @ acts
""",
    after_train="""    calib = load_tokens(TRAIN_FILES)[:4096]
    hessian = collect_hessian(model, calib)""",
)

_TRAIN_READ_DEAD = record(
    helpers="""

def build_train_ngram_table():
    return torch.bincount(load_tokens(TRAIN_FILES), minlength=1024)
"""
)

_TRAIN_READ_FLAG = record(
    flags='NGRAM_FROM_TRAIN = os.environ.get("NGRAM_FROM_TRAIN", "0") == "1"',
    eval="""\
    prior = None
    if NGRAM_FROM_TRAIN:
        prior = torch.bincount(load_tokens(TRAIN_FILES), minlength=1024)
    val_loss = evaluate(model, val_tokens)""",
)


class EvalTimeTrainData(Rule):
    id = "PG102"
    name = "eval-time-train-data"
    title = "Training shards read while the score is computed"
    category = "eval_io"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    rationale = (
        "Evaluation may not access training data unless those bits are paid for inside the 16 MB artifact. "
        "Reading training shards inside the training window (e.g. GPTQ Hessians before the artifact is written) "
        "is training, not evaluation."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Rules)",
        date="2026-03-18",
        quote="you aren't allowed to access any training data during evaluation, unless you pay for those bits in "
        "the <16MB limit.",
        section="A.1, A.9",
    )
    valid = (
        Case(code=record(), verdict=Verdict.PASS, note="baseline shape"),
        Case(
            code=_GPTQ_TRAIN, verdict=Verdict.PASS, note="GPTQ Hessians from train data before the artifact"
        ),
        Case(code=_TRAIN_READ_DEAD, verdict=Verdict.PASS, note="dead code: info only"),
        Case(code=_TRAIN_READ_FLAG, verdict=Verdict.PASS, note="default-off flag: info only"),
    )
    invalid = (
        Case(
            code=_TRAIN_AT_EVAL,
            verdict=Verdict.FAIL,
            line=line_of(_TRAIN_AT_EVAL, "load_tokens(TRAIN_FILES), "),
            note="a unigram prior built from train shards inside the scoring function",
        ),
        Case(
            code=_TRAIN_AT_EVAL_INLINE,
            verdict=Verdict.FAIL,
            line=line_of(_TRAIN_AT_EVAL_INLINE, "cache = np.fromfile("),
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        prog = program_of(ctx)
        if prog.entry is None:
            yield self.skip("no entry script could be parsed; nothing to follow")
            return
        ph = phases_of(ctx)
        tt = train_taint(ctx, names=True)  # opening training shards by name counts, not only their content
        reported: set[int] = set()
        for v in _eval_visits(ctx):
            if not is_read(v.site) or id(v.site.node) in reported:
                continue
            node = v.site.node
            args = list(node.args) + [k.value for k in node.keywords]
            if isinstance(node.func, ast.Attribute):
                args.append(node.func.value)
            if v.ctx is None or not any(tt.tainted_in(v.ctx, a) for a in args):
                continue
            k, entry, tainted = _first_tainted(tt, v)
            if entry is not v.site and id(entry.node) in reported:
                reported.add(id(node))
                continue  # one finding per place where evaluation asks for training data
            reported.update((id(node), id(entry.node)))
            loc = entry.unit.location(entry.node)
            read_loc = v.site.unit.location(node)
            flow = tt.path_in(v.ctx_chain[k], tainted) + v.chain_from(k, "reads training-shard data here")
            out = visit_outcome(v)
            if out.state == "off":
                yield self.info(
                    f"training shards would be read during evaluation, but it does not run: {out.note}",
                    [loc],
                    related=[read_loc],
                    flow=flow,
                )
                continue
            verdict = Verdict.FAIL if ph.confident and out.state == "live" else Verdict.WARN
            via = f"; {out.note}" if out.note else ""
            yield self.finding(
                verdict,
                "training shards are read during evaluation"
                + ("" if entry is v.site else f" (the read is at {read_loc})")
                + via,
                [loc],
                related=[read_loc] if entry is not v.site else [],
                flow=flow,
            )
        if tt.incomplete:
            yield self.finding(
                Verdict.WARN,
                "data-flow analysis hit its budget; training-data reads during evaluation may be missed",
                [],
                confidence=Confidence.LOW,
            )
        # info: train-shard reads in code that does not run (dead functions, default-off branches)
        for f, ctxs in tt.engine.ctxs.items():
            for site in f.calls:
                if id(site.node) in reported:
                    continue
                sr = prog.site_reach(site)
                if sr.status not in ("dead", "gated_off"):
                    continue
                if not (
                    is_read(site) or any(is_read(s) for g in prog.called_under(site, True) for s in g.calls)
                ):
                    continue
                args = list(site.node.args) + [k.value for k in site.node.keywords]
                if any(tt.tainted_in(c, a) for c in ctxs for a in args):
                    reported.add(id(site.node))
                    yield self.info(
                        f"reads training shards, but does not run: {sr.reason}",
                        [site.unit.location(site.node)],
                    )


def _first_tainted(tt, v: Visit) -> tuple[int, CallSite, ast.AST]:
    """The outermost call on the chain that passes training data on: where evaluation code asks for it."""
    for k, site in enumerate(v.chain):
        c = v.ctx_chain[k] if k < len(v.ctx_chain) else None
        if c is None:
            continue
        node = site.node
        args = list(node.args) + [kw.value for kw in node.keywords]
        if isinstance(node.func, ast.Attribute):
            args.append(node.func.value)
        for a in args:
            if tt.tainted_in(c, a):
                return k, site, a
    return len(v.chain) - 1, v.site, v.site.node
