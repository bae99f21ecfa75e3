# bench/ is not part of the test suite; pytest collects it only when asked: `pytest bench/`.
