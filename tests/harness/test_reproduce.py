"""estibench reproduce: the papers' claims parse, a miniature of every paper's study runs end to
end into its report and the table, and the verdicts follow their rules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import reproduce
from harness.claims import Claim
from harness.cli import main
from harness.study import StudyError, load_study, parse_study
from reports.claims import FAILS, HOLDS, NOT_RUN, markdown, verdict

# A paper's study at toy size: few steps, estimates and seeds (two: the one-sided tests need
# them), checkpoints of a few steps and small latent spaces, the learning estimators adapted for
# a few steps. The same
# spelling is replaced in the grids and the claims, so the claims still name what runs.
SHRINK = [
    (r"(?m)^steps = \d+", "steps = 4"),
    (r"(?m)^eval_every = \d+", "eval_every = 2"),
    (r"(?m)^variance_replicates = \d+", "variance_replicates = 4"),
    (r"(?m)^replicates = \d+", "replicates = 20"),
    (r"(?m)^samples = \d+", "samples = 200"),
    (r"(?m)^seeds = \[.*\]", "seeds = [0, 1]"),
    (r'"vae-bernoulli:', '"vae-bernoulli:train_steps=2,'),
    (r"latent=200,batch=50", "latent=8,batch=4"),  # exact: no reference gradient to draw
    (r"dataset=mnist,digits=4", "dataset=digits,digits=1"),  # a CNN on 8 × 8 images
    (r'"(relax|rebar)"', r'"\1:adapt_steps=2"'),
]


def _miniature(text: str) -> str:
    for pattern, replacement in SHRINK:
        text = re.sub(pattern, replacement, text)
    return text


def test_list_names_every_claim_with_its_source(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    papers = reproduce.papers()
    assert len(papers) >= 6
    for name, path in papers.items():
        study = load_study(path)
        assert study.claims, f"{name} has no [[claim]]"
        assert f"{name} ({path.name}): {len(study.claims)} claims" in out
        for claim in study.claims:
            assert f"  {claim.name}: {claim.claim} [{claim.source};" in out


def test_unknown_paper_is_one_message(capsys):
    assert main(["reproduce", "no-such-paper", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("estibench: error: unknown paper 'no-such-paper': expected one of")


@pytest.mark.parametrize("name", sorted(reproduce.papers()))
def test_a_miniature_of_each_paper_runs_into_its_report(tmp_path, name):
    papers = tmp_path / "papers"
    papers.mkdir()
    text = _miniature(reproduce.papers()[name].read_text())
    (papers / f"{name}.toml").write_text(text)
    claims = parse_study(text).claims
    lines: list[str] = []
    rows = reproduce.reproduce(reproduce.select(None, papers), tmp_path / "out",
                               executor="inline", show_progress=False, write=lines.append)
    assert [v.claim.name for _, v in rows] == [c.name for c in claims]
    assert {v.verdict for _, v in rows} <= {HOLDS, FAILS, NOT_RUN}
    assert f"study '{name}'" in lines[0] and " 0 failed" in lines[0]
    page = (tmp_path / "out" / name / "report" / "index.html").read_text()
    assert '<h2 id="reproductions">Reproductions</h2>' in page
    tables = (tmp_path / "out" / name / "report" / "tables.md").read_text()
    table = (tmp_path / "out" / "reproductions.md").read_text()
    for claim in claims:
        assert claim.claim.replace("|", "\\|") in table
        assert claim.claim.replace("|", "\\|") in tables
    assert table.count("\n| " + name + " |") == len(claims)
    # The report reads the claims back from the store's study text, without the registries:
    # its verdicts are the ones reproduce decided from the checked study file.
    assert tables.split("## Reproductions\n\n", 1)[1] == markdown(rows)


def test_a_spent_budget_leaves_the_rest_not_run(tmp_path):
    papers = tmp_path / "papers"
    papers.mkdir()
    name = "joo-2020-gengs"
    (papers / f"{name}.toml").write_text(_miniature(reproduce.papers()[name].read_text()))
    lines: list[str] = []
    rows = reproduce.reproduce(reproduce.select(None, papers), tmp_path / "out",
                               budget_minutes=1e-9, executor="inline", show_progress=False,
                               write=lines.append)
    assert [v.verdict for _, v in rows] == [NOT_RUN]
    assert "budget" in rows[0][1].detail
    assert not (tmp_path / "out" / name).exists()


# ------------------------------------------------------------------------------ the claim files

BASE = """
name = "s"
[[grid]]
problems = ["bernoulli-toy"]
estimators = ["reinforce", "arm"]
"""


@pytest.mark.parametrize("claim, message", [
    ('name = "a"\nclaim = "x"\nsource = "y"\npublished = 1\nmetric = "variance"\nrule = "better"\n'
     'estimators = ["disarm"]\nthan = ["arm"]', "'disarm' is not an estimator of this study"),
    ('name = "a"\nclaim = "x"\nsource = "y"\npublished = 1\nmetric = "variance"\nrule = "better"\n'
     'estimators = ["arm"]', "claim[0].than"),
    ('name = "a"\nclaim = "x"\nsource = "y"\npublished = 1\nmetric = "variance"\nrule = "big"\n'
     'estimators = ["arm"]', "claim[0].rule"),
    ('name = "a"\nclaim = "x"\nsource = "y"\npublished = 1\nmetric = "variance"\n'
     'rule = "at-most"\nestimators = ["arm"]', "rule 'at-most' needs a number"),
    ('name = "a"\nclaim = "x"\nsource = "y"\npublished = 1\nmetric = "variance"\n'
     'rule = "better"\nestimators = ["arm"]\nthan = ["reinforce"]\nalpha = 2',
     "expected a number in (0, 1)"),
    ('name = "a"\nclaim = "x"\nsource = "y"\nmetric = "variance"\nrule = "better"\n'
     'estimators = ["arm"]', "missing"),
    ('name = "a"\nclaim = "x"\nsource = "y"\npublished = 1\nmetric = "variance"\n'
     'rule = "within"\nvalue = 1\nestimators = ["arm"]\ncolour = "red"', "unknown key 'colour'"),
])
def test_a_bad_claim_is_one_message_naming_the_key(claim, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        parse_study(BASE + "[[claim]]\n" + claim)


def test_a_claim_may_spell_an_estimator_as_the_registry_does():
    text = BASE + ('[[claim]]\nname = "a"\nclaim = "x"\nsource = "y"\npublished = "z"\n'
                   'metric = "variance"\nrule = "better"\nestimators = ["arm"]\n'
                   'than = ["reinforce:baseline=none"]\nalpha = 0.01\n')
    (claim,) = parse_study(text).claims
    assert claim.than == ("reinforce:baseline=none,set_probability=auto",)
    assert (claim.kind, claim.alpha, claim.direction) == ("measure", 0.01, "lower")


# ---------------------------------------------------------------------------------- the verdicts


def _frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"key": f"{spec}-{i}", "status": "ok", "problem": "p", "num_samples": 1,
             "estimator": spec, "variance": v}
            for spec, vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows)


def _better(alpha=0.05, direction="lower") -> Claim:
    return Claim(name="c", claim="a beats b", source="s", published="p", metric="variance",
                 rule="better", estimators=("a",), than=("b",), kind="measure", alpha=alpha,
                 direction=direction)


def test_better_holds_only_when_the_one_sided_test_agrees():
    # Welch's t for these: means 1 and 2, variances 0.01 each over 3 seeds: t = −12.2, 4 df:
    # one-sided p = 1.3e-4, below any alpha here; with means 1 and 1.1, t = −1.22: p = 0.14.
    clear = _frame({"a": [0.9, 1.0, 1.1], "b": [1.9, 2.0, 2.1]})
    close = _frame({"a": [0.9, 1.0, 1.1], "b": [1.0, 1.1, 1.2]})
    assert verdict(_better(), clear).verdict == HOLDS
    result = verdict(_better(), close)
    assert result.verdict == FAILS and "p = 0.14" in result.detail
    assert verdict(_better(direction="higher"), clear).verdict == FAILS  # mean not better
    assert "mean not better" in verdict(_better(direction="higher"), clear).detail


def test_the_p_value_is_welchs_one_sided():
    from scipy import stats

    a, b = [0.9, 1.0, 1.1, 1.3], [1.0, 1.4, 1.6]
    expected = stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue
    detail = verdict(_better(alpha=0.5), _frame({"a": a, "b": b})).detail
    assert f"largest p = {expected:.2g}" in detail


def test_one_seed_or_a_missing_estimator_is_not_run():
    assert verdict(_better(), _frame({"a": [1.0], "b": [2.0]})).verdict == NOT_RUN
    result = verdict(_better(), _frame({"a": [1.0, 1.1]}))
    assert result.verdict == NOT_RUN and "no finished run of b" in result.detail


@pytest.mark.parametrize("rule, value, tolerance, expected", [
    ("at-most", 1.05, None, HOLDS), ("at-most", 0.95, None, FAILS),
    ("at-least", 0.95, None, HOLDS), ("at-least", 1.05, None, FAILS),
    ("within", 1.2, 0.25, HOLDS), ("within", 1.2, 0.15, FAILS),
])
def test_bounds_and_values_read_the_mean_over_seeds(rule, value, tolerance, expected):
    claim = Claim(name="c", claim="x", source="s", published="p", metric="variance", rule=rule,
                  estimators=("a",), kind="measure", value=value, tolerance=tolerance)
    result = verdict(claim, _frame({"a": [0.9, 1.0, 1.1]}))  # mean 1.0
    assert result.verdict == expected
    assert result.measured() == "a: 1 ± 0.058 (3 seeds)"


def test_training_claims_read_the_last_or_the_mean_evaluation():
    rows = [{"key": f"a-{seed}", "status": "ok", "problem": "p", "num_samples": 1,
             "estimator": "a", "step": step, "objective": value + seed}
            for seed in (0, 1) for step, value in ((0, 10.0), (5, 2.0), (10, 0.0))]
    frame = pd.DataFrame(rows)
    final = Claim(name="c", claim="x", source="s", published="p", metric="objective",
                  rule="at-most", estimators=("a",), value=0.5)
    assert np.allclose(verdict(final, frame).values["a"], [0.0, 1.0])
    mean = Claim(**{**final.__dict__, "at": "mean"})
    assert np.allclose(verdict(mean, frame).values["a"], [4.0, 5.0])
    assert verdict(final, frame).verdict == HOLDS and verdict(mean, frame).verdict == FAILS


def test_the_papers_live_in_the_source_tree():
    assert reproduce.PAPERS == Path(__file__).parents[2] / "studies" / "papers"
