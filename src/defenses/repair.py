"""Post-training repairs: each a plain function over a fitted ``BackdoorClassifier`` and a small
clean set (``Tensors``: x, cat, y; the validation split by default, clean by construction). Each
returns ``(repaired copy, info)``; the fitted model is never changed, so several repairs in one
run all start from the same model. Papers and our choices: docs/defenses.md.

- ``fine_tuning`` (FT): every weight trained further on the clean set.
- ``fine_pruning`` (Liu, Dolan-Gavitt and Garg, RAID 2018): the penultimate units (the encoder's
  output) least active on clean data are pruned, in steps, while the clean set's AUROC stays
  within ``max_auroc_drop`` of the model's; then fine-tuning.
- ``nad`` (Li et al., ICLR 2021, neural attention distillation): a teacher fine-tuned on the
  clean set; the backdoored model fine-tuned again with the cross-entropy plus ``beta`` times the
  distance between its attention map and the teacher's (the normalised ``|a|^p`` of the
  encoder's output).
- ``clp`` (Zheng et al., ECCV 2022, channel Lipschitzness-based pruning): no data; in every
  linear and convolutional layer of the encoder, the output channels whose upper bound of the
  channel Lipschitz constant (the spectral norm of the channel's weights) exceeds the layer's
  mean + ``u`` SD are set to zero.
- ``anp`` (Wu and Wang, NeurIPS 2021, adversarial neuron pruning): a mask in [0, 1] per neuron
  (hidden linear and convolutional channels and the encoder's output units), learnt on the
  clean set while adversarial multiplicative noise on the neurons (``eps``) is maximised; the
  neurons whose mask ends below ``threshold`` are pruned.
- ``ibau`` (Zeng et al., ICLR 2022, implicit backdoor adversarial unlearning): rounds of a
  universal input perturbation that maximises the clean set's loss against the model's own
  predictions, then unlearning it: the model is trained to give the true labels on perturbed
  rows, with the implicit hypergradient through the perturbation (fixed-point iterations).

A pruned neuron is a mask of zeros applied by a forward hook of its layer (the mask is a buffer
of that layer, so the copy carries it and the weights themselves stay unchanged).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)


class NotApplicable(ValueError):
    """The repair does not apply to this model; the message says why and what does."""


# --- shared pieces ----------------------------------------------------------------------------
def shuffled_batches(data, batch_size: int, g: torch.Generator):
    order = torch.randperm(len(data.y), generator=g)
    for s in range(0, len(order), batch_size):
        i = order[s : s + batch_size]
        yield data.x[i], data.cat[i], data.y[i]


def _train(model, data, epochs: int, lr: float, batch_size: int, seed: int, extra=None) -> None:
    """Adam on the clean set's cross-entropy (+ ``extra(z, x, cat)`` of the encoder's output
    ``z``, computed once per batch), in train mode. Batches and
    dropout are drawn from ``seed`` alone (the global generator is restored after), so a
    repair gives the same model whatever ran before it."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for x, cat, y in shuffled_batches(data, batch_size, g):
                z = model.encoder(x, cat)
                loss = F.binary_cross_entropy_with_logits(model.head(z).squeeze(-1), y)
                if extra is not None:
                    loss = loss + extra(z, x, cat)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()


@torch.no_grad()
def _clean_auroc(model, data) -> float:
    from src.metrics import rank_auroc

    model.eval()
    p = torch.sigmoid(model(data.x, data.cat)).numpy()
    return float(rank_auroc(p, data.y.numpy()))


