"""Time-series forecasting: one step ahead from a window of the past, against the naive
forecast (the last value).

    python examples/forecast.py [--series auto|membrane|mackey-glass] [--window 64]

The series: by default a real recording if one is bundled with an installed package, else a
synthetic one.
  membrane      a neuron's membrane potential, 12,000 samples 0.5 ms apart (6 s), shipped
                with matplotlib's sample data (membrane.dat; the trace of matplotlib's
                original logo), in mV. Needs matplotlib (fastrnn's "plot" and "test" extras).
  mackey-glass  the Mackey-Glass delay differential equation (tau = 17), sampled once per
                time unit, with 2% observation noise: no dependencies.

Each forecast sees the last W values (as inputs per step: the value and its change, both
standardised on the training part) and an ElmanRNN(2, H, 1) predicts the next change, so
the forecast is last value + predicted change, scored at the window's last step
(fit(target="last")). The series is split in time: the first 70% trains, the next 10%
validates (early stopping, best weights kept), the last 20% tests. Printed: the test RMSE of
the network, of the naive forecast, and of a linear autoregression on the same window (least
squares) for reference. main() returns {"series", "rmse", "naive_rmse", "linear_rmse"}.
"""
import argparse
import time

import numpy as np


def membrane():
    """(name, values in mV): matplotlib's membrane.dat, or None without matplotlib."""
    try:
        from matplotlib import cbook
        path = cbook.get_sample_data("membrane.dat", asfileobj=False)
    except Exception:          # not installed, or an install without its sample data
        return None
    x = np.fromfile(path, dtype=np.float32).astype(np.float64)
    # matplotlib's own use of it converts to mV as 1000 * 0.1 * x; 0.5 ms per sample
    return "membrane potential (matplotlib sample data membrane.dat), mV", 100.0 * x


def mackey_glass(n=6000, tau=17, noise=0.02, seed=0, dt=0.1, burn_in=1000):
    """(name, values): the Mackey-Glass equation dx/dt = 0.2 x(t-tau) / (1 + x(t-tau)^10)
    - 0.1 x(t), integrated with Heun's method at step dt, sampled every time unit after a
    burn-in, plus Gaussian noise of `noise` times its standard deviation."""
    per_unit = int(round(1 / dt))
    lag = int(round(tau / dt))
    steps = (n + burn_in) * per_unit
    x = np.empty(steps + lag)
    x[:lag + 1] = 1.2
    f = lambda xt, xlag: 0.2 * xlag / (1 + xlag ** 10) - 0.1 * xt
    for i in range(lag, steps + lag - 1):
        k1 = f(x[i], x[i - lag])
        k2 = f(x[i] + dt * k1, x[i + 1 - lag])
        x[i + 1] = x[i] + dt * (k1 + k2) / 2
    y = x[lag + burn_in * per_unit::per_unit][:n]
    y = y + noise * y.std() * np.random.default_rng(seed).standard_normal(len(y))
    return f"Mackey-Glass (tau={tau}) with {noise:.0%} noise, synthetic", y


def windows(x, window, train_end):
    """Inputs F (n, window, 2) float32 (value and change, standardised on x[:train_end]),
    target indices t (n,) (each window is x[t-window:t], its target x[t]), and the scales
    (mean, std of values; std of changes)."""
    mu, sd = x[:train_end].mean(), x[:train_end].std()
    dx = np.diff(x, prepend=x[0])
    dsd = dx[1:train_end].std()
    t = np.arange(window, len(x))
    cols = t[:, None] - window + np.arange(window)          # (n, window) indices
    F = np.stack([(x[cols] - mu) / sd, dx[cols] / dsd], axis=-1).astype(np.float32)
    return F, t, (mu, sd, dsd)


def rmse(error):
    return float(np.sqrt(np.mean(np.square(error))))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python examples/forecast.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", choices=("auto", "membrane", "mackey-glass"),
                        default="auto", help="auto: membrane if matplotlib is installed")
    parser.add_argument("--window", type=int, default=64, help="past values per forecast")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=100, help="at most (early stopping)")
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.003, help="Adam's learning rate")
    parser.add_argument("--max-length", type=int, default=0,
                        help="use only the first this many values (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from fastrnn import EarlyStopping, ElmanRNN

    found = membrane() if args.series in ("auto", "membrane") else None
    if found is None and args.series == "membrane":
        parser.error("the membrane series needs matplotlib (pip install matplotlib)")
    name, x = found if found is not None else mackey_glass(seed=args.seed)
    if args.max_length:
        x = x[:args.max_length]
    n = len(x)
    train_end, val_end = int(0.7 * n), int(0.8 * n)
    F, t, (mu, sd, dsd) = windows(x, args.window, train_end)
    Y = ((x[t] - x[t - 1]) / dsd)[:, None].astype(np.float32)   # the next change
    train, val, test = t < train_end, (t >= train_end) & (t < val_end), t >= val_end
    print(f"series: {name}: {n:,} values; windows of {args.window}; "
          f"{train.sum():,} train, {val.sum():,} validation, {test.sum():,} test forecasts")

    model = ElmanRNN(2, args.hidden, 1, init="orthogonal", seed=args.seed)
    print(model)
    t0 = time.perf_counter()
    with threadpool_limits(1, user_api="blas"):        # small matrices: one thread is best
        history = model.fit(F[train], Y[train], epochs=args.epochs, batch_size=64,
                            optimizer="adam", lr=args.lr, target="last",
                            validation_data=(F[val], Y[val]),
                            callbacks=[EarlyStopping("val_loss", patience=args.patience)],
                            progress=args.progress, seed=args.seed)
        Y_hat, _ = model.forward(F[test])
    seconds = time.perf_counter() - t0
    for e in history.epochs:
        if e["epoch"] % 5 == 0 or e["epoch"] in (1, len(history)):
            print(f"epoch {e['epoch']:3d}   train MSE {e['loss']:.4f}   validation MSE "
                  f"{e['val_loss']:.4f}   (standardised changes)")
    best = int(np.argmin(history["val_loss"])) + 1
    print(f"{len(history)} epochs in {seconds:.1f} s; weights of epoch {best} kept")

    last, truth = x[t[test] - 1], x[t[test]]
    forecast = last + Y_hat[:, -1, 0].astype(np.float64) * dsd
    # reference: linear autoregression on the same standardised window, by least squares
    A = np.concatenate([F[..., 0], F[..., 1], np.ones((len(F), 1), np.float32)], axis=1)
    coef, *_ = np.linalg.lstsq(A[train].astype(np.float64), Y[train, 0].astype(np.float64),
                               rcond=None)
    linear = last + (A[test] @ coef) * dsd
    result = {"series": name, "rmse": rmse(forecast - truth), "naive_rmse": rmse(last - truth),
              "linear_rmse": rmse(linear - truth)}
    print(f"test RMSE, one step ahead, {test.sum():,} forecasts:")
    for label, key in (("ElmanRNN", "rmse"), ("naive (last value)", "naive_rmse"),
                       ("linear, least squares on the same inputs", "linear_rmse")):
        print(f"  {label:34s} {result[key]:.5g}")
    print(f"ElmanRNN / naive = {result['rmse'] / result['naive_rmse']:.3f}"
          + ("   (beats the naive forecast)" if result["rmse"] < result["naive_rmse"]
             else "   (does NOT beat the naive forecast)"))
    return result


if __name__ == "__main__":
    main()
