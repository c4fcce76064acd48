"""PG801: the artifact, rescored by the verifier with canonical byte accounting, must reproduce the reported BPB.

Evidence level `rescore`: results come from `pgolf-audit verify --artifact ...` (auditor/harness/rescore.py), which
attaches them as ``sub.options.harness["rescore"]``. In a static audit there are none and the rule SKIPs.

Tolerance (auditor.constants.RESCORE_BPB_TOLERANCE = 1e-4 BPB for plain and sliding, RESCORE_TTT_BPB_TOLERANCE =
1e-3 for score-first TTT, plus half a unit of the claim's printed precision):
the same weights scored by the same procedure on different hardware move BPB by ~2e-5. FAIL when the rescore is
worse than the claim by more than that; WARN when it is better by more than that (the reported number did not come
from this artifact either, but nobody is advantaged); PASS within. A rescore on non-canonical data (not the
official validation shard, or only part of it) is only informative, unless the claim's own log scored exactly the
same number of targets, in which case both numbers are about the same stream and the comparison stands.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from auditor.constants import RESCORE_BPB_TOLERANCE
from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, EvidenceLevel, Finding, Severity, Verdict
from auditor.harness.claimed import Claimed, claim_mode, claimed_for, harness_results, logged_for_mode
from rules.base import Case, Rule

# Score-first TTT adapts the weights on bf16 gradients, so two runs on different kernels drift further apart than a
# frozen model's scores (which agree to ~2e-5); 1e-3 is the acceptance bound of issue 9 for TTT reproduction.
RESCORE_TTT_BPB_TOLERANCE = 1e-3

_CLAIM = json.dumps(
    {"name": "x", "val_bpb": 1.0811, "seed_results": {"42": {"val_bpb": 1.08110532}}}, indent=2
)


def _result(bpb: float, canonical: bool = True, **kw: Any) -> dict[str, Any]:
    base = {
        "artifact": "final_model_seed42.ptz",
        "mode": "ttt",
        "seed": 42,
        "val_loss": bpb * 2.58,
        "val_bpb": bpb,
        "tokens": 40_540_160,
        "bytes": 151_078_222,
        "denominator": 151_078_222,
        "canonical": canonical,
        "data_summary": "canonical sp8192 validation data",
        "error": None,
    }
    return base | kw


def _case(result: dict[str, Any], verdict: Verdict, **kw: Any) -> Case:
    return Case(
        code="print('train')\n",
        files={"submission.json": _CLAIM},
        options={"harness": {"rescore": [result]}},
        verdict=verdict,
        **kw,
    )


class RescoredBpbDisagrees(Rule):
    id = "PG801"
    name = "rescored-bpb-disagrees"
    title = "Rescoring the artifact does not reproduce the reported val_bpb"
    category = "evidence"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.RESCORE
    rationale = (
        "A verifier reloads the quantized artifact and reruns the score-first evaluation with the canonical byte "
        "accounting (sum of per-token bytes from the tokenizer's piece table, or the CaseOps sidecar). The same "
        "weights and procedure reproduce BPB to ~1e-5; a reported score better than the rescore by more than the "
        "numeric-noise tolerance did not come from the shipped artifact."
    )
    basis = Basis(
        ref="PR #1868 compliance rerun (commit bbad71f6, merged in fdde8dcc1); checklist of rules.md §G.5",
        date="2026-04-29",
        quote="Keep the .ptz and compare everything to submission.json.",
        section="G",
    )
    valid = (
        _case(_result(1.08110541), Verdict.PASS, note="rescore within 1e-4 of the claimed seed value"),
        Case(
            code="print('train')\n",
            files={"submission.json": _CLAIM},
            verdict=Verdict.SKIP,
            note="static audit: no harness results",
        ),
        _case(
            _result(1.09, canonical=False, tokens=1024),
            Verdict.PASS,
            note="non-canonical data, claim about another stream: informative only",
        ),
    )
    invalid = (
        _case(
            _result(1.08310532),
            Verdict.FAIL,
            line=6,
            path="submission.json",
            note="rescored 0.002 worse than claimed (TTT tolerance 1e-3)",
        ),
        _case(
            _result(0.0, error="not a reference-format artifact (bad magic)"),
            Verdict.WARN,
            note="could not rescore",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        results = harness_results(ctx).get("rescore") or []
        if not results:
            yield self.skip(
                "no rescore results: a static audit; `pgolf-audit verify --artifact ...` produces them"
            )
            return
        for res in results:
            yield self._judge(ctx, res)

    def _judge(self, ctx: AuditContext, res: dict[str, Any]) -> Finding:
        artifact, mode = res.get("artifact", "?"), res.get("mode", "?")
        if res.get("error") or res.get("val_bpb") is None:
            return self.finding(
                Verdict.WARN,
                f"could not rescore {artifact} ({mode}): {res.get('error')}",
                severity=Severity.MEDIUM,
                confidence=Confidence.LOW,
                data={"rescore": res},
            )
        rescored = float(res["val_bpb"])
        claimed = claimed_for(ctx, res.get("seed"))
        # Compare like with like: the claim when it is the score of the rescored eval mode (or its mode is not
        # known), else the submission's own logged number for that mode (a sliding rescore against a TTT claim
        # would be a false FAIL).
        cmode = claim_mode(ctx, claimed)
        if cmode is not None and cmode != mode:
            logged = logged_for_mode(ctx, claimed.seed, mode)
            if logged is None:
                return self.info(
                    f"rescored {artifact} ({mode}): val_bpb {rescored:.8f}; the claim "
                    f"({claimed.val_bpb:.{claimed.decimals}f}, {claimed.source}) is a {cmode} score and the "
                    f"submission logs no {mode} score for this seed to compare with",
                    [claimed.location] if claimed.location else [],
                    data={"rescore": res, "rescored_val_bpb": rescored},
                )
            claimed = Claimed(
                claimed.seed,
                logged.val_bpb,
                logged.decimals,
                logged.source,
                logged.location,
                val_tokens=logged.val_tokens,
            )
        data: dict[str, Any] = {
            "rescore": res,
            "rescored_val_bpb": rescored,
            "claimed_val_bpb": claimed.val_bpb,
            "claim_source": claimed.source,
        }
        seed_txt = f"seed {claimed.seed}" if claimed.seed is not None else "no seed"
        if claimed.val_bpb is None:
            return self.finding(
                Verdict.WARN,
                f"rescored {artifact} ({mode}, {seed_txt}): val_bpb {rescored:.8f}, "
                "but the submission claims no val_bpb to compare it with",
                severity=Severity.MEDIUM,
                data=data,
            )
        delta = rescored - claimed.val_bpb
        tol = (RESCORE_TTT_BPB_TOLERANCE if mode == "ttt" else RESCORE_BPB_TOLERANCE) + claimed.half_ulp
        data |= {"delta": delta, "tolerance": tol}
        numbers = (
            f"rescored val_bpb {rescored:.8f} ({mode}, {res.get('tokens', 0):,} targets, "
            f"{res.get('bytes', 0):,} bytes) vs claimed {claimed.val_bpb:.{claimed.decimals}f} "
            f"({claimed.source}); delta {delta:+.8f}, tolerance {tol:.2e}"
        )
        locations = [claimed.location] if claimed.location else []
        same_stream = claimed.val_tokens is not None and claimed.val_tokens == res.get("tokens")
        if not res.get("canonical") and not same_stream:
            return self.info(
                f"{numbers}. Informative only: {res.get('data_summary') or 'non-canonical data'}, "
                "and the claim was scored on another stream",
                locations,
                data=data,
            )
        if claimed.is_mean:
            verdict = Verdict.PASS if abs(delta) <= tol else Verdict.WARN
            return self.finding(
                verdict,
                f"{numbers}; compared with the multi-seed mean because no seed was given (pass --seed)",
                locations,
                confidence=Confidence.LOW,
                data=data,
            )
        if delta > tol:
            return self.finding(
                Verdict.FAIL,
                f"{seed_txt}: the artifact scores worse than reported: {numbers}",
                locations,
                data=data,
            )
        if delta < -tol:
            return self.finding(
                Verdict.WARN,
                f"{seed_txt}: the artifact scores better than reported, so the "
                f"reported number was not produced by it with this evaluation: {numbers}",
                locations,
                severity=Severity.MEDIUM,
                data=data,
            )
        return self.finding(Verdict.PASS, f"{seed_txt}: reproduced: {numbers}", locations, data=data)
