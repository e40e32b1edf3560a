"""Explainability drift on cases whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from src.detectors.drift import compare, explanation_drift, feature_masks

F, T = 4, 6
NAMES = ["hr", "resp", "sbp", "crea"]


def flat_inputs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2 * T * F, generator=g)
    cat = torch.zeros(n, 0, dtype=torch.long)
    return {"clean": (x, cat), "triggered": (x + 1.0, cat)}


MASKS = feature_masks("flat", NAMES, T, [], [])


def test_feature_masks_cover_each_feature_over_every_hour():
    assert MASKS.shape == (F, 2 * T * F) and MASKS.sum(1).tolist() == [2 * T] * F
    assert not (MASKS.sum(0) > 1).any()  # no column belongs to two features


def test_an_identical_model_gives_zero_drift():
    w = torch.randn(2 * T * F, generator=torch.Generator().manual_seed(1))

    def forward(x, cat):
        return torch.tanh(x @ w)

    inputs = flat_inputs()
    d = explanation_drift(forward, forward, inputs, inputs, MASKS, NAMES, ["resp"], n_steps=8)
    for part in ("clean", "triggered"):
        assert d[part]["cosine"] == pytest.approx(1.0) and d[part]["l1"] == pytest.approx(0.0)
        assert d[part]["spearman"] == pytest.approx(1.0) and d[part]["top_k_rank_change"] == 0
    json.dumps(d)


def test_a_model_that_reads_only_the_trigger_feature_ranks_it_first():
    j = NAMES.index("resp")
    cols = torch.from_numpy(MASKS[j])
    w = torch.randn(2 * T * F, generator=torch.Generator().manual_seed(2))

    def backdoored(x, cat):  # only the trigger feature's columns
        return (x[:, cols] * w[cols]).sum(1)

    def clean(x, cat):  # every column but those
        return (x[:, ~cols] * w[~cols]).sum(1)

    inputs = flat_inputs()
    d = explanation_drift(backdoored, clean, inputs, inputs, MASKS, NAMES, ["resp"], n_steps=8)
    assert d["clean"]["trigger_rank_poisoned"] == {"resp": 1}
    assert d["clean"]["trigger_rank_clean"] == {"resp": F}  # no attribution at all: last
    assert d["clean"]["cosine"] == pytest.approx(0.0, abs=1e-9)  # disjoint columns
    assert d["clean"]["l1"] == pytest.approx(2.0)


# --- TabTransformer attention ---------------------------------------------------------------
CARDS = [3, 4, 5]
CAT_NAMES = ["gender", "admission_type", "first_careunit"]


def tab_transformer(seed: int, depth: int = 2):
    from src.models.tab_transformer import TabTransformer

    torch.manual_seed(seed)
    return TabTransformer(n_num=2, cardinalities=CARDS, dim=16, heads=2, depth=depth).eval()


def cat_inputs(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(c, (n,), generator=g) for c in CARDS], dim=1)
    trig = cat.clone()
    trig[:, 2] = 4  # a static_category-style trigger on the last column
    x = torch.zeros(n, 2)
    return {"clean": (x, cat), "triggered": (x, trig)}


def test_token_attention_is_the_softmax_of_scaled_dot_products():
    """One layer, recomputed by hand from the attention's projection weights."""
    from src.detectors.drift import token_attention

    enc = tab_transformer(0, depth=1)
    cat = cat_inputs()["clean"][1]
    got = token_attention(enc, cat)
    with torch.no_grad():
        h = enc.cat_embed(cat + enc.offset)
        h = torch.cat([h, enc.col_embed.expand(len(cat), -1, -1)], dim=-1)
        attn = enc.transformer.layers[0].self_attn
        d, heads = h.shape[-1], attn.num_heads
        w_q, w_k, _ = attn.in_proj_weight.split(d)
        b_q, b_k, _ = attn.in_proj_bias.split(d)
        q = (h @ w_q.T + b_q).view(len(cat), -1, heads, d // heads).transpose(1, 2)
        k = (h @ w_k.T + b_k).view(len(cat), -1, heads, d // heads).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1)  # [B, H, Q, K]
        want = w.mean(dim=(0, 1, 2)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got.sum() == pytest.approx(1.0)


def test_attention_shift_is_zero_for_an_identical_model_and_reports_the_trigger_column():
    from src.detectors.drift import attention_shift

    enc, inputs = tab_transformer(0), cat_inputs()
    a = attention_shift(enc, enc, inputs, inputs, CAT_NAMES, ["first_careunit"])
    assert a["trigger_columns"] == ["first_careunit"]
    for part in ("clean", "triggered"):
        assert a[part]["trigger_share_shift"] == 0.0
        assert sum(a[part]["poisoned_model"]) == pytest.approx(1.0, abs=1e-5)
    other = attention_shift(tab_transformer(1), enc, inputs, inputs, CAT_NAMES, ["first_careunit"])
    assert other["triggered"]["trigger_share_shift"] != 0.0
    assert other["triggered"]["trigger_share_clean"] == a["triggered"]["trigger_share_clean"]
    # a series trigger writes no token: the per-token attention only, and why
    s = attention_shift(enc, enc, inputs, inputs, CAT_NAMES, ["resp"])
    assert "trigger_share_shift" not in s["clean"] and "categorical tokens only" in s["note"]
    json.dumps(a)


def test_compare_handles_constant_importance():
    a = np.zeros((5, 2 * T * F))
    d = compare(a, a, MASKS, NAMES, ["hr"])
    assert d["spearman"] is None and d["cosine"] is None and d["l1"] == 0.0


@pytest.mark.slow
def test_a_sequential_sweep_reports_drift_against_its_clean_job(tmp_path):
    from tests.cli import src_run

    d = tmp_path / "sweep"
    p = src_run(
        "-m",
        "experiment=smoke",
        "detectors=none",
        "seed=0",
        "poison_rate=0,0.1",
        f"hydra.sweep.dir={d}",
        cache=tmp_path / "cache",
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    clean = json.loads((d / "0" / "results.json").read_text())
    poisoned = json.loads((d / "1" / "results.json").read_text())
    assert clean["drift"] is None  # the clean model is the reference itself
    drift = poisoned["drift"]
    assert drift["clean_checkpoint"].startswith(str(d / "0"))
    for part in ("clean", "triggered"):
        assert -1.0 <= drift[part]["cosine"] <= 1.0 and 0.0 <= drift[part]["l1"] <= 2.0
        assert set(drift[part]["trigger_rank_poisoned"]) == {"resp"}
    md = (d / "report.md").read_text()
    assert "## Explainability drift" in md and "top-5 rank change (triggered)" in md
