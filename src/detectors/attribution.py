"""Trigger Attribution Ratio (TAR) with Integrated Gradients (Captum).

Not a detector over training rows: a report on test rows of how much of the model's attribution
falls on the trigger's input columns. For up to ``n_rows`` test rows whose label is not the
target, IG (baseline: all zeros, i.e. the training mean of every standardised value, "missing"
for indicators) is computed on the triggered copy and on the same rows untriggered. TAR of a row
= sum of |attribution| over the trigger's columns / sum over all columns. A backdoor that the
model keys on shows a TAR of triggered rows far above that of clean rows and above
``column_share`` (the TAR of uniform attribution).
"""

from __future__ import annotations

import numpy as np
import torch

from src.detectors.base import DetectorInputs, require


def trigger_attribution(
    inputs: DetectorInputs, n_rows: int = 256, n_steps: int = 32, internal_batch_size: int = 4096
) -> dict:
    require(
        inputs,
        "attribution",
        "forward",
        "test_x",
        "test_cat",
        "triggered_x",
        "triggered_cat",
        "trigger_columns",
    )
    cols = torch.as_tensor(np.asarray(inputs.trigger_columns, dtype=bool))
    if not cols.any():
        return {"skipped": "the trigger changes no input column of this view (e.g. trigger=none)"}
    g = torch.Generator().manual_seed(inputs.seed)
    rows = torch.randperm(len(inputs.test_x), generator=g)[:n_rows]
    if len(rows) == 0:
        return {"skipped": "no test rows whose label is not the target"}
    out = {"n_rows": int(len(rows)), "n_steps": n_steps, "column_share": float(cols.float().mean())}
    for name, x, cat in (
        ("triggered", inputs.triggered_x, inputs.triggered_cat),
        ("clean", inputs.test_x, inputs.test_cat),
    ):
        tar = torch.cat(
            [
                _tar(inputs.forward, x[part], cat[part], cols, n_steps, internal_batch_size)
                for part in torch.split(rows, ROW_CHUNK)
            ]
        )
        out[f"tar_{name}"] = float(tar.mean())
        out[f"tar_{name}_median"] = float(tar.median())
    out["tar_ratio"] = out["tar_triggered"] / max(out["tar_clean"], 1e-12)
    return out


ROW_CHUNK = 2048  # rows per IG call: their scaled copies (x n_steps) stay small in memory


def integrated_gradients(
    forward, x: torch.Tensor, cat: torch.Tensor, n_steps: int = 32, internal_batch_size=None
) -> torch.Tensor:
    """Captum's Integrated Gradients of ``forward`` (one logit per row) at ``x``, from the zero
    baseline (the training mean of every standardised value, "not measured" for indicators),
    with one backward pass per batch (``batch_gradients``)."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(forward)
    ig.gradient_func = batch_gradients
    x = x.float()
    with torch.enable_grad():
        a = ig.attribute(
            x,
            baselines=torch.zeros_like(x),
            additional_forward_args=(cat,),
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
    return a.detach()


def _tar(forward, xb, cb, cols, n_steps: int, internal_batch_size: int) -> torch.Tensor:
    """Per row: the share of |IG attribution| on the trigger's columns."""
    a = integrated_gradients(forward, xb, cb, n_steps, internal_batch_size)
    mass = a.abs().flatten(1)
    return mass[:, cols.flatten()].sum(1) / mass.sum(1).clamp(min=1e-12)


def batch_gradients(forward_fn, inputs, target_ind=None, additional_forward_args=None):
    """Captum's gradient step with one backward pass per batch. Captum's default differentiates
    ``torch.unbind(outputs)``, one graph root per row (a Python loop over rows); rows are
    independent, so the gradient of the sum is the same per row."""
    args = additional_forward_args
    args = () if args is None else args if isinstance(args, tuple) else (args,)
    with torch.enable_grad():
        out = forward_fn(*inputs, *args)
        if target_ind is not None:
            raise ValueError("attribution: forward returns one logit per row; no target needed")
        return torch.autograd.grad(out.sum(), inputs)


def trigger_columns(
    view: str,
    trigger,
    feature_names: list[str],
    n_hours: int,
    static_num_names: list[str],
    static_cat_names: list[str],
    levels: list[int],
) -> np.ndarray:
    """Boolean mask, shaped like one input row of ``view``, of the columns that carry the
    trigger's features and hours (values and their missing indicators) and its static columns;
    each view knows its own layout (src/data/views.py)."""
    from src.data.views import Layout, get_view

    feats = [feature_names.index(f) for f in trigger.features]
    snum = [static_num_names.index(s) for s in trigger.static_features if s in static_num_names]
    scat = [static_cat_names.index(s) for s in trigger.static_features if s in static_cat_names]
    layout = Layout(len(feature_names), n_hours, len(static_num_names), levels)
    return get_view(view).trigger_columns(layout, feats, trigger.hours, snum, scat)
