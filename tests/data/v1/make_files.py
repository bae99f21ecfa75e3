"""How the format_version 1 files in this folder were made: with fastrnn 0.1.0 (the last
release that wrote format 1), `python make_files.py` in this folder. tests/test_io_v1.py loads
them with today's fastrnn and checks every parameter and the outputs recorded here."""
import numpy as np

import fastrnn

CASES = [
    # name, (I, H, O), activation, output, dtype, seed
    ("tanh_linear_f32", (3, 5, 2), "tanh", "linear", "float32", 1),
    ("relu_softmax_f64", (4, 6, 3), "relu", "softmax", "float64", 2),
    ("sigmoid_linear_f64", (2, 3, 1), "sigmoid", "linear", "float64", 3),
]

if __name__ == "__main__":
    for name, (I, H, O), activation, output, dtype, seed in CASES:
        model = fastrnn.ElmanRNN(I, H, O, activation=activation, output=output, dtype=dtype,
                                 seed=seed)
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((2, 4, I)).astype(dtype)
        if output == "softmax":
            Y = rng.integers(0, O, size=(2, 4))
        else:
            Y = rng.standard_normal((2, 4, O)).astype(dtype)
        model.fit(X, Y, epochs=3, batch_size=2, lr=0.05, progress=False)
        out, _ = model.forward(X)
        model.save(f"{name}.npz", metadata={
            "X": X.tolist(), "Y_hat": out.tolist(),
            "params": {k: v.tolist() for k, v in model.params.items()}})
        print(name, fastrnn.__version__)
