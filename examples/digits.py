"""Sequence classification: scikit-learn's handwritten digits, read one pixel row per step.

    python examples/digits.py [--hidden 128] [--epochs 40] [--seed 0]

Each 8x8 image (load_digits, bundled with scikit-learn: 1797 images of the digits 0-9)
becomes a sequence of 8 steps of 8 pixels scaled to [0, 1]; an ElmanRNN(8, H, 10,
output="softmax") reads the rows top to bottom and is scored at the last step only
(fit(target="last")), with Adam on mini-batches of 32 for a fixed number of epochs. A
stratified quarter of the images is held out as the test set, used once at the end. Prints
the test accuracy; main() returns it.
"""
import argparse
import time

import numpy as np


def load(test_size=0.25, seed=0):
    """(X_train, y_train), (X_test, y_test): X (n, 8, 8) float32, one row of 8 pixels in
    [0, 1] per step; y (n,) int64 digits. The split is stratified by digit."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)          # pixel values are 0..16
    y = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size,
                                                        stratify=y, random_state=seed)
    return (X_train, y_train), (X_test, y_test)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python examples/digits.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003, help="Adam's learning rate")
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0, help="of the weights and the split")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    from fastrnn import ElmanRNN

    (X_train, y_train), (X_test, y_test) = load(args.test_size, args.seed)
    print(f"digits: {len(X_train)} training and {len(X_test)} test images, each read as "
          f"{X_train.shape[1]} steps of {X_train.shape[2]} pixels")
    model = ElmanRNN(8, args.hidden, 10, output="softmax", init="orthogonal", seed=args.seed)
    print(model)
    t0 = time.perf_counter()
    # One BLAS thread: with 32 images per batch the matrices are small, and a second thread
    # does not pay for its synchronisation (and stalls when the other core is busy).
    with threadpool_limits(1, user_api="blas"):
        history = model.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                            optimizer="adam", lr=args.lr, target="last",
                            progress=args.progress)
        Y_hat, _ = model.forward(X_test)
    seconds = time.perf_counter() - t0
    for e in history.epochs:
        if e["epoch"] % 5 == 0 or e["epoch"] in (1, len(history)):
            print(f"epoch {e['epoch']:3d}   train cross-entropy {e['loss']:.4f}")
    predicted = np.argmax(Y_hat[:, -1], axis=1)
    accuracy = float(np.mean(predicted == y_test))
    wrong = np.bincount(y_test[predicted != y_test], minlength=10)
    print(f"trained {len(history)} epochs in {seconds:.2f} s")
    print("test errors by true digit: "
          + ", ".join(f"{d}: {n}" for d, n in enumerate(wrong) if n))
    print(f"test accuracy: {accuracy:.4f} ({int((predicted == y_test).sum())} of "
          f"{len(y_test)} images)")
    return accuracy


if __name__ == "__main__":
    main()
