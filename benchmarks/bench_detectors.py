"""Detector scaling: time every detector on synthetic inputs of N = 10k, 100k, 1M rows.

Inputs: penultimate-like features [N, 128] in two classes with a planted poison cluster (5%);
for STRIP and attribution a small MLP (128 -> 64 -> 1) over d = 128 inputs; for input_outlier a
raw series [N, 12, 8] with 30% missing cells (smaller than a real cohort so 1M rows fit in
memory; the isolation forest fits each tree on a subsample of 256 rows by design and scores
every row). Attribution is timed on ``N`` test rows (in a run it uses a fixed ``n_rows``).

Prints seconds per detector and N, the growth factor per tenfold N (10 = linear) and the AUROC
on the planted poison within its class (a sanity check that the timed code does its job). A
detector whose predicted time at the next N (last time x 10) exceeds ``--budget`` seconds is
skipped there.

Where IBM ART has the method, its time on the same arrays is printed beside ours, with the ratio
ours / ART (< 1: ours is faster): spectral signatures (``spectral_signature_scores`` per class,
plus its quantile cut) and activation clustering (``cluster_activations`` with PCA to 10 dims
and k-means, per class; ART's default FastICA reduction would be slower still).

Usage:  python -m benchmarks.bench_detectors [--sizes 10000 100000 1000000] [--budget 180]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")

D, RATE = 128, 0.05


def make_inputs(n: int, seed: int = 0):
    from src.data.cohort import FeatureSpec
    from src.detectors.base import DetectorInputs

    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    truth = torch.rand(n, generator=g) < RATE
    labels[truth] = 1
    feats = torch.randn(n, D, generator=g)
    direction = torch.randn(D, generator=g)
    feats[truth] += 4.0 * direction / direction.norm()
    x = torch.randn(n, D, generator=g)
    x[truth, :4] = 3.0  # an input-space trigger the MLP below keys on
    mlp = torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    with torch.no_grad():
        mlp[0].weight[:, :4] += 1.0
    mlp.eval()

    @torch.no_grad()
    def predict(xb, cb):
        return torch.cat(
            [torch.sigmoid(mlp(xb[i : i + 65536])).squeeze(-1) for i in range(0, len(xb), 65536)]
        )

    rng = np.random.default_rng(seed)
    series = rng.standard_normal((n, 12, 8), dtype=np.float32) * 10 + 80
    series[rng.random(series.shape, dtype=np.float32) < 0.3] = np.nan
    series[truth.numpy(), 8:, 0] = 130.0  # in range, rare
    specs = [FeatureSpec(f"f{j}", "u", "vital", 0, 300) for j in range(8)]
    cat = torch.zeros(n, 1, dtype=torch.long)
    cols = np.zeros(D, dtype=bool)
    cols[:4] = True
    trig_x = x.clone()
    trig_x[:, :4] = 3.0
    inputs = DetectorInputs(
        features=feats,
        labels=labels.numpy(),
        expected_poisoned=int(truth.sum()),
        target_label=1,
        seed=seed,
        x=x,
        cat=cat,
        predict=predict,
        pool_x=x[~truth][:10_000],
        pool_cat=cat[:10_000],
        raw_series=series,
        raw_static=None,
        feature_specs=specs,
        forward=lambda xb, cb: mlp(xb).squeeze(-1),
        test_x=x,
        test_cat=cat,
        triggered_x=trig_x,
        triggered_cat=cat,
        trigger_columns=cols,
    )
    return inputs, truth.numpy()


def detectors():
    from functools import partial

    from src.detectors.attribution import trigger_attribution
    from src.detectors.clustering import activation_clustering
    from src.detectors.input_outlier import input_outlier
    from src.detectors.spectral import spectral_signature
    from src.detectors.spectre import spectre
    from src.detectors.strip import strip

    return {
        "spectral_signature": spectral_signature,
        "activation_clustering": activation_clustering,
        "spectre": spectre,
        "strip": strip,
        "input_outlier": input_outlier,
        "attribution": None,
        "_attribution": partial(trigger_attribution, n_steps=32),
    }


def art_methods():
    """ART's versions of two of our detectors, called the way its defences call them."""
    try:
        from art.defences.detector.poison.activation_defence import cluster_activations
        from art.defences.detector.poison.spectral_signature_defense import (
            SpectralSignatureDefense,
        )
    except ImportError:
        return {}

    def art_spectral(inputs):
        f = inputs.features.numpy()
        for c in np.unique(inputs.labels):
            s = SpectralSignatureDefense.spectral_signature_scores(f[inputs.labels == c])
            _ = s < np.quantile(s, max(1 - 1.5 * RATE, 0.0))

    def art_clustering(inputs):
        f = inputs.features.numpy()
        np.random.seed(inputs.seed)  # noqa: NPY002
        cluster_activations([f[inputs.labels == c] for c in np.unique(inputs.labels)], 2, 10, "PCA")

    return {"spectral_signature": art_spectral, "activation_clustering": art_clustering}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--budget", type=float, default=180.0, help="seconds per detector and N")
    ap.add_argument("--only", nargs="*", default=None, help="detector names to time")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and BLAS threads, ours and ART's alike (1: on a shared, oversubscribed "
        "machine more threads spin-wait and run up to ~80x slower; raise it on a quiet one)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # ART (numpy, scikit-learn) gets the same thread count as torch: a ratio at equal footing
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    from sklearn.metrics import roc_auc_score

    dets = detectors()
    attribution = dets.pop("_attribution")
    art = art_methods()
    names = [k for k in dets if args.only is None or k in args.only]
    times: dict[str, list] = {k: [] for k in names}
    art_times: dict[str, list] = {k: [] for k in names if k in art}
    print(f"torch threads {torch.get_num_threads()}; times in seconds (noisy shared machine)")
    for n in args.sizes:
        inputs, truth = make_inputs(n)
        for name in names:
            prev = [t for t in times[name] if t is not None]
            if prev and prev[-1] * 10 > args.budget:
                times[name].append(None)
                print(f"N={n:>9,} {name:<22} skipped (predicted {prev[-1] * 10:.0f} s)")
                continue
            t0 = time.perf_counter()
            if name == "attribution":
                out = attribution(inputs, n_rows=n)
                quality = f"TAR triggered {out['tar_triggered']:.2f} clean {out['tar_clean']:.2f}"
            else:
                out = dets[name](inputs)
                rows = inputs.labels == 1
                quality = f"in-class AUROC {roc_auc_score(truth[rows], out.scores[rows]):.3f}"
            dt = time.perf_counter() - t0
            times[name].append(dt)
            if name in art:
                t0 = time.perf_counter()
                art[name](inputs)
                art_dt = time.perf_counter() - t0
                art_times[name].append(art_dt)
                quality += f"   ART {art_dt:8.2f} s   ours/ART {dt / art_dt:5.2f}"
            print(f"N={n:>9,} {name:<22} {dt:8.2f} s   {quality}", flush=True)
        del inputs
    print("\ngrowth per tenfold N (10 = linear)")
    for name in names:
        t = times[name]
        growth = [f"{b / a:5.1f}" if a and b else "  -  " for a, b in zip(t, t[1:], strict=False)]
        cells = " ".join(f"{x:8.2f}" if x is not None else "       -" for x in t)
        print(f"{name:<22} {cells}   growth {' '.join(growth)}")
    for name, t in art_times.items():
        growth = [f"{b / a:5.1f}" for a, b in zip(t, t[1:], strict=False)]
        cells = " ".join(f"{x:8.2f}" for x in t)
        print(f"{'ART ' + name:<22} {cells}   growth {' '.join(growth)}")


if __name__ == "__main__":
    main()
