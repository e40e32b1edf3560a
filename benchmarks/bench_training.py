"""Training speed: the project's Lightning path against a minimal hand-written loop.

Trains the same model for the same epochs on the same tensors three ways (after a discarded
warm-up, round-robin, median of --repeats) and prints ratios against the hand loop measured in
the same run, plus the training FLOP/s achieved against a
large float32 matmul (the machine's practical ceiling), also measured here:

1. lightning  — BackdoorClassifier + IndexBatches + lightning.Trainer (the project's path;
                validation and checkpointing off, so the loops compare like for like)
2. hand       — a plain PyTorch loop over the same index slices
3. dataloader — a per-row Dataset with the default DataLoader (the common way, as reference)

Usage:  python -m benchmarks.bench_training [--models mlp lstm ...] [--epochs 5] [--repeats 3]
Target: the Lightning path no more than 10% slower than the hand loop (ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch.nn import functional as F

warnings.filterwarnings("ignore")


def matmul_ceiling(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def count_forward_flops(model: torch.nn.Module, x: torch.Tensor, cat: torch.Tensor) -> float:
    """Forward FLOPs per row: torch's FLOP counter, plus the LSTM's gate matmuls counted by hand
    (the fused CPU LSTM kernel is invisible to the counter). Training ~ 3x forward."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        model(x[:8], cat[:8])
    flops = fc.get_total_flops() / 8
    steps = x.shape[1] if x.dim() == 3 else 1
    for m in model.modules():
        if isinstance(m, torch.nn.LSTM):
            dirs = 2 if m.bidirectional else 1
            for layer in range(m.num_layers):
                d_in = m.input_size if layer == 0 else m.hidden_size * dirs
                flops += dirs * steps * 2 * 4 * m.hidden_size * (d_in + m.hidden_size)
    return flops


def build(cfg, dm):
    from src.experiment import build_model

    torch.manual_seed(0)  # the same initial weights for every way
    return build_model(cfg, dm)


def run_lightning(cfg, dm, epochs: int) -> float:
    import lightning as L

    model = build(cfg, dm)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.loader("train", shuffle=True))
    return time.perf_counter() - t0


def _plain_loop(cfg, dm, batches, epochs: int) -> float:
    """A minimal PyTorch training loop over ``batches``: the reference the other ways face."""
    model = build(cfg, dm)
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, cat, y in batches:
            loss = F.binary_cross_entropy_with_logits(model(x, cat), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def run_hand(cfg, dm, epochs: int) -> float:
    return _plain_loop(cfg, dm, dm.loader("train", shuffle=True), epochs)


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, t):
        self.t = t

    def __len__(self):
        return len(self.t)

    def __getitem__(self, i):
        return self.t.x[i], self.t.cat[i], self.t.y[i]


def run_dataloader(cfg, dm, epochs: int) -> float:
    loader = torch.utils.data.DataLoader(
        RowDataset(dm.data["train"]), batch_size=dm.batch_size, shuffle=True
    )
    return _plain_loop(cfg, dm, loader, epochs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mlp"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5, help="median of N per way")
    ap.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides")
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir

    from src.data.sources import load_cohort
    from src.experiment import build_datamodule
    from src.run import conf_dir

    ceiling = matmul_ceiling()
    print(
        f"matmul ceiling (float32, 2048^3): {ceiling / 1e9:.1f} GFLOP/s, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'model':<16}{'rows':>7}{'lightning s':>13}{'hand s':>9}{'dataloader s':>14}"
        f"{'L/hand':>8}{'DL/hand':>9}{'rows/s (L)':>12}{'GFLOP/s (L)':>13}{'% ceiling':>11}"
    )
    for name in args.models:
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            cfg = compose("run", overrides=[f"model={name}", "poison_rate=0.1", *args.overrides])
        cohort = load_cohort(cfg.data, Path(cfg.paths.cache_dir))
        dm = build_datamodule(cfg, cohort)
        ways = {"lightning": run_lightning, "hand": run_hand, "dataloader": run_dataloader}
        for fn in ways.values():  # warm-up (allocator, kernels), discarded
            fn(cfg, dm, 1)
        # Round-robin, so drift in the machine's load hits every way alike; median per way.
        runs = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, fn in ways.items():
                runs[way].append(fn(cfg, dm, args.epochs))
        times = {way: statistics.median(ts) for way, ts in runs.items()}
        n = len(dm.data["train"])
        t = dm.data["train"]
        flops_row = 3 * count_forward_flops(build(cfg, dm), t.x, t.cat)
        rate = n * args.epochs / times["lightning"]
        gflops = flops_row * rate / 1e9
        print(
            f"{name:<16}{n:>7}{times['lightning']:>13.3f}{times['hand']:>9.3f}"
            f"{times['dataloader']:>14.3f}{times['lightning'] / times['hand']:>8.2f}"
            f"{times['dataloader'] / times['hand']:>9.2f}{rate:>12.0f}{gflops:>13.2f}"
            f"{100 * gflops * 1e9 / ceiling:>10.1f}%"
        )


if __name__ == "__main__":
    main()
