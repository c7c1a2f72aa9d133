"""Coverage-guided fuzzing (Atheris, libFuzzer's engine) of every parser a stranger's bytes reach:
the targets (targets.py), their seed corpus (corpus/, from the tests' own inputs) and every crash
found, kept as a regression test (crashes/, replayed by tests/test_fuzz.py)."""