def _per_channel(module: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (one entry per output channel) shaped to multiply ``module``'s output: a
    Conv1d's channels are axis 1 of ``[B, C, T]``; a Linear's are the last axis, also over
    tokens (``[B, T, C]``, as in a transformer's feed-forward layers), where the mask as it is
    broadcasts."""
    return mask.view(1, -1, 1) if isinstance(module, nn.Conv1d) else mask


def _mask_hook(module, inputs, output):
    return output * _per_channel(module, module.defense_mask)


def _masked(module: nn.Module, n: int) -> torch.Tensor:
    """The 0/1 mask over ``module``'s output channels, installed once."""
    if not hasattr(module, "defense_mask"):
        module.register_buffer("defense_mask", torch.ones(n))
        module.register_forward_hook(_mask_hook)
    return module.defense_mask


def _channel_layers(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """The encoder's linear and 1-d convolutional layers whose output a hook can mask (an
    attention block's output projection is called inside MultiheadAttention, not through its
    forward, so it is left out)."""
    inside_mha = {id(m.out_proj) for m in encoder.modules() if isinstance(m, nn.MultiheadAttention)}
    return [
        (name, m)
        for name, m in encoder.named_modules()
        if isinstance(m, nn.Linear | nn.Conv1d) and id(m) not in inside_mha
    ]


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


# --- the repairs --------------------------------------------------------------------------
def fine_tuning(
    model, clean, seed: int = 0, epochs: int = 10, lr: float = 1e-4, batch_size: int = 256
):
    m = copy.deepcopy(model)
    _train(m, clean, epochs, lr, batch_size, seed)
    return m, {"epochs": epochs, "lr": lr}


def fine_pruning(
    model,
    clean,
    seed: int = 0,
    max_auroc_drop: float = 0.05,
    max_ratio: float = 1.0,
    step: float = 0.05,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 256,
):
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        act = m.encoder(clean.x, clean.cat).abs().mean(0)  # mean |activation| per unit
    n = len(act)
    order = torch.argsort(act, stable=True)  # least active first
    mask = _masked(m.encoder, n)
    base = _clean_auroc(m, clean)
    pruned, chunk = 0, max(1, int(round(step * n)))
    while pruned < int(max_ratio * n):
        nxt = order[pruned : min(pruned + chunk, int(max_ratio * n))]
        mask[nxt] = 0.0
        if _clean_auroc(m, clean) < base - max_auroc_drop:
            mask[nxt] = 1.0  # this step cost too much clean performance: stop before it
            break
        pruned += len(nxt)
    _train(m, clean, epochs, lr, batch_size, seed)
    return m, {
        "units": n,
        "pruned": int(pruned),
        "clean_auroc_before": base,
        "epochs": epochs,
        "lr": lr,
    }


def nad(
    model,
    clean,
    seed: int = 0,
    beta: float = 5000.0,
    p: float = 2.0,
    teacher_epochs: int = 10,
    epochs: int = 10,
    lr: float = 1e-4,
    batch_size: int = 256,
):
    teacher, _ = fine_tuning(model, clean, seed, teacher_epochs, lr, batch_size)
    teacher.eval()
    student = copy.deepcopy(model)

    def attention(a: torch.Tensor) -> torch.Tensor:
        return F.normalize(a.abs().pow(p).flatten(1), dim=1)

    def at_loss(z, x, cat):
        with torch.no_grad():
            t = attention(teacher.encoder(x, cat))
        return beta * (attention(z) - t).pow(2).mean()

    _train(student, clean, epochs, lr, batch_size, seed, extra=at_loss)
    return student, {"beta": beta, "p": p, "teacher_epochs": teacher_epochs, "epochs": epochs}


def clp(model, clean=None, seed: int = 0, u: float = 3.0):
    m = copy.deepcopy(model).eval()
    layers = _channel_layers(m.encoder)
    if not layers:
        raise NotApplicable(
            f"clp prunes channels of linear and convolutional layers; this encoder "
            f"({type(m.encoder).__name__}) has none (an LSTM's gates mix every unit): use "
            "fine_pruning, nad, anp, ibau or fine_tuning"
        )
    per_layer = {}
    with torch.no_grad():
        for name, layer in layers:
            w = layer.weight  # parametrised (weight-normed) layers give the effective weight
            w = w.reshape(w.shape[0], w.shape[1], -1)  # [out, in, kernel]
            uclc = torch.linalg.matrix_norm(w, ord=2)  # spectral norm per output channel
            cut = uclc.mean() + u * uclc.std()
            bad = uclc > cut
            if bad.any():
                _masked(layer, _out_channels(layer))[bad] = 0.0
            per_layer[name or "encoder"] = int(bad.sum())
    return m, {
        "u": u,
        "pruned": int(sum(per_layer.values())),
        "pruned_per_layer": per_layer,
        "clean_rows_used": 0,  # data-free
    }


def anp(
    model,
    clean,
    seed: int = 0,
    eps: float = 0.4,
    pgd_steps: int = 1,
    alpha: float = 0.2,
    mask_lr: float = 0.2,
    iterations: int = 500,
    threshold: float = 0.2,
    batch_size: int = 128,
):
    m = copy.deepcopy(model).eval()  # eval: dropout off, as the paper perturbs a fixed network
    for p_ in m.parameters():
        p_.requires_grad_(False)
    layers = [layer for _, layer in _channel_layers(m.encoder)] + [m.encoder]
    masks, noises = [], []
    state = {"noise": False}

    def hook(module, inputs, output):
        mm = module.anp_mask + (module.anp_noise if state["noise"] else 0.0)
        return output * _per_channel(module, mm)

    handles = []
    for layer in layers:
        n = layer.out_dim if layer is m.encoder else _out_channels(layer)
        layer.anp_mask = nn.Parameter(torch.ones(n))
        layer.anp_noise = nn.Parameter(torch.zeros(n))
        masks.append(layer.anp_mask)
        noises.append(layer.anp_noise)
        handles.append(layer.register_forward_hook(hook))
    g = torch.Generator().manual_seed(seed)
    mask_opt = torch.optim.SGD(masks, lr=mask_lr, momentum=0.9)
    noise_opt = torch.optim.SGD(noises, lr=eps / max(pgd_steps, 1))
    it = 0
    while it < iterations:
        for x, cat, y in shuffled_batches(clean, batch_size, g):
            if it >= iterations:
                break
            if eps > 0:  # the adversarial neuron perturbation: maximise the loss
                with torch.no_grad():
                    for z in noises:
                        z.uniform_(-eps, eps, generator=g)
                state["noise"] = True
                for _ in range(pgd_steps):
                    loss = -F.binary_cross_entropy_with_logits(m(x, cat), y)
                    noise_opt.zero_grad()
                    loss.backward()
                    noise_opt.step()
                    with torch.no_grad():
                        for z in noises:
                            z.clamp_(-eps, eps)
            state["noise"] = False
            natural = F.binary_cross_entropy_with_logits(m(x, cat), y)
            state["noise"] = eps > 0
            robust = F.binary_cross_entropy_with_logits(m(x, cat), y)
            state["noise"] = False
            loss = alpha * natural + (1 - alpha) * robust
            mask_opt.zero_grad()
            loss.backward()
            mask_opt.step()
            with torch.no_grad():
                for mk in masks:
                    mk.clamp_(0.0, 1.0)
            it += 1
    for h in handles:
        h.remove()
    pruned, values = 0, []
    with torch.no_grad():
        for layer in layers:
            keep = (layer.anp_mask >= threshold).float()
            values.append(layer.anp_mask.detach().numpy().copy())
            del layer.anp_mask, layer.anp_noise
            n = len(keep)
            if (keep == 0).any():
                _masked(layer, n).copy_(keep)
            pruned += int((keep == 0).sum())
    all_masks = np.concatenate(values)
    return m, {
        "eps": eps,
        "iterations": iterations,
        "threshold": threshold,
        "neurons": int(len(all_masks)),
        "pruned": pruned,
        "mask_quantiles": [float(q) for q in np.quantile(all_masks, [0.05, 0.5, 0.95])],
    }


def hypergradient(outer, inner, w, params, steps: int, inner_step: float) -> None:
    """Add to each ``params``' ``.grad`` the gradient of ``outer(w)`` with respect to it, where
    ``w`` is taken to be the minimiser of ``inner`` and so depends on ``params``: the direct term
    plus the implicit one, by ``steps`` iterations of the fixed-point method on the map
    ``Phi(w) = w - inner_step * grad_w inner(w)`` (Grazzi et al., ICML 2020), as i-BAU uses:
    ``v <- (dPhi/dw)^T v + d outer/dw``, then ``(dPhi/dparams)^T v + d outer/dparams``."""
    w = w.detach().clone().requires_grad_(True)
    o = outer(w)
    d_w = torch.autograd.grad(o, w, retain_graph=True)[0]
    direct = torch.autograd.grad(o, params, materialize_grads=True)
    mapped = w - inner_step * torch.autograd.grad(inner(w), w, create_graph=True)[0]
    v = torch.zeros_like(w)
    for _ in range(steps):
        v = torch.autograd.grad(mapped, w, grad_outputs=v, retain_graph=True)[0] + d_w
    implicit = torch.autograd.grad(mapped, params, grad_outputs=v, materialize_grads=True)
    for p_, a, b in zip(params, direct, implicit, strict=True):
        p_.grad = a + b if p_.grad is None else p_.grad + a + b


def ibau(
    model,
    clean,
    seed: int = 0,
    rounds: int = 10,
    fixed_point_steps: int = 5,
    lr: float = 1e-3,
    perturbation_lr: float = 10.0,
    perturbation_l2: float = 1e-3,
    inner_step: float = 0.1,
    portion: float = 1.0,
    batch_size: int = 100,
):
    """Each round: one universal perturbation ``delta`` (the shape of one row), found by SGD
    over the clean set on ``-BCE(f(x + delta), the model's own labels) + perturbation_l2 *
    |delta|^2``; then one pass of Adam on ``BCE(f(x + delta), y)`` over the clean set, where
    ``delta`` is applied to ``portion`` of each batch's rows and the gradient adds the implicit
    term through ``delta``'s dependence on the weights (``fixed_point_steps`` iterations of the
    fixed-point method on the inner map ``delta - inner_step * grad``). The paper's objective
    perturbs every row (``portion=1``); the authors' code perturbs 1% of each batch, which left
    an out-of-range backdoor in place here (docs/defenses.md)."""
    m = copy.deepcopy(model).eval()  # eval: dropout off, the model the attacker left
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)

    def inner(delta, x, cat):
        with torch.no_grad():
            own = (m(x, cat) > 0).float()
        loss = F.binary_cross_entropy_with_logits(m(x + delta, cat), own)
        return -loss + perturbation_l2 * delta.pow(2).sum()

    norms = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(rounds):
            delta = torch.zeros_like(clean.x[:1], requires_grad=True)
            delta_opt = torch.optim.SGD([delta], lr=perturbation_lr)
            for s in range(0, len(clean.y), batch_size):
                loss = inner(delta, clean.x[s : s + batch_size], clean.cat[s : s + batch_size])
                delta_opt.zero_grad()
                loss.backward()
                delta_opt.step()
            delta = delta.detach()
            norms.append(float(delta.norm()))
            for x, cat, y in shuffled_batches(clean, batch_size, g):
                n = len(y)
                rows = torch.randperm(n, generator=g)[: max(1, int(round(portion * n)))]
                on = torch.zeros(n, *[1] * (x.dim() - 1), device=x.device)
                on[rows] = 1.0

                def outer(w, x=x, cat=cat, y=y, on=on):
                    return F.binary_cross_entropy_with_logits(m(x + on * w, cat), y)

                opt.zero_grad()
                hypergradient(
                    outer,
                    lambda w, x=x, cat=cat: inner(w, x, cat),
                    delta,
                    params,
                    fixed_point_steps,
                    inner_step,
                )
                opt.step()
    m.eval()
    return m, {"rounds": rounds, "portion": portion, "perturbation_norms": norms}


REPAIRS = {f.__name__: f for f in (fine_tuning, fine_pruning, nad, clp, anp, ibau)}
