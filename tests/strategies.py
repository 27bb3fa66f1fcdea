"""Hypothesis strategies shared by tests/test_fuzz.py and the kernel in tests/test_kernel.py."""
from hypothesis import strategies as st

# Anything JSON can hold, and the odd values people type.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
numbers = st.one_of(st.integers(min_value=-10**30, max_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["0", "1e-300", "nan", "-inf", "1e400", "", "abc"]))
