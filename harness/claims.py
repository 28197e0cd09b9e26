"""Published claims that a study checks: the ``[[claim]]`` tables of ``studies/papers/*.toml``.

A claim says what a paper reports and how the study's store decides it:

``rule = "better"``
    every estimator of ``estimators`` has a better ``metric`` than every one of ``than``
    (``direction``: ``lower`` or ``higher`` is better). It holds when it holds for the means over
    seeds and a one-sided Welch test agrees for each pair at ``alpha``, Bonferroni-corrected
    over the pairs (so ``alpha`` is the claim's false-alarm rate: the chance of calling it held
    when the means are equal).
``rule = "at-most"`` / ``"at-least"``
    the mean over seeds of each listed estimator is at most / at least ``value``.
``rule = "within"``
    the mean over seeds of each listed estimator is within ``tolerance`` of ``value``.

The metric is a column of the store: of a measurement cell (``variance``, ``bias_norm``, ...),
of a sampling cell (``total_variation``, ...), or of a training run's evaluations
(``objective``, ``gradient_variance``, a task's metric such as ``fully_correct``), taken at the
run's last evaluation (``at = "final"``) or averaged over its evaluations (``at = "mean"``).
``problem`` and ``num_samples`` select the cells when the study has several. ``scale`` says how
the study's scale compares with the paper's.
"""

from __future__ import annotations

import re
from typing import Any

from reports.claimfile import AT, DEFAULT_ALPHA, DIRECTIONS, RULES, Claim

_KEYS = {
    "name": "short name", "claim": "the claim in one sentence", "source": "authors, year, "
    "table or figure", "published": "the published values", "metric": "store column",
    "rule": " | ".join(RULES), "estimators": "estimator specs", "than": "rule better: the "
    "estimators they beat", "direction": "rule better: lower or higher is better", "value":
    "bound or value", "tolerance": "rule within", "alpha": "rule better: false-alarm rate",
    "problem": "problem spec the claim reads", "num_samples": "samples per estimate",
    "at": "training: final or mean", "kind": "measure, train or sample", "scale": "our scale "
    "against the paper's",
}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def parse_claims(check, document: dict, estimators: set[str], problems: set[str],
                 kinds: tuple[str, ...]) -> list[Claim]:
    """The checked ``[[claim]]`` tables of a study document (``check``: the study's checker,
    whose complaints name the key and line). ``estimators`` and ``problems``: the specs the
    study's grids run (canonical); a claim names only those, in any spelling the registry
    reads, and is stored with the grids' specs. ``kinds``: those the study has ("measure" for
    [[grid]], "train" for [[training]], "sample" for [[sampling]]); with one, ``kind``
    defaults to it."""
    from estimators import ESTIMATORS
    from problems import PROBLEMS

    tables = document.get("claim", [])
    if not isinstance(tables, list):
        raise check.fail("claim", f"expected an array of tables ([[claim]]), got {tables!r}")
    claims, names = [], set()
    for i, table in enumerate(tables):
        where = f"claim[{i}]"
        if not isinstance(table, dict):
            raise check.fail(where, f"expected a table, got {table!r}")
        check.keys(table, f"{where}.", _KEYS)
        for key in ("name", "claim", "source", "published", "metric", "rule", "estimators"):
            if key not in table:
                raise check.fail(f"{where}.{key}", "missing: a claim needs name, claim, source, "
                                 "published, metric, rule and estimators")
        name = check.string(table["name"], f"{where}.name")
        if not _NAME.fullmatch(name) or name in names:
            raise check.fail(f"{where}.name", f"{name!r}: expected a new name of letters, "
                             "digits, - _ .")
        names.add(name)
        rule = check.string(table["rule"], f"{where}.rule", RULES)
        text = {key: check.string(table[key], f"{where}.{key}")
                for key in ("claim", "source", "metric")}
        published = table["published"]
        if not isinstance(published, (str, int, float)) or isinstance(published, bool):
            raise check.fail(f"{where}.published", f"expected text or a number, got "
                             f"{published!r}")

        def specs(key: str) -> tuple[str, ...]:
            values = check.listed(table.get(key, []), f"{where}.{key}", check.string)
            return tuple(_known(check, ESTIMATORS, estimators, value, f"{where}.{key}")
                         for value in values)

        options: dict[str, Any] = {}
        if rule == "better":
            if "than" not in table:
                raise check.fail(f"{where}.than", "missing: rule 'better' needs the estimators "
                                 "that are beaten")
            options["than"] = specs("than")
            options["direction"] = check.string(table.get("direction", "lower"),
                                                f"{where}.direction", DIRECTIONS)
            alpha = table.get("alpha", DEFAULT_ALPHA)
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
                    or not 0 < alpha < 1:
                raise check.fail(f"{where}.alpha", f"expected a number in (0, 1), got {alpha!r}")
            options["alpha"] = float(alpha)
        else:
            value = table.get("value")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise check.fail(f"{where}.value", f"rule {rule!r} needs a number, got {value!r}")
            options["value"] = float(value)
            if rule == "within":
                options["tolerance"] = check.number(table.get("tolerance"),
                                                    f"{where}.tolerance")
        claims.append(Claim(
            name=name, published=str(published), rule=rule, estimators=specs("estimators"),
            kind=_kind(check, table, where, kinds),
            problem=_known(check, PROBLEMS, problems,
                           check.string(table["problem"], f"{where}.problem"), f"{where}.problem")
            if "problem" in table else None,
            num_samples=check.integer(table["num_samples"], f"{where}.num_samples", 1)
            if "num_samples" in table else None,
            at=check.string(table.get("at", "final"), f"{where}.at", AT),
            scale=check.string(table.get("scale", ""), f"{where}.scale"),
            **text, **options))
    return claims


def _known(check, registry, specs: set[str], value: str, where: str) -> str:
    """The grids' spec (one of ``specs``) that ``value`` spells, itself or canonically."""
    try:
        canonical = registry.make(value).spec
    except Exception:  # noqa: BLE001 - an unknown name or option: one message below
        canonical = None
    for spelling in (value, canonical):
        if spelling in specs:
            return spelling
    what = "an estimator" if registry.kind == "estimator" else "a problem"
    raise check.fail(where, f"{value!r} is not {what} of this study's grids; they run: "
                     f"{', '.join(sorted(specs))}")


_KIND_TABLES = {"measure": "[[grid]]", "train": "[[training]]", "sample": "[[sampling]]"}


def _kind(check, table: dict, where: str, kinds: tuple[str, ...]) -> str:
    if "kind" not in table:
        if len(kinds) > 1:
            raise check.fail(f"{where}.kind", "missing: the study has "
                             + " and ".join(_KIND_TABLES[k] for k in kinds)
                             + " tables; say which the claim reads ("
                             + ", ".join(kinds) + ")")
        return kinds[0]
    kind = check.string(table["kind"], f"{where}.kind", tuple(_KIND_TABLES))
    if kind not in kinds:
        raise check.fail(f"{where}.kind", f"the study has no {_KIND_TABLES[kind]} table")
    return kind
