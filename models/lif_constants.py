"""The LIF's fixed constants (eqs 1-2), shared by the neuron and every kernel; imports nothing."""
TAU = 2.0    # eq 1
ALPHA = 4.0  # sigmoid surrogate of eq 2's Heaviside
