"""The ``[[claim]]`` tables of a study file as data, read without torch (``reports`` builds
verdicts from a store's study text anywhere the store is). The study's own parser
(``harness.claims``) checks them strictly when the study runs; here a stored text is trusted.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RULES = ("better", "at-most", "at-least", "within")
DIRECTIONS = ("lower", "higher")
AT = ("final", "mean")
DEFAULT_ALPHA = 0.05

@dataclasses.dataclass(frozen=True)
class Claim:
    name: str
    claim: str
    source: str
    published: str
    metric: str
    rule: str
    estimators: tuple[str, ...]
    kind: str = "train"  # the cells read: "measure" [[grid]], "train" [[training]],
    # "sample" [[sampling]]
    than: tuple[str, ...] = ()
    direction: str = "lower"
    value: float | None = None
    tolerance: float | None = None
    alpha: float = DEFAULT_ALPHA
    problem: str | None = None
    num_samples: int | None = None
    at: str = "final"
    scale: str = ""

    @property
    def named(self) -> tuple[str, ...]:
        """Every estimator the claim reads: ``estimators``, then ``than``."""
        return (*self.estimators, *self.than)



def claims_from_source(source: str, resolve: Callable[[str], str]) -> list[Claim]:
    """The claims of a stored study text (checked when the study ran); ``resolve`` maps a spec
    as the claim writes it to the store's spec (itself when unknown). An unreadable text has
    none."""
    try:
        document = tomllib.loads(source)
    except tomllib.TOMLDecodeError:
        return []
    kinds = [kind for kind, key in (("measure", "grid"), ("train", "training"),
                                    ("sample", "sampling")) if document.get(key)]
    claims = []
    for table in document.get("claim", []):
        fields = {k: v for k, v in table.items() if k in Claim.__dataclass_fields__}
        fields["published"] = str(fields.get("published", ""))
        fields["estimators"] = tuple(resolve(s) for s in fields.get("estimators", []))
        fields["than"] = tuple(resolve(s) for s in fields.get("than", []))
        if "problem" in fields:
            fields["problem"] = resolve(fields["problem"])
        fields.setdefault("kind", kinds[0] if kinds else "train")
        for key in ("value", "tolerance", "alpha"):
            if key in fields:
                fields[key] = float(fields[key])
        try:
            claims.append(Claim(**fields))
        except TypeError:  # a required field missing: the study did not run with it
            continue
    return claims
